"""Lookahead (Zhang et al. 2019; timm's ``--opt lookahead_*``): slow weights that follow the optimizer's.

Every ``k`` optimizer steps the slow weights move a fraction ``alpha`` of the way to the fast (trained) weights,
and the fast weights restart from there: slow += alpha * (fast - slow); fast = slow. Why it might pay in short
runs: the inner optimizer can take large, noisy steps while the weights that carry on average over them.
timm's defaults (alpha 0.5, k 6). Like timm's ``sync_lookahead``, every epoch ends with one such update on all
parameters, so the weights evaluated, saved and selected are the synced ones.

Only parameters take part; BatchNorm's running statistics are the fast model's, as in timm. The slow weights
and the step count go into every checkpoint, so a run resumed in the middle of an epoch continues exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class Lookahead:
    """Call ``step()`` after each optimizer step and ``sync()`` at the end of each epoch."""

    def __init__(self, model: nn.Module, alpha: float = 0.5, k: int = 6):
        self.alpha, self.k, self.steps = alpha, k, 0
        # detached views share the parameters' storage: bound once, an update is two foreach kernels (as ModelEma)
        self.fast = [p.detach() for p in model.parameters() if p.requires_grad]
        self.slow = [p.clone() for p in self.fast]

    @torch.no_grad()
    def sync(self) -> None:
        torch._foreach_lerp_(self.slow, self.fast, self.alpha)
        torch._foreach_copy_(self.fast, self.slow)

    def step(self) -> None:
        self.steps += 1
        if self.steps % self.k == 0:
            self.sync()

    def state_dict(self) -> dict:
        return {"slow": [t.clone() for t in self.slow], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if len(state["slow"]) != len(self.slow):
            raise ValueError(f"lookahead state holds {len(state['slow'])} tensors, the model {len(self.slow)}")
        with torch.no_grad():
            torch._foreach_copy_(self.slow, [t.to(s.device, s.dtype) for t, s in zip(state["slow"], self.slow)])
        self.steps = int(state["steps"])
