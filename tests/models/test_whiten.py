import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.errors import CifarbenchError
from cifarbench.models import create_model
from cifarbench.models.whiten import first_conv, patch_whitening, whiten_first_conv


def _correlated_images(n=64, size=10, seed=0):
    """Images whose neighbouring pixels and channels are strongly correlated, as natural images' are."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size + 2, size + 2, generator=g)
    x = F.avg_pool2d(x, 3, stride=1)  # spatial correlation
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.6, 0.3], [0.0, 0.0, 0.2]])
    return torch.einsum("dc,nchw->ndhw", mix, x) + 0.5  # channel correlation and an offset


def test_the_filters_responses_are_decorrelated_with_unit_variance_largest_direction_first():
    x = _correlated_images()
    f = patch_whitening(x, (3, 3), eps=0.0)
    assert f.shape == (27, 3, 3, 3)
    y = F.conv2d(x.double(), f.double()).permute(1, 0, 2, 3).reshape(27, -1)
    cov = torch.cov(y)
    assert torch.allclose(cov, torch.eye(27, dtype=torch.float64), atol=1e-3)
    # the first filter is the patches' largest-variance direction: the smallest norm once scaled
    norms = f.flatten(1).norm(dim=1)
    assert torch.all(norms[1:] >= norms[:-1] * (1 - 1e-5))
    raw = F.unfold(x, 3).transpose(1, 2).reshape(-1, 27)
    var = (raw @ f.flatten(1).T).var(0)  # the projections' variances: about 1 each, the offset removed
    assert torch.allclose(var.double(), torch.ones(27, dtype=torch.float64), atol=1e-3)


def test_eps_shrinks_the_near_empty_directions_only():
    x = _correlated_images()
    plain, damped = patch_whitening(x, (3, 3), 0.0), patch_whitening(x, (3, 3), 1e-2)
    ratio = damped.flatten(1).norm(dim=1) / plain.flatten(1).norm(dim=1)
    assert ratio[0] > 0.99 and ratio[-1] < 0.9


def test_the_first_conv_gets_plus_minus_pairs_and_keeps_its_other_channels():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, stem="cifar-s2")
    conv = model.conv1
    before = conv.weight.detach().clone()
    x = _correlated_images(size=16)
    assert whiten_first_conv(model, x) == 54  # 27 directions of 3x3x3 patches, 64 channels
    f = patch_whitening(x, (3, 3))
    assert torch.equal(conv.weight[:27], f) and torch.equal(conv.weight[27:54], -f)
    assert torch.equal(conv.weight[54:], before[54:])
    assert conv.weight.requires_grad  # an init: the layer still trains


def test_a_narrow_first_conv_takes_the_leading_directions():
    model = create_model("mobilenet_v2_x0_5", num_classes=10, stem="cifar-s2")  # features.0: 16 channels
    x = _correlated_images(size=16)
    assert whiten_first_conv(model, x) == 16
    f = patch_whitening(x, (3, 3))
    assert torch.equal(first_conv(model).weight, torch.cat([f[:8], -f[:8]]))


@pytest.mark.parametrize("model, images, message", [
    (nn.Sequential(nn.Linear(3, 2)), torch.zeros(2, 3, 8, 8), "no convolution"),
    (nn.Sequential(nn.Conv2d(4, 8, 3, groups=2)), torch.zeros(2, 4, 8, 8), "grouped"),
    (nn.Sequential(nn.Conv2d(1, 8, 3)), torch.zeros(2, 3, 8, 8), "takes 1 channels"),
    (nn.Sequential(nn.Conv2d(3, 8, 5)), torch.zeros(2, 3, 4, 4), "smaller than the 5x5 kernel"),
])
def test_bad_inputs_are_one_line_errors(model, images, message):
    with pytest.raises(CifarbenchError, match=message):
        whiten_first_conv(model, images)
