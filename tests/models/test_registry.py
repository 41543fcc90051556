"""The registry: coverage of torchvision, variants, errors, in_chans."""
import pytest
import torch
import torchvision
from torch import nn

from cifarbench.errors import CifarbenchError
from cifarbench.models import STEMS, create_model, list_models
from cifarbench.models.registry import VARIANTS, model_family, resolve

# Builders torchvision cannot run on the meta device (RegNet computes its widths with tensors),
# and the ones too big to build for real in the quick suite (several seconds of random init each).
_NOT_ON_META = "regnet_*"
_HUGE = {"regnet_x_16gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf"}


def test_covers_every_torchvision_classifier_and_the_variants():
    names = list_models()
    assert names == sorted(names)
    assert set(torchvision.models.list_models(module=torchvision.models)) <= set(names)
    assert set(VARIANTS) <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names  # detection is not a classifier
    assert list_models("shufflenet_v2_x0_*") == ["shufflenet_v2_x0_5"]
    assert list_models("nothing*") == []


def _head_width(model):
    """Output width of the classifier: the last Linear, or SqueezeNet's final 1x1 conv."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _HUGE else n for n in list_models()])
def test_every_model_builds_with_10_classes(name):
    import fnmatch

    if fnmatch.fnmatch(name, _NOT_ON_META):
        model = create_model(name, num_classes=10)
    else:
        with torch.device("meta"):  # structure only: no memory, no random init
            model = create_model(name, num_classes=10)
    assert _head_width(model) == 10


def test_unknown_model_names_the_closest():
    with pytest.raises(CifarbenchError, match=r"unknown model 'resnet81'; closest: resnet18"):
        create_model("resnet81")
    with pytest.raises(CifarbenchError, match=r"closest: .*mobilenet_v2_x0_5"):
        create_model("MobileNet_V2_x0_5")
    with pytest.raises(CifarbenchError, match="see `cifarbench models`"):
        resolve("zzzzzz")


def test_unknown_stem_lists_the_stems():
    with pytest.raises(CifarbenchError, match="unknown stem 'tiny'; choose one of " + ", ".join(STEMS)):
        create_model("resnet18", stem="tiny")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_num_classes(bad):
    with pytest.raises(CifarbenchError, match="num_classes"):
        create_model("resnet18", num_classes=bad)


def test_model_kwargs_reach_the_torchvision_builder_and_bad_ones_are_one_line():
    net = create_model("mobilenet_v2_x0_5", stem="cifar-s2", model_kwargs={"dropout": 0.0})
    assert net.classifier[0].p == 0.0 and create_model("mobilenet_v2_x0_5").classifier[0].p == 0.2
    assert net.features[0][0].out_channels == 16  # the variant's width survives the extra options
    res = create_model("resnet18", stem="cifar", model_kwargs={"zero_init_residual": True})
    assert all(b.bn2.weight.abs().sum() == 0 for layer in (res.layer1, res.layer4) for b in layer)
    with pytest.raises(CifarbenchError, match=r"--model-kwargs bogus=1: torchvision's mobilenet_v2 refused"):
        create_model("mobilenet_v2_x0_5", model_kwargs={"bogus": 1})
    with pytest.raises(CifarbenchError, match="num_classes"):
        create_model("resnet18", model_kwargs={"num_classes": 3})


def test_mobilenet_v2_width_variants():
    def first_width(name):
        return create_model(name).features[0][0].out_channels

    assert first_width("mobilenet_v2_x0_5") == 16  # 32 * 0.5
    assert first_width("mobilenet_v2_x1_0") == first_width("mobilenet_v2") == 32
    small, full = create_model("mobilenet_v2_x0_5"), create_model("mobilenet_v2")
    assert small.classifier[1].in_features == 1280  # the last conv keeps 1280 below width 1.0, as in the paper
    assert sum(p.numel() for p in small.parameters()) < 0.4 * sum(p.numel() for p in full.parameters())
    assert model_family("mobilenet_v2_x0_5") == "mobilenet_v2"


@pytest.mark.parametrize("name,px", [("googlenet", 32), ("inception_v3", 75)])
def test_aux_heads_are_off_so_train_mode_returns_logits(name, px):
    out = create_model(name).train()(torch.zeros(2, 3, px, px))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


@pytest.mark.parametrize("name,stem", [("resnet18", "imagenet"), ("resnet18", "cifar"), ("mobilenet_v2_x0_5", "cifar"),
                                       ("shufflenet_v2_x0_5", "cifar-s2"), ("densenet121", "cifar"), ("vgg11", "imagenet")])
def test_in_chans_1(name, stem):
    model = create_model(name, in_chans=1, stem=stem).eval()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "convnext_tiny", "efficientnet_b0", "regnet_x_400mf"])
def test_in_chans_replaces_the_first_conv_in_other_families(name):
    ctx = torch.device("cpu") if name.startswith("regnet") else torch.device("meta")
    with ctx:
        model = create_model(name, in_chans=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 4
    assert all(c.in_channels != 3 for c in convs)  # no second RGB conv left behind


def test_in_chans_conv_keeps_the_family_init():
    # ResNet's convs are kaiming-normal fan_out: std sqrt(2 / (64 * 7 * 7)), whatever in_channels is
    torch.manual_seed(0)
    w = create_model("resnet50", in_chans=1).conv1.weight
    assert w.std().item() == pytest.approx((2 / (64 * 49)) ** 0.5, rel=0.1)
