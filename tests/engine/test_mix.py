import pytest
import torch

from cifarbench.engine.mix import Mix


def _batch():
    return torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8)


def test_mixup_blends_each_image_with_the_reversed_batch_by_lam():
    mix = Mix(mixup=0.4, seed=3)
    mix.set_epoch(0, 5)
    x = _batch()
    out, lam = mix(x.clone(), 2)
    assert lam == mix.draws[2][0] and 0 < lam < 1
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0))


def test_cutmix_pastes_one_box_of_the_reversed_batch_and_lam_is_the_area_left():
    mix = Mix(cutmix=1.0, seed=0)
    mix.set_epoch(0, 50)
    x = _batch()
    for step in range(50):
        out, lam = mix(x.clone(), step)
        pasted = (out != x).any(1)  # [n, h, w]: where an image now shows its partner's pixels
        assert torch.equal(pasted[0], pasted[1])  # one box, the same for every image of the batch
        assert lam == pytest.approx(1 - pasted[0].float().mean().item())
        assert torch.equal(out[pasted.unsqueeze(1).expand_as(out)], x.flip(0)[pasted.unsqueeze(1).expand_as(out)])


def test_draws_depend_only_on_seed_and_epoch_and_both_modes_are_used_when_both_are_on():
    a, b, c = Mix(0.2, 1.0, seed=1), Mix(0.2, 1.0, seed=1), Mix(0.2, 1.0, seed=2)
    a.set_epoch(3, 200)
    b.set_epoch(0, 200)
    b.set_epoch(3, 200)
    c.set_epoch(3, 200)
    assert a.draws == b.draws and a.draws != c.draws
    cut = [d[1] for d in a.draws]
    assert 60 < sum(cut) < 140  # switch_prob 0.5
    only_cut = Mix(0.0, 1.0)
    only_cut.set_epoch(0, 20)
    assert all(d[1] for d in only_cut.draws)
