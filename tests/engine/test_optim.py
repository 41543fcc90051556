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
    assert type(o) is cls
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
