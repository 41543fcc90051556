"""Patch-whitening initialisation of a model's first convolution (``--whiten-init``).

Why: in a run of a few epochs the first layer spends many of its steps learning what the data's pixel
statistics already say. The principal directions of the images' k×k patches, each scaled by 1/sqrt of its
variance, are filters whose outputs are decorrelated and of equal variance: the fast CIFAR trainers (airbench,
after tysam-code's hlb-cifar10) start from such a filter bank. Here it is an initialisation only: the layer
keeps its shape and stays trainable, so the architecture is torchvision's (with its ``--stem``), unchanged.

The filters come in +/- pairs (a ReLU follows the first conv's norm layer, so each sign keeps half of a
direction), the largest-variance directions first: 2·min(out_channels // 2, C·k·k) channels get them and any
others keep the family's random init. Computed from training images only, with no randomness of its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.errors import CifarbenchError

EPS = 5e-4  # added to each direction's variance: keeps the near-empty directions (JPEG's high frequencies) finite


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d in module order: the stem's conv in every family the stems adapt."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise CifarbenchError("--whiten-init: the model has no convolution")
    if conv.groups != 1:
        raise CifarbenchError(f"--whiten-init: the first convolution is grouped (groups={conv.groups})")
    return conv


def patch_whitening(images: torch.Tensor, kernel_size: tuple[int, int], eps: float = EPS) -> torch.Tensor:
    """Whitening filters of ``images``' patches (float N×C×H×W, normalised as the model sees them).

    Returns [C·kh·kw, C, kh, kw]: row i is the i-th principal direction (largest variance first) divided by
    sqrt(its variance + eps), so that its response to the patches has variance about 1."""
    c = images.shape[1]
    kh, kw = kernel_size
    if images.shape[2] < kh or images.shape[3] < kw or len(images) == 0:
        raise CifarbenchError(f"--whiten-init: the images are smaller than the {kh}x{kw} kernel")
    dim = c * kh * kw
    cov = torch.zeros(dim, dim, dtype=torch.float64)
    total = torch.zeros(dim, dtype=torch.float64)
    n = 0
    for chunk in images.split(256):  # patches of 256 images at a time: 256 × 900 × 27 floats for CIFAR
        p = F.unfold(chunk.float(), (kh, kw)).transpose(1, 2).reshape(-1, dim).double()
        cov += p.T @ p
        total += p.sum(0)
        n += len(p)
    mean = total / n
    cov = (cov - n * torch.outer(mean, mean)) / (n - 1)
    var, vec = torch.linalg.eigh(cov)  # ascending
    var, vec = var.flip(0).clamp_min(0), vec.flip(1)
    return (vec.T / (var + eps).sqrt()[:, None]).reshape(dim, c, kh, kw).float()


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor, eps: float = EPS) -> int:
    """Set the first conv's leading output channels to +/- patch-whitening filters of ``images``; returns how many."""
    conv = first_conv(model)
    if conv.in_channels != images.shape[1]:
        raise CifarbenchError(f"--whiten-init: the first convolution takes {conv.in_channels} channels, "
                              f"the images have {images.shape[1]}")
    filters = patch_whitening(images, conv.kernel_size, eps)
    k = min(conv.out_channels // 2, len(filters))
    w = torch.cat([filters[:k], -filters[:k]])
    conv.weight[: 2 * k].copy_(w.to(conv.weight))
    if conv.bias is not None:
        conv.bias[: 2 * k].zero_()
    return 2 * k
