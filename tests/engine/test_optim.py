import pytest
import torch

from cifarbench.config import TrainConfig
from cifarbench.engine.optim import build_optimizer, build_scheduler, lr_multiplier


def test_onecycle_ramps_up_then_down_to_zero():
    f = lr_multiplier(TrainConfig(sched="onecycle", epochs=10), steps_per_epoch=10)
    assert f(0) == pytest.approx(0.1)
    assert f(20) == pytest.approx(1.0)  # peak after 20% of the steps
    assert f(60) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0)


def test_onecycle_over_a_fractional_epoch_count_reaches_zero_at_its_last_step():
    # 2.5 epochs of 10 steps: 25 steps, the peak after 5, zero at 25 (not at 20 or 30)
    f = lr_multiplier(TrainConfig(sched="onecycle", epochs=2.5), steps_per_epoch=10)
    assert f(5) == pytest.approx(1.0)
    assert f(15) == pytest.approx(0.5)
    assert f(25) == pytest.approx(0.0) and f(24) > 0


def test_cosine_with_warmup():
    f = lr_multiplier(TrainConfig(sched="cosine", epochs=10, warmup_epochs=1), steps_per_epoch=10)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)


@pytest.mark.parametrize("opt, cls, momentum, nesterov", [
    ("sgd", torch.optim.SGD, 0.0, False), ("momentum", torch.optim.SGD, 0.9, False),
    ("nesterov", torch.optim.SGD, 0.9, True), ("adam", torch.optim.Adam, None, None),
    ("adamw", torch.optim.AdamW, None, None)])
def test_optimizers(opt, cls, momentum, nesterov):
    o = build_optimizer(TrainConfig(opt=opt, lr=0.1, momentum=0.9), [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(o, cls)
    if momentum is not None:
        assert o.param_groups[0]["momentum"] == momentum and o.param_groups[0]["nesterov"] == nesterov


def test_plateau_is_torchs_reduce_on_plateau_and_reduces_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    cfg = TrainConfig(sched="plateau", patience=1, factor=0.1, lr=1.0, opt="sgd")
    o = build_optimizer(cfg, [p])
    s = build_scheduler(cfg, o, 10)
    for _ in range(3):
        s.step(1.0)  # no improvement
    assert o.param_groups[0]["lr"] == pytest.approx(0.1)


def test_no_wd_norm_bias_exempts_one_dimensional_parameters():
    from cifarbench.engine.optim import param_groups

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    assert len(param_groups(model, TrainConfig())) == 6  # the default: one group, decay on everything
    decay, no_decay = param_groups(model, TrainConfig(wd_norm_bias=False))
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3]), torch.Size([2, 4])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    o = build_optimizer(TrainConfig(wd_norm_bias=False, weight_decay=0.5, opt="sgd", lr=1.0), [decay, no_decay])
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    o.step()  # zero gradients: only weight decay moves anything
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert moved == [True, False, False, False, True, False]


@pytest.mark.parametrize("opt", ["sgd", "nesterov", "adam", "adamw"])
def test_cpu_parameters_get_the_fused_step_and_the_same_update(opt):
    from cifarbench.engine.optim import param_groups

    torch.manual_seed(0)
    cfg = TrainConfig(opt=opt, lr=0.1, momentum=0.9, weight_decay=5e-4, wd_norm_bias=False)
    models = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = [p.detach().clone() for p in models[0].parameters()]
    fused = build_optimizer(cfg, param_groups(models[0], cfg))
    assert fused.defaults["fused"] is True
    # the reference: torch's per-parameter loop with the same hyperparameters
    ref = type(fused)(param_groups(models[1], cfg), **{k: fused.defaults[k] for k in ("lr", "weight_decay")},
                      **({"momentum": fused.defaults["momentum"], "nesterov": fused.defaults["nesterov"]}
                         if isinstance(fused, torch.optim.SGD) else {}), foreach=False)
    assert not ref.defaults["fused"]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in models[0].parameters()]
        for m, o in zip(models, (fused, ref)):
            for p, gr in zip(m.parameters(), grads):
                p.grad = gr.clone()
            o.step()
    assert all(not torch.equal(a, b) for a, b in zip(start, models[0].parameters()))
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # the same update, up to a rounding


def test_devices_without_a_fused_kernel_keep_torchs_default():
    from cifarbench.engine.optim import implementation

    assert implementation([torch.nn.Parameter(torch.zeros(1))]) == {"fused": True}
    assert implementation([{"params": [torch.nn.Parameter(torch.zeros(1))]}]) == {"fused": True}
    assert implementation([torch.nn.Parameter(torch.zeros(1, device="meta"))]) == {}
    assert implementation([]) == {}


@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov"])
def test_the_flat_fused_step_is_torchs_fused_step_bit_for_bit_on_channels_last_weights(opt, monkeypatch):
    from cifarbench.engine.optim import FlatFusedSGD, param_groups

    torch.manual_seed(0)
    cfg = TrainConfig(opt=opt, lr=0.1, momentum=0.9, weight_decay=5e-4, wd_norm_bias=False)
    models = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
              for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    for m in models:
        m.to(memory_format=torch.channels_last)
    flat = build_optimizer(cfg, param_groups(models[0], cfg))
    assert type(flat) is FlatFusedSGD
    ref = torch.optim.SGD(param_groups(models[1], cfg), lr=0.1, momentum=flat.defaults["momentum"],
                          nesterov=flat.defaults["nesterov"], weight_decay=5e-4, fused=True)
    # the copy the flat aliases avoid: torch's kernel copies a channels_last gradient; this step never hands it one
    handed, calls = [], {"ours": False}
    real = torch._fused_sgd_

    def spy(params, grads, bufs, **kw):
        if calls["ours"]:
            handed.extend(grads)
        return real(params, grads, bufs, **kw)

    monkeypatch.setattr(torch, "_fused_sgd_", spy)
    x = torch.randn(4, 3, 6, 6).to(memory_format=torch.channels_last)
    for step in range(3):
        for m, o in zip(models, (flat, ref)):
            o.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            calls["ours"] = o is flat
            o.step()
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            assert torch.equal(a, b) and a.stride() == b.stride()
        if flat.defaults["momentum"]:
            for p, q in zip(models[0].parameters(), models[1].parameters()):
                a, b = flat.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"]
                assert torch.equal(a, b) and a.stride() == b.stride()
    assert handed and all(g.is_contiguous() for g in handed)
    assert any(p.dim() == 4 and not p.is_contiguous() for p in models[0].parameters())  # the case that matters
    # its checkpoints are torch's: the state loads into a plain SGD and back
    again = FlatFusedSGD(param_groups(models[0], cfg), lr=0.1, momentum=flat.defaults["momentum"],
                         nesterov=flat.defaults["nesterov"], weight_decay=5e-4, fused=True)
    again.load_state_dict(ref.state_dict())
    assert str(again.state_dict()) == str(ref.state_dict())
