"""Models: a registry over torchvision's builders, small-image stems, profiling and selection.

``create_model`` and ``list_models`` are imported on first use (PEP 562), so that the CLI can
read ``STEMS`` for its argument parser without paying for ``import torch``.
"""
from __future__ import annotations

# How much each stem shrinks a side before the first stage (the "stem stride" column of the table in
# cifarbench.models.stems; tests/models/test_stems.py checks it against the built models).
STEM_STRIDE = {"imagenet": 4, "cifar": 1, "cifar-s2": 2}
STEMS = tuple(STEM_STRIDE)  # documented in cifarbench.models.stems (which re-checks this tuple)

__all__ = ["STEMS", "STEM_STRIDE", "create_model", "list_models"]


def __getattr__(name: str):
    if name in ("create_model", "list_models"):
        from cifarbench.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'cifarbench.models' has no attribute {name!r}")
