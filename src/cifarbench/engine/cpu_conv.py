"""Convolutions on small maps as plain matrix products, on the CPUs where that was measured to pay.

Why: on a 2-core Intel Xeon with AMX (torch 2.14.1, oneDNN 3.12, one thread), oneDNN's bf16 convolution
kernels are built for large maps. On ResNet18's late stages at 32 px (maps of 2x2 to 8x8, 128-512 channels)
its weight-gradient kernel ran at 16-50 GFLOP/s; the same arithmetic written as im2col + one GEMM (taps
gathered into a [positions, taps x channels] matrix; the GEMM accumulates in fp32) ran at 120-310, and a whole
``cifar-s2`` training step 1.90x faster (BENCHMARKS.md, "Matmul convolutions on AMX CPUs":
``benchmarks/conv_kernels.py`` per convolution, ``benchmarks/cpu_levers.py ... bf16+cl+t1+mm`` per step).
On a 2-core AMD EPYC with AVX-512 BF16 and no AMX the matmul wins only on the last stage's 2x2 maps (all three
kernels; the weight gradient 2.1-3.1x), loses at 4x4 and above, and the step gains 1.04-1.06x at one thread
(``... bf16+cl+t1+mm4``). On a 2-core AMD EPYC (Zen 3) with AVX2 and no AVX-512, where runs train in fp32,
oneDNN's fp32 kernels are slowest of all on those 2x2 maps (weight gradient of the 512-channel convolution at
9 GFLOP/s against 52 as a matmul, ``conv_kernels.py --dtype fp32``), so fp32 runs route them too: a ResNet18
step gains 1.51x at one thread, MobileNetV2 x0.5's 1.11x, ShuffleNetV2 x0.5's nothing (``... cl+t1+mm4``).

What changes: only which kernel computes a convolution. The module tree, parameter names, state dicts,
checkpoints and exports are the stock torchvision ones; the results differ from oneDNN's by bf16 (or fp32)
rounding (the tests bound it). Used only where it was measured to pay (:func:`thresholds`):
- the CPU, under bf16 autocast, on an x86 CPU with native bf16: with AMX (``amx_bf16``) for output maps of at most
  MATMUL_MAX_PIXELS, the input gradient too only up to FOLD_MAX_PIXELS (at 8x8 the nine-tap scatter cost more
  than oneDNN's backward-data kernel); with AVX-512 BF16 only, up to AVX512_MAX_PIXELS (other CPUs with bf16, e.g. ARM, keep oneDNN's kernels);
- the CPU in fp32 (no autocast) on an x86 CPU with AVX2 and no AVX-512, up to AVX2_FP32_MAX_PIXELS (fp32 on
  AVX-512 CPUs was not measured and keeps oneDNN's kernels);
- plain dense convolutions (groups 1, no dilation, square kernel, no bias, zero padding).
Depthwise and grouped convolutions (MobileNetV2, ShuffleNetV2) keep oneDNN's kernels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarbench.engine import env

MATMUL_MAX_PIXELS = 64  # AMX: forward and weight gradient as a matmul for output maps up to 8x8
FOLD_MAX_PIXELS = 16    # AMX: the input gradient too (matmul + scatter of the taps) up to 4x4
AVX512_MAX_PIXELS = 4   # AVX-512 BF16 without AMX (AMD EPYC): all three as matmuls on 2x2 maps only
AVX2_FP32_MAX_PIXELS = 4  # fp32 on AVX2 without AVX-512 (AMD EPYC Zen 3): the same, on 2x2 maps only


def _columns(x: torch.Tensor, k: int, stride: int, pad: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """im2col in NHWC order: [N*Ho*Wo, k*k*C], taps major and channels minor (a channels_last weight's order)."""
    xh = F.pad(x.permute(0, 2, 3, 1), (0, 0, pad, pad, pad, pad))
    n, hp, wp, c = xh.shape
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    taps = [xh[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(k) for j in range(k)]
    return torch.stack(taps, dim=3).reshape(n * ho * wo, k * k * c), (n, ho, wo)


def _fold(grad_cols: torch.Tensor, x_shape, k: int, stride: int, pad: int, n: int, ho: int, wo: int) -> torch.Tensor:
    """The adjoint of _columns: each tap's gradient added back where it was read, summed in fp32 (at least)."""
    _, c, h, w = x_shape
    g = grad_cols.reshape(n, ho, wo, k * k, c)
    out = grad_cols.new_zeros(n, h + 2 * pad, w + 2 * pad, c, dtype=torch.promote_types(grad_cols.dtype, torch.float32))
    for t in range(k * k):
        i, j = divmod(t, k)
        out[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :] += g[:, :, :, t]
    return out[:, pad:pad + h, pad:pad + w, :].to(grad_cols.dtype).permute(0, 3, 1, 2)


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    o, c, k, _ = w.shape
    return w.permute(0, 2, 3, 1).reshape(o, k * k * c)


class MatmulConv(torch.autograd.Function):
    """conv2d(x, w, stride, padding) for groups 1: forward and weight gradient as one matmul each; the input
    gradient as matmul + fold when ``fold`` is set, else oneDNN's backward-data kernel."""

    @staticmethod
    def forward(ctx, x, w, stride: int, pad: int, fold: bool):
        cols, (n, ho, wo) = _columns(x, w.shape[2], stride, pad)
        ctx.conf = (stride, pad, fold)
        ctx.save_for_backward(x, w)
        return (cols @ _as_matrix(w).t()).reshape(n, ho, wo, w.shape[0]).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, pad, fold = ctx.conf
        o, c, k, _ = w.shape
        n, _, ho, wo = grad.shape
        g = grad.permute(0, 2, 3, 1).reshape(n * ho * wo, o)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            if fold:
                grad_x = _fold(g @ _as_matrix(w), x.shape, k, stride, pad, n, ho, wo)
            else:
                grad_x = torch.ops.aten.convolution_backward(grad, x, w, None, [stride] * 2, [pad] * 2, [1, 1],
                                                             False, [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:  # the columns are rebuilt, not saved by forward: saved, they would hold k*k
            cols, _ = _columns(x, k, stride, pad)  # times the input's memory per convolution until the backward
            grad_w = (g.t() @ cols).reshape(o, k, k, c).permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None, None


class MatmulConv2d(nn.Conv2d):
    """An nn.Conv2d whose small-map CPU calls go through MatmulConv (under bf16 autocast; in fp32 too where
    ``fp32`` is set); every other call is nn.Conv2d's own."""

    # set per module by use_matmul_convs (plain attributes: not in the state dict)
    matmul_max_pixels, fold_max_pixels, fp32 = MATMUL_MAX_PIXELS, FOLD_MAX_PIXELS, False

    def _conv_forward(self, x, weight, bias):
        if bias is None and x.device.type == "cpu":
            autocast = torch.is_autocast_enabled("cpu")
            if autocast or (self.fp32 and x.dtype == weight.dtype == torch.float32):
                s, p, k = self.stride[0], self.padding[0], self.kernel_size[0]
                ho, wo = (x.shape[2] + 2 * p - k) // s + 1, (x.shape[3] + 2 * p - k) // s + 1
                if ho * wo <= self.matmul_max_pixels:
                    dt = torch.get_autocast_dtype("cpu") if autocast else torch.float32
                    with torch.autocast("cpu", enabled=False):
                        return MatmulConv.apply(x.to(dt), weight.to(dt), s, p, ho * wo <= self.fold_max_pixels)
        return super()._conv_forward(x, weight, bias)


def _eligible(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.bias is None and m.padding_mode == "zeros"
            and m.dilation == (1, 1) and isinstance(m.padding, tuple) and len(set(m.padding)) == 1
            and len(set(m.kernel_size)) == 1 and len(set(m.stride)) == 1)


def use_matmul_convs(model: nn.Module, max_pixels: int = MATMUL_MAX_PIXELS, fold_max_pixels: int = FOLD_MAX_PIXELS,
                     fp32: bool = False) -> int:
    """Route ``model``'s eligible convolutions through MatmulConv2d, in place (the class only: the parameters,
    their names and the state dict stay), as matmuls for output maps of up to ``max_pixels`` (the input
    gradient too up to ``fold_max_pixels``), under bf16 autocast and, with ``fp32``, in fp32 too; returns how many."""
    n = 0
    for m in model.modules():
        if _eligible(m):
            m.__class__ = MatmulConv2d
            m.matmul_max_pixels, m.fold_max_pixels = max_pixels, min(fold_max_pixels, max_pixels)
            m.fp32 = fp32
            n += 1
    return n


def thresholds(device: torch.device, amp: bool) -> tuple[int, int] | None:
    """(max_pixels, fold_max_pixels) for a run on ``device`` with bf16 autocast ``amp``, or None where the
    matmul path was not measured to pay (see the docstring)."""
    if device.type != "cpu":
        return None
    if not amp:
        return (AVX2_FP32_MAX_PIXELS, AVX2_FP32_MAX_PIXELS) if env.cpu_avx2_only() else None
    if env.cpu_has_amx():
        return MATMUL_MAX_PIXELS, FOLD_MAX_PIXELS
    if env.cpu_has_avx512_bf16():  # not cpu_has_bf16(): ARM's bf16 was never measured
        return AVX512_MAX_PIXELS, AVX512_MAX_PIXELS
    return None


def apply(model: nn.Module, device: torch.device, amp: bool) -> int:
    """use_matmul_convs with this CPU's :func:`thresholds`, else nothing; returns how many convolutions were routed."""
    t = thresholds(device, amp)
    return use_matmul_convs(model, *t, fp32=not amp) if t else 0
