"""Each stem does exactly what the table in cifarbench.models.stems says."""
import pytest
import torch
from torch import nn

from cifarbench.errors import CifarbenchError
from cifarbench.models import STEMS, create_model
from cifarbench.models import stems
from cifarbench.models.registry import check_input_size


def _strided(model):
    """Qualified names of the convs and pools that downsample."""
    out = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            out.add(name)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and m.stride not in (1, (1, 1)):
            out.add(name)
    return out


# model -> (the stem's first downsampling, its second): `cifar-s2` removes the first, `cifar` both.
# These are the module paths of the table in stems.py.
DOCUMENTED = {
    "resnet18": ("conv1", "maxpool"),
    "mobilenet_v2_x0_5": ("features.0.0", "features.2.conv.1.0"),
    "mobilenet_v3_small": ("features.0.0", "features.1.block.0.0"),
    "mobilenet_v3_large": ("features.0.0", "features.2.block.1.0"),
    "efficientnet_b0": ("features.0.0", "features.2.0.block.1.0"),
    "efficientnet_v2_s": ("features.0.0", "features.2.0.block.0.0"),
    "mnasnet0_5": ("layers.0", "layers.8.0.layers.3"),
    "regnet_x_400mf": ("stem.0", "trunk_output.block1.block1-0.f.b.0", "trunk_output.block1.block1-0.proj.0"),
    "shufflenet_v2_x0_5": ("conv1.0", "maxpool"),
    "densenet121": ("features.conv0", "features.pool0"),
}


@pytest.mark.parametrize("name", DOCUMENTED)
def test_stems_remove_exactly_the_documented_downsamplings(name):
    base = _strided(create_model(name))
    first, *second = DOCUMENTED[name]
    assert base - _strided(create_model(name, stem="cifar-s2")) == {first}
    assert base - _strided(create_model(name, stem="cifar")) == {first, *second}
    assert _strided(create_model(name, stem="cifar")) <= base  # nothing new downsamples


def _last_conv_size(model, px=32):
    """Spatial size of the last conv output: the feature map the classifier pools."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, px, px))
    for h in hooks:
        h.remove()
    return sizes[-1]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2_x0_5", "mobilenet_v3_small", "efficientnet_b0",
                                  "mnasnet0_5", "regnet_y_400mf", "shufflenet_v2_x0_5", "densenet121"])
def test_final_feature_map_at_32px(name):
    # the top table: imagenet 1x1, cifar-s2 2x2, cifar 4x4
    assert [_last_conv_size(create_model(name, stem=s)) for s in STEMS] == [1, 4, 2]


@pytest.mark.parametrize("name,after_stem", [("resnet18", "maxpool"), ("mobilenet_v2_x0_5", "features.2"),
                                             ("shufflenet_v2_x0_5", "maxpool")])
def test_study_models_after_the_stem(name, after_stem):
    def size(stem):
        model = create_model(name, stem=stem).eval()
        got = []
        model.get_submodule(after_stem).register_forward_hook(lambda m, i, o: got.append(tuple(o.shape[-2:])))
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
        return got[0]

    assert size("imagenet") == (8, 8) and size("cifar-s2") == (16, 16) and size("cifar") == (32, 32)


def test_resnet_cifar_conv1_is_3x3_stride1_with_resnet_init():
    torch.manual_seed(0)
    conv = create_model("resnet18", stem="cifar").conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)  # kaiming fan_out
    assert isinstance(create_model("resnet18", stem="cifar").maxpool, nn.Identity)
    assert isinstance(create_model("resnet18", stem="cifar-s2").maxpool, nn.MaxPool2d)


def test_densenet_conv0_uses_densenet_init():
    torch.manual_seed(0)
    conv = create_model("densenet121", stem="cifar").features.conv0
    assert (conv.kernel_size, conv.stride) == ((3, 3), (1, 1))
    assert conv.weight.std().item() == pytest.approx((2 / (3 * 9)) ** 0.5, rel=0.1)  # kaiming fan_in


def test_unstrided_mobilenet_block_keeps_its_records():
    block = create_model("mobilenet_v2", stem="cifar").features[2]
    assert block.stride == 1 and not block._is_cn and not block.use_res_connect


@pytest.mark.parametrize("name", ["vgg11", "alexnet", "convnext_tiny", "googlenet", "squeezenet1_1", "swin_t", "vit_b_16"])
@pytest.mark.parametrize("stem", ["cifar", "cifar-s2"])
def test_families_without_adaptation_refuse(name, stem):
    with pytest.raises(CifarbenchError, match=f"stem '{stem}' has no adaptation for family .*; use --stem imagenet"):
        create_model(name, stem=stem)


def test_docs_cover_every_family():
    doc = stems.stem_docs()
    assert doc.startswith("| `--stem` |") and "<!--" not in doc
    rows = [line for line in doc.splitlines() if line.startswith("| ")]
    assert all(line.endswith("|") for line in rows)
    for family in stems.FAMILIES:
        assert any(p.replace("*", "") in doc for p in stems.FAMILIES[family]), family
    assert set(stems._ADAPTERS) < set(stems.FAMILIES)


def _fits(model, px):
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, px, px, device=device))
        return True
    except (RuntimeError, AssertionError, ValueError):
        return False


# one model per MIN_INPUT pattern, each bound checked from both sides
@pytest.mark.parametrize("name,stem", [("alexnet", "imagenet"), ("inception_v3", "imagenet"), ("vgg11", "imagenet"),
                                       ("convnext_tiny", "imagenet"), ("densenet121", "imagenet"),
                                       ("densenet121", "cifar"), ("densenet121", "cifar-s2"),
                                       ("squeezenet1_0", "imagenet"), ("squeezenet1_1", "imagenet"),
                                       ("googlenet", "imagenet"), ("swin_t", "imagenet")])
def test_min_input_table(name, stem):
    low, fixed = stems.input_limits(name, stem)
    assert low > 1 and fixed is None
    model = create_model(name, stem=stem)
    assert _fits(model, low) and not _fits(model, low - 1)
    check_input_size(name, low, stem)
    with pytest.raises(CifarbenchError, match=f"at least {low}x{low}"):
        check_input_size(name, low - 1, stem)


@pytest.mark.parametrize("name,other", [("vit_b_32", 256), ("maxvit_t", 192)])
def test_fixed_input_table(name, other):
    assert stems.input_limits(name) == (1, 224)
    with torch.device("meta"):  # shapes only: these checks need no arithmetic
        model = create_model(name)
    assert _fits(model, 224) and not _fits(model, other)
    with pytest.raises(CifarbenchError, match="only accepts 224x224"):
        check_input_size(name, 32)


def test_models_without_limits_take_tiny_inputs():
    assert stems.input_limits("resnet18", "cifar") == (1, None)
    assert _fits(create_model("resnet18"), 8) and _fits(create_model("mobilenet_v2_x0_5", stem="cifar"), 8)


def test_family_patterns():
    assert {stems.family_of(n) for n in ("resnet18", "resnext50_32x4d", "wide_resnet50_2")} == {"resnet"}
    assert stems.family_of("mobilenet_v2_x0_5") == "mobilenet_v2"
    assert stems.family_of("efficientnet_v2_s") == "efficientnet"


def test_stem_strides_used_by_the_fast_path_match_the_models():
    # engine.fast decides bf16 from the activation size after the stem, so its stride table must be true
    from cifarbench.models import STEM_STRIDE

    assert set(STEM_STRIDE) == set(STEMS)
    x = torch.zeros(1, 3, 32, 32)
    for stem, stride in STEM_STRIDE.items():
        m = create_model("shufflenet_v2_x0_5", stem=stem).eval()
        with torch.no_grad():
            assert m.maxpool(m.conv1(x)).shape[-1] == 32 // stride, stem
        r = create_model("resnet18", stem=stem).eval()
        with torch.no_grad():
            assert r.maxpool(r.relu(r.bn1(r.conv1(x)))).shape[-1] == 32 // stride, stem
