"""Optimizers and learning-rate schedules named by the config.

Schedules other than `plateau` are per-step LambdaLR multipliers rebuilt from the config, so a checkpoint
only needs LambdaLR's step counter. `plateau` is torch's ReduceLROnPlateau on validation loss, stepped once
per epoch, as the study used it; its state (best, bad epochs, cooldown) goes into the checkpoint.
"""
from __future__ import annotations

import math

import torch

from cifarbench.config import TrainConfig, run_steps


def param_groups(model: torch.nn.Module, cfg: TrainConfig):
    """The model's parameters, with norm weights and biases (every 1-d parameter) exempt from weight decay
    when cfg.wd_norm_bias is False. Why: decaying a BatchNorm scale or a bias only shrinks what the next layer
    must undo; timm exempts them by default."""
    if cfg.wd_norm_bias:
        return list(model.parameters())
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


FUSED_DEVICES = ("cpu", "cuda")


def implementation(params) -> dict:
    """torch's fused kernel (one call per step for all tensors) where it has one for every parameter's device.

    Why: on the CPU torch's default is a Python loop over the parameters, a few small kernels each. For
    ResNet18's 11 M parameters on one core the fused Nesterov step takes 5 ms against the loop's 22 ms, so
    whole batch-64 training steps gain 1-3 % on this project's 2-core CPU (ResNet18, MobileNetV2, ShuffleNetV2);
    BENCHMARKS.md, "CPU levers", token `loop`. Elsewhere (MPS) torch's own default stands. The fused step
    computes the same update and may differ from the loop in the last bit of a float, so runs stay exactly
    reproducible and resumable, but are not bit-equal to runs made before it.
    """
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if tensors and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in tensors):
        return {"fused": True}
    return {}


def _flat(t: torch.Tensor) -> torch.Tensor:
    """The 1-d alias of a channels_last tensor: its memory in memory order."""
    return t.permute(0, 2, 3, 1).view(-1)


class FlatFusedSGD(torch.optim.SGD):
    """torch's fused SGD, its own kernel called on 1-d aliases of the parameters, gradients and buffers.

    Why: the CPU kernel is elementwise over the memory of a parameter, its gradient and its momentum buffer,
    but first makes a ``.contiguous()`` copy of every gradient that is not contiguous in the default (NCHW)
    order, which it then does not use (aten/src/ATen/native/cpu/FusedSGDKernel.cpp, torch 2.x). Under
    channels_last every conv weight is such a tensor: on the AMD EPYC that copy took 20 ms of a 340 ms
    ResNet18 training step (bf16, batch 64, one thread). A channels_last tensor's permute(0, 2, 3, 1) is
    contiguous, so its flat alias has the memory and element order of the tensor itself; where a parameter,
    its gradient and its buffer share strides (autograd's gradient layout contract makes them), the kernel
    computes exactly what it computes on the 4-d tensors, bit for bit (tests/engine/test_optim.py). Anything
    else (a closure, a grad scaler, maximize, differentiable, a device other than the CPU) takes torch.optim.SGD's
    own path, and a tensor whose strides differ from its gradient's stays 4-d. The
    class adds no state: checkpoints are torch.optim.SGD's."""

    @torch.no_grad()
    def step(self, closure=None):
        if (closure is not None or getattr(self, "grad_scale", None) is not None
                or getattr(self, "found_inf", None) is not None
                or any(not g.get("fused") or g["maximize"] or g["differentiable"] for g in self.param_groups)):
            return super().step(closure)
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.device.type != "cpu" or p.grad.is_sparse for p in params):
                return super().step()
            groups.append((group, params))
        for group, params in groups:
            if not params:
                continue
            grads = [p.grad for p in params]
            momentum = group["momentum"]
            bufs = [self.state[p].get("momentum_buffer") for p in params] if momentum else []
            first = bool(momentum) and all(b is None for b in bufs)
            if first:  # as torch does: the kernel writes the first buffers from the gradients
                bufs = [torch.empty_like(g) for g in grads]
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
            for i, p in enumerate(params):  # fresh lists: the state keeps its 4-d buffers
                # only 4-d tensors not contiguous in NCHW order need an alias (most are contiguous: biases, norm
                # weights, 1x1 and depthwise convs); few per model, so the Python cost stays small
                if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
                    if grads[i].stride() == p.stride() and (not momentum or bufs[i].stride() == p.stride()):
                        params[i], grads[i] = _flat(p), _flat(grads[i])
                        if momentum:
                            bufs[i] = _flat(bufs[i])
            torch._fused_sgd_(params, grads, bufs, weight_decay=group["weight_decay"],
                              momentum=momentum, lr=group["lr"], dampening=group["dampening"],
                              nesterov=group["nesterov"], maximize=False, is_first_step=first)
        return None


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    impl = implementation(params)
    sgd = FlatFusedSGD if impl else torch.optim.SGD
    if cfg.opt == "sgd":
        return sgd(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay, **impl)
    if cfg.opt in ("momentum", "nesterov"):
        return sgd(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                   nesterov=cfg.opt == "nesterov", **impl)
    if cfg.opt == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **impl)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **impl)


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int):
    """Step -> multiplier of cfg.lr for the per-step schedules."""
    total = run_steps(cfg.epochs, steps_per_epoch)  # the loop's own count: a fractional epoch ends at zero too
    # one-cycle without an explicit warmup ramps up over the first 20% of steps (Smith's usual split)
    default_warm = 0.2 * total if cfg.sched == "onecycle" else 0.0
    warm = cfg.warmup_epochs * steps_per_epoch if cfg.warmup_epochs > 0 else default_warm

    def after_warmup(step: int) -> float:
        progress = (step - warm) / max(1.0, total - warm)
        if cfg.sched == "onecycle":  # linear up, then linear down to zero
            return max(0.0, 1.0 - progress)
        if cfg.sched == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if cfg.sched == "step":
            return cfg.factor ** (step // max(1, cfg.step_size * steps_per_epoch))
        return 1.0  # none

    def f(step: int) -> float:
        if step < warm:
            # start at 10% of the peak, not zero: a zero first step would be wasted
            return 0.1 + 0.9 * step / warm
        return after_warmup(step)

    return f


def build_scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    if cfg.sched == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.factor,
                                                          patience=cfg.patience)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, steps_per_epoch))


def steps_per_batch(cfg: TrainConfig) -> bool:
    """True when the scheduler steps after every batch (all but plateau)."""
    return cfg.sched != "plateau"
