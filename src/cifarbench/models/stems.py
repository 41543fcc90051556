"""Small-image stems: exactly what ``--stem`` does to each torchvision family.

torchvision's ImageNet models shrink the image 4x in their first layers (the "stem"),
so a 32 px CIFAR image is 8x8 before the first real stage and 1x1 at the end. Published
CIFAR results use the same networks with a stem that keeps the resolution. Most code
makes that change silently; here it is one function per family, and this table (copied
into the README by ``stem_docs()``) says what each one changes. Module paths are
torchvision's (0.19 to 0.29 share them); tests/models/test_stems.py checks every row.

<!-- stem-docs -->
| `--stem` | stem stride | 32 px input after the stem | final feature map at 32 px |
|---|---|---|---|
| `imagenet` | 4 | 8x8 | 1x1 (torchvision's architecture, unchanged) |
| `cifar` | 1 | 32x32 | 4x4 (the standard CIFAR adaptation, as in kuangliu/pytorch-cifar) |
| `cifar-s2` | 2 | 16x16 | 2x2 (a cheaper middle ground for CPUs: 3.4x to 4x fewer MACs than `cifar`) |

| family | models | `cifar` | `cifar-s2` |
|---|---|---|---|
| ResNet | `resnet*`, `resnext*`, `wide_resnet*` | `conv1` 7x7 stride 2 -> 3x3 stride 1 padding 1 (new conv); `maxpool` -> Identity | `conv1` as `cifar`; `maxpool` kept |
| MobileNetV2 | `mobilenet_v2`, `mobilenet_v2_x*` | `features.0` conv stride 2 -> 1; `features.2` (first stride-2 inverted residual) depthwise stride 2 -> 1 | `features.0` stride 2 -> 1 |
| MobileNetV3 | `mobilenet_v3_small`, `mobilenet_v3_large` | `features.0` stride 2 -> 1; first stride-2 block (`features.1` small, `features.2` large) stride 2 -> 1 | `features.0` stride 2 -> 1 |
| EfficientNet | `efficientnet_b0`-`b7`, `efficientnet_v2_*` | `features.0` stride 2 -> 1; `features.2.0` (first stride-2 block) stride 2 -> 1 | `features.0` stride 2 -> 1 |
| MnasNet | `mnasnet*` | `layers.0` stride 2 -> 1; `layers.8.0` (first stride-2 block) depthwise stride 2 -> 1 | `layers.0` stride 2 -> 1 |
| RegNet | `regnet_x_*`, `regnet_y_*` | `stem.0` stride 2 -> 1; `trunk_output.block1.block1-0` 3x3 conv and 1x1 shortcut stride 2 -> 1 | `stem.0` stride 2 -> 1 |
| ShuffleNetV2 | `shufflenet_v2_*` | `conv1.0` (already 3x3) stride 2 -> 1; `maxpool` -> Identity | `conv1.0` stride 2 -> 1; `maxpool` kept |
| DenseNet | `densenet*` | `features.conv0` 7x7 stride 2 -> 3x3 stride 1 padding 1 (new conv); `features.pool0` -> Identity | `features.conv0` as `cifar`; `features.pool0` kept |
| no adaptation | `alexnet`, `convnext_*`, `googlenet`, `inception_v3`, `maxvit_t`, `squeezenet*`, `swin_*`, `vgg*`, `vit_*` | error: use `--stem imagenet` | error: use `--stem imagenet` |

Notes:
- A stride change keeps the conv's weights, padding (torchvision pads "same") and init. A
  block whose stride drops to 1 keeps its shape otherwise: no residual connection is added.
- A new conv (ResNet `conv1`, DenseNet `conv0`, and the first conv when `in_chans != 3`) is
  initialised the way that family's torchvision constructor initialises convs: kaiming-normal
  fan_out (ResNet, VGG, MobileNetV2/V3, EfficientNet, MnasNet, RegNet), kaiming-normal fan_in
  (DenseNet), kaiming-uniform (SqueezeNet), truncated normal (GoogLeNet std 0.01, Inception
  0.1, ConvNeXt 0.02, ViT sqrt(1/fan_in)), normal std 0.02 (MaxViT), PyTorch's default
  (AlexNet, ShuffleNetV2, Swin, which torchvision leaves at the default). Biases are zeroed.
- Inputs: `vit_*` and `maxvit_t` only accept 224x224 (`--resolution 224`). With `--stem imagenet`
  these need at least: `alexnet` 63 px, `inception_v3` 75, `vgg*` and `convnext_*` 32,
  `densenet*` 29, `squeezenet1_0` 21, `squeezenet1_1` 17, `googlenet` 15, `swin_*` 4; DenseNet
  needs 8 px with `cifar` and 15 with `cifar-s2`. Everything else accepts any size.
- Measured MACs per 32 px image, 10 classes (`cifarbench summary MODEL --stem STEM`, torch 2.14):

  | model | params (`cifar`) | `imagenet` | `cifar-s2` | `cifar` |
  |---|---|---|---|---|
  | resnet18 | 11,173,962 | 0.0370 G | 0.140 G | 0.555 G |
  | mobilenet_v2_x0_5 | 700,490 | 0.00197 G | 0.00784 G | 0.0280 G |
  | shufflenet_v2_x0_5 | 352,042 | 0.00082 G | 0.00323 G | 0.0109 G |
<!-- /stem-docs -->
"""
from __future__ import annotations

import fnmatch
import math

from torch import nn

from cifarbench.errors import CifarbenchError
from cifarbench.models import STEMS  # one definition, importable without torch

# family -> fnmatch patterns of model names (torchvision builders and our variants)
FAMILIES = {
    "resnet": ("resnet*", "resnext*", "wide_resnet*"),
    "mobilenet_v2": ("mobilenet_v2*",),
    "mobilenet_v3": ("mobilenet_v3_*",),
    "efficientnet": ("efficientnet_*",),
    "mnasnet": ("mnasnet*",),
    "regnet": ("regnet_*",),
    "shufflenet_v2": ("shufflenet_v2_*",),
    "densenet": ("densenet*",),
    "alexnet": ("alexnet",),
    "convnext": ("convnext_*",),
    "googlenet": ("googlenet",),
    "inception": ("inception_*",),
    "maxvit": ("maxvit_*",),
    "squeezenet": ("squeezenet*",),
    "swin": ("swin_*",),
    "vgg": ("vgg*",),
    "vit": ("vit_*",),
}

# Input sizes the network can take (see the docstring): pattern -> {stem: smallest px}.
# Measured by forward passes; tests/models/test_stems.py checks each bound from both sides.
MIN_INPUT = {
    "alexnet": {"imagenet": 63},
    "inception_v3": {"imagenet": 75},
    "vgg*": {"imagenet": 32},
    "convnext_*": {"imagenet": 32},
    "densenet*": {"imagenet": 29, "cifar": 8, "cifar-s2": 15},
    "squeezenet1_0": {"imagenet": 21},
    "squeezenet1_1": {"imagenet": 17},
    "googlenet": {"imagenet": 15},
    "swin_*": {"imagenet": 4},
}
# The only size these accept: position embeddings / attention grids are built for 224.
FIXED_INPUT = {"vit_*": 224, "maxvit_t": 224}


def stem_docs() -> str:
    """The markdown tables above, for the README."""
    doc = __doc__ or ""
    start, end = doc.index("<!-- stem-docs -->"), doc.index("<!-- /stem-docs -->")
    return doc[start + len("<!-- stem-docs -->"):end].strip() + "\n"


def family_of(name: str) -> str:
    for family, patterns in FAMILIES.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return family
    raise CifarbenchError(f"model {name!r} belongs to no known family")  # a torchvision family we have not mapped


def input_limits(name: str, stem: str = "imagenet") -> tuple[int, int | None]:
    """(smallest input in px, the only accepted size or None) for a model name."""
    low = max([lim.get(stem, 1) for p, lim in MIN_INPUT.items() if fnmatch.fnmatchcase(name, p)], default=1)
    fixed = next((px for p, px in FIXED_INPUT.items() if fnmatch.fnmatchcase(name, p)), None)
    return low, fixed


# ---------------------------------------------------------------- init of new convs
def _kaiming_fan_out(w):  # ResNet, VGG, MnasNet: mode="fan_out", relu; MobileNet/EfficientNet use the
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")  # leaky_relu default with a=0: same gain


def _regnet(w):  # RegNet writes it out: normal(0, sqrt(2 / fan_out)), i.e. kaiming fan_out
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    nn.init.normal_(w, mean=0.0, std=math.sqrt(2.0 / fan_out))


def _trunc(std):
    return lambda w: nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2, b=2)


def _vit(w):  # the patchify conv: truncated normal with std sqrt(1 / fan_in)
    nn.init.trunc_normal_(w, std=math.sqrt(1 / (w.shape[1] * w.shape[2] * w.shape[3])))


_CONV_INIT = {
    "resnet": _kaiming_fan_out,
    "vgg": _kaiming_fan_out,
    "mnasnet": _kaiming_fan_out,
    "mobilenet_v2": _kaiming_fan_out,
    "mobilenet_v3": _kaiming_fan_out,
    "efficientnet": _kaiming_fan_out,
    "regnet": _regnet,
    "densenet": nn.init.kaiming_normal_,  # DenseNet keeps kaiming's default mode, fan_in
    "squeezenet": nn.init.kaiming_uniform_,
    "googlenet": _trunc(0.01),
    "inception": _trunc(0.1),
    "convnext": lambda w: nn.init.trunc_normal_(w, std=0.02),
    "vit": _vit,
    "maxvit": lambda w: nn.init.normal_(w, std=0.02),
    # alexnet, shufflenet_v2, swin: torchvision keeps nn.Conv2d's default init, which a new conv already has
}


def rebuild_conv(conv: nn.Conv2d, family: str, **changes) -> nn.Conv2d:
    """A new Conv2d like ``conv`` with ``changes`` applied, initialised as ``family``'s torchvision code does."""
    kw = dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
              stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
              bias=conv.bias is not None, padding_mode=conv.padding_mode)
    kw.update(changes)
    new = nn.Conv2d(**kw, device=conv.weight.device, dtype=conv.weight.dtype)
    init = _CONV_INIT.get(family)
    if init is not None:
        init(new.weight)
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    return new


# ---------------------------------------------------------------- the adaptations
def _unstride(module: nn.Module, where: str) -> None:
    """Stride 2 -> 1 in every conv of ``module``; weights and 'same' padding stay valid."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    if not convs:  # torchvision changed its layout: fail rather than silently do nothing
        raise CifarbenchError(f"stem: expected a strided conv at {where}; torchvision's layout changed")
    for m in convs:
        m.stride = (1, 1)
    # MobileNetV2/V3 blocks record their stride (and mark stride-2 blocks as feature cut
    # points with ``_is_cn``); keep those records true
    if isinstance(getattr(module, "stride", None), int):
        module.stride = 1
    if getattr(module, "_is_cn", False):
        module._is_cn = False


def _first_strided_child(container: nn.Module, where: str) -> tuple[str, nn.Module]:
    for name, child in container.named_children():
        if any(isinstance(m, nn.Conv2d) and m.stride != (1, 1) for m in child.modules()):
            return f"{where}.{name}", child
    raise CifarbenchError(f"stem: no strided block in {where}; torchvision's layout changed")


def _resnet(model: nn.Module, stem: str) -> None:
    model.conv1 = rebuild_conv(model.conv1, "resnet", kernel_size=3, stride=1, padding=1)
    if stem == "cifar":
        model.maxpool = nn.Identity()


def _densenet(model: nn.Module, stem: str) -> None:
    f = model.features
    f.conv0 = rebuild_conv(f.conv0, "densenet", kernel_size=3, stride=1, padding=1)
    if stem == "cifar":
        f.pool0 = nn.Identity()


def _shufflenet(model: nn.Module, stem: str) -> None:
    _unstride(model.conv1, "conv1")
    if stem == "cifar":
        model.maxpool = nn.Identity()


def _first_conv_then_block(first: str, blocks: str):
    """Inverted-residual style nets: the stem is the first conv (stride 2) plus the first
    stride-2 block; ``cifar`` removes both strides, ``cifar-s2`` only the first."""

    def adapt(model: nn.Module, stem: str) -> None:
        _unstride(model.get_submodule(first), first)
        if stem == "cifar":
            # The child that now holds the first stride 2 is the stem's second downsampling. In
            # EfficientNet and RegNet it is a stage whose first block alone is strided, so
            # unstriding the stage changes exactly that block (the tests pin the conv paths).
            child, block = _first_strided_child(model.get_submodule(blocks), blocks)
            _unstride(block, child)

    return adapt


_ADAPTERS = {
    "resnet": _resnet,
    "densenet": _densenet,
    "shufflenet_v2": _shufflenet,
    "mobilenet_v2": _first_conv_then_block("features.0", "features"),
    "mobilenet_v3": _first_conv_then_block("features.0", "features"),
    "efficientnet": _first_conv_then_block("features.0", "features"),
    "mnasnet": _first_conv_then_block("layers.0", "layers"),
    "regnet": _first_conv_then_block("stem.0", "trunk_output"),
}


def check_stem(family: str, stem: str, name: str | None = None) -> None:
    if stem not in STEMS:
        raise CifarbenchError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    if stem != "imagenet" and family not in _ADAPTERS:
        what = f"family {family}" + (f" ({name})" if name else "")
        raise CifarbenchError(f"stem {stem!r} has no adaptation for {what}; use --stem imagenet")


def apply_stem(model: nn.Module, family: str, stem: str, name: str | None = None) -> nn.Module:
    """Rewrite ``model`` (a fresh torchvision build of ``family``) in place for ``stem``; returns it."""
    check_stem(family, stem, name)
    if stem != "imagenet":
        _ADAPTERS[family](model, stem)
    return model
