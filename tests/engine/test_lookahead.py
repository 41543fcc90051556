import torch
import torch.nn as nn

from cifarbench.engine.lookahead import Lookahead


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def _sgd_steps(model, opt, la, n):
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    for _ in range(n):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
        if la is not None:
            la.step()


def test_every_k_steps_the_weights_move_alpha_of_the_way_from_the_slow_ones_and_restart_there():
    model, twin = _model(), _model()
    start = [p.detach().clone() for p in model.parameters()]
    la = Lookahead(model, alpha=0.25, k=3)
    opt, opt_twin = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    _sgd_steps(model, opt, la, 2)
    _sgd_steps(twin, opt_twin, None, 2)
    # between updates the fast weights train as the plain optimizer's would
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    _sgd_steps(model, opt, la, 1)
    _sgd_steps(twin, opt_twin, None, 1)
    for p, q, s, slow in zip(model.parameters(), twin.parameters(), start, la.slow):
        expected = s + 0.25 * (q.detach() - s)
        assert torch.allclose(p.detach(), expected) and torch.equal(p.detach(), slow)
    assert la.steps == 3


def test_alpha_one_is_the_plain_optimizer_and_buffers_are_left_to_the_model():
    model, twin = _model(), _model()
    la = Lookahead(model, alpha=1.0, k=2)
    _sgd_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), la, 4)
    _sgd_steps(twin, torch.optim.SGD(twin.parameters(), lr=0.1), None, 4)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    assert len(la.slow) == 4  # linear weight and bias, BN weight and bias: no running statistics


def test_sync_and_the_state_round_trip():
    model = _model()
    la = Lookahead(model, alpha=0.5, k=100)
    before = [p.detach().clone() for p in model.parameters()]
    _sgd_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), la, 2)
    state = la.state_dict()
    fast = [p.detach().clone() for p in model.parameters()]
    la.sync()  # an update between the k-step ones: at every epoch's end
    for p, b, f, slow in zip(model.parameters(), before, fast, state["slow"]):
        assert torch.equal(slow, b)  # the saved slow weights were a copy, taken before the sync
        assert torch.allclose(p.detach(), b + 0.5 * (f - b))
    other = Lookahead(_model(), alpha=0.5, k=100)
    other.load_state_dict(state)
    assert other.steps == 2 and all(torch.equal(a, b) for a, b in zip(other.slow, state["slow"]))
