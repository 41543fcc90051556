import torch
from torchvision.models.shufflenetv2 import InvertedResidual

from cifarbench.models import create_model
from cifarbench.models.layout import ShuffleBlock, channel_shuffle, keep_channels_last


def test_shuffle_matches_torchvision_in_both_layouts_and_keeps_channels_last():
    from torchvision.models.shufflenetv2 import channel_shuffle as tv

    x = torch.randn(2, 8, 5, 5)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(channel_shuffle(x, 2), tv(x, 2))
    out = channel_shuffle(cl, 2)
    assert torch.equal(out, tv(x, 2))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_shufflenet_blocks_are_swapped_with_identical_outputs_and_state_dict():
    torch.manual_seed(0)
    ours = create_model("shufflenet_v2_x0_5", stem="cifar").eval()
    assert any(type(m) is ShuffleBlock for m in ours.modules())
    theirs = keep_channels_last(create_model("shufflenet_v2_x0_5", stem="cifar"), enable=False).eval()
    assert not any(type(m) is ShuffleBlock for m in theirs.modules())
    assert any(type(m) is InvertedResidual for m in theirs.modules())
    theirs.load_state_dict(ours.state_dict())  # same keys and shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
        ours_cl = ours.to(memory_format=torch.channels_last)
        assert torch.allclose(ours_cl(x.contiguous(memory_format=torch.channels_last)), theirs(x), atol=1e-5)
