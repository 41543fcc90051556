"""Weight EMA: an exponential moving average of a model's weights, evaluated instead of the raw weights.

Why: the raw weights at the end of a short, noisy run sit wherever the last steps left them; their average
over the last few hundred steps generalises better (airbench, timm's --model-ema). The average covers every
floating-point entry of the state dict, BatchNorm running statistics included (as timm's ModelEmaV2 does), so
the averaged model is evaluated as one consistent module; integer counters are copied.

Warm-up: the decay used at update t is min(decay, (1 + t) / (10 + t)), so the first updates are not stuck at
the random initialisation (0.18 at t=1, 0.5 at t=8, 0.9 at t=80, 0.99 at t=890).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


def warmed_decay(decay: float, updates: int) -> float:
    return min(decay, (1.0 + updates) / (10.0 + updates))


class ModelEma:
    """Keeps `module`, an averaged copy of `model`. Call `update()` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0
        self._bind(model)

    def _bind(self, model: nn.Module) -> None:
        # state_dict() tensors share storage with the live parameters and buffers: pairing them once makes an
        # update two foreach kernels, with no per-step dict building
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        self._float = [(e, m) for e, m in pairs if e.is_floating_point()]
        self._other = [(e, m) for e, m in pairs if not e.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = 1.0 - warmed_decay(self.decay, self.updates)
        if self._float:
            torch._foreach_lerp_([e for e, _ in self._float], [m for _, m in self._float], weight)
        for e, m in self._other:
            e.copy_(m)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])  # copies in place: the bound pairs stay valid
        self.updates = int(state["updates"])
