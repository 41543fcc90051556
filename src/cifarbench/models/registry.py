"""The model registry: every torchvision classification builder, plus a few named variants.

Models are always built from scratch (``weights=None``): cifarbench trains from scratch,
and pretrained ImageNet weights would not fit a changed stem anyway. Like timm's registry,
an unknown name fails loudly, with the closest names.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools

from torch import nn

from cifarbench.errors import CifarbenchError
from cifarbench.models.stems import STEMS, apply_stem, check_stem, family_of, input_limits, rebuild_conv

# Named variants torchvision has no builder for: name -> (torchvision builder, extra kwargs).
# MobileNetV2 widths are the paper's (Sandler et al. 2018); the study trains mobilenet_v2_x0_5.
VARIANTS = {
    "mobilenet_v2_x0_35": ("mobilenet_v2", {"width_mult": 0.35}),
    "mobilenet_v2_x0_5": ("mobilenet_v2", {"width_mult": 0.5}),
    "mobilenet_v2_x0_75": ("mobilenet_v2", {"width_mult": 0.75}),
    "mobilenet_v2_x1_0": ("mobilenet_v2", {"width_mult": 1.0}),
    "mobilenet_v2_x1_4": ("mobilenet_v2", {"width_mult": 1.4}),
}

# Builder options that make forward() return plain logits: GoogLeNet and Inception-v3 default
# to auxiliary heads (a namedtuple in train mode) that no cifarbench recipe uses.
# init_weights=True is what torchvision does today, but it warns unless asked explicitly.
_BUILD_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


@functools.lru_cache(maxsize=None)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    # module=torchvision.models: classification only (no detection, segmentation, video, quantized)
    return tuple(torchvision.models.list_models(module=torchvision.models))


def _all_names() -> list[str]:
    return sorted(set(_torchvision_names()) | set(VARIANTS))


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the fnmatch ``pattern``, sorted."""
    return [n for n in _all_names() if fnmatch.fnmatchcase(n, pattern)]


def resolve(name: str) -> tuple[str, dict]:
    """(torchvision builder, builder kwargs) for a registered name; CifarbenchError if unknown."""
    if name in VARIANTS:
        builder, kwargs = VARIANTS[name]
        return builder, dict(kwargs)
    if name in _torchvision_names():
        return name, {}
    names = _all_names()
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=5, cutoff=0.5)
    hint = f"closest: {', '.join(lowered[c] for c in close)}" if close else "see `cifarbench models`"
    raise CifarbenchError(f"unknown model {name!r}; {hint}")


def model_family(name: str) -> str:
    """The stem family of a registered name (``resnet``, ``mobilenet_v2``, ...)."""
    return family_of(resolve(name)[0])


def check_input_size(name: str, size: int, stem: str = "imagenet") -> None:
    """CifarbenchError if the model cannot take ``size`` x ``size`` inputs with this stem."""
    low, fixed = input_limits(resolve(name)[0], stem)
    if fixed is not None and size != fixed:
        raise CifarbenchError(f"{name} only accepts {fixed}x{fixed} inputs, got {size}x{size} (use --resolution {fixed})")
    if size < low:
        raise CifarbenchError(f"{name} with stem {stem!r} needs inputs of at least {low}x{low} px, got {size}x{size}")


def _set_in_chans(model: nn.Module, family: str, in_chans: int) -> None:
    """Rebuild the first Conv2d (in module order, which is forward order for every torchvision classifier)."""
    path, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.groups != 1:
        raise CifarbenchError(f"in_chans={in_chans}: cannot find a plain first conv to replace in this {family} model")
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, rebuild_conv(conv, family, in_channels=in_chans))


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, stem: str = "imagenet",
                 model_kwargs: dict | None = None) -> nn.Module:
    """Build ``name`` from scratch with ``num_classes`` outputs, ``in_chans`` input channels and a stem
    (``imagenet``, ``cifar`` or ``cifar-s2``: see ``cifarbench.models.stems``). ``model_kwargs`` go to the
    torchvision builder as they are (e.g. ``dropout`` for MobileNetV2, ``zero_init_residual`` for ResNet)."""
    builder, kwargs = resolve(name)
    for what, v in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CifarbenchError(f"{what}={v!r}: must be a positive integer")
    family = family_of(builder)
    check_stem(family, stem, name)  # before building: a bad stem should not cost a build
    import torchvision

    extra = dict(model_kwargs or {})
    for fixed in ("weights", "num_classes"):
        if fixed in extra:
            raise CifarbenchError(f"--model-kwargs {fixed}=...: set by cifarbench itself, not a builder option here")
    try:
        model = torchvision.models.get_model(builder, weights=None, num_classes=num_classes,
                                             **{**_BUILD_KWARGS.get(builder, {}), **kwargs, **extra})
    except TypeError as e:  # an option the builder does not take
        if not extra:
            raise
        raise CifarbenchError(f"--model-kwargs {', '.join(f'{k}={v!r}' for k, v in extra.items())}: "
                              f"torchvision's {builder} refused them ({e})") from None
    apply_stem(model, family, stem, name)
    if family == "shufflenet_v2":
        from cifarbench.models.layout import keep_channels_last

        keep_channels_last(model)  # identical outputs; 1.2x faster in channels_last on the CPU
    if in_chans != 3:
        _set_in_chans(model, family, in_chans)
    return model


__all__ = ["STEMS", "VARIANTS", "create_model", "list_models", "resolve", "model_family", "check_input_size"]
