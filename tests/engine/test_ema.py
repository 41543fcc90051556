import pytest
import torch

from cifarbench.engine.ema import ModelEma, warmed_decay


def test_warmup_then_the_configured_decay():
    assert warmed_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmed_decay(0.999, 8) == pytest.approx(0.5)
    assert warmed_decay(0.999, 10_000) == 0.999


def test_update_is_the_exponential_average_of_every_float_entry_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update()  # decay min(0.5, 2/11) = 2/11: the average moves 9/11 of the way
    w = 1 - 2 / 11
    got = ema.module.state_dict()
    assert torch.allclose(got["0.weight"], start["0.weight"] + w * 1.0)
    assert torch.allclose(got["1.running_mean"], torch.full((2,), 4.0 * w))
    assert got["1.num_batches_tracked"].item() == 7
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.updates == 1


def test_state_round_trip_keeps_the_bound_model():
    model = torch.nn.Linear(2, 2)
    ema = ModelEma(model, 0.9)
    ema.update()
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in ema.state_dict()["module"].items()}
    other = ModelEma(model, 0.9)
    other.load_state_dict({"module": state, "updates": 1})
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()
    other.update()
    assert other.updates == 2 and torch.equal(other.module.weight, ema.module.weight)
