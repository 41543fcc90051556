"""Optimizers and learning-rate schedules named by the config.

Schedules other than `plateau` are per-step LambdaLR multipliers rebuilt from the config, so a checkpoint
only needs LambdaLR's step counter. `plateau` is torch's ReduceLROnPlateau on validation loss, stepped once
per epoch, as the study used it; its state (best, bad epochs, cooldown) goes into the checkpoint.
"""
from __future__ import annotations

import math

import torch

from cifarbench.config import TrainConfig


def param_groups(model: torch.nn.Module, cfg: TrainConfig):
    """The model's parameters, with norm weights and biases (every 1-d parameter) exempt from weight decay
    when cfg.wd_norm_bias is False. Why: decaying a BatchNorm scale or a bias only shrinks what the next layer
    must undo; timm exempts them by default."""
    if cfg.wd_norm_bias:
        return list(model.parameters())
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.opt == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)
    if cfg.opt in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.opt == "nesterov")
    if cfg.opt == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int):
    """Step -> multiplier of cfg.lr for the per-step schedules."""
    total = max(1, cfg.epochs * steps_per_epoch)
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
