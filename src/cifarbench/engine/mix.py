"""Mixup and CutMix (timm's ``--mixup``, ``--cutmix``), batched on the training device.

Each training batch is mixed with itself reversed (timm's default pairing, no extra images): mixup blends the
two images, ``lam * x + (1 - lam) * x.flip(0)``; CutMix pastes a box of the reversed batch, its side
``sqrt(1 - lam)`` of the image's, centred at random and clipped at the border, and sets ``lam`` to the area
left. The loss is ``lam * loss(y) + (1 - lam) * loss(y reversed)``, label smoothing included, which is what
mixed soft targets give. With both on, each batch uses one of them, CutMix with ``switch_prob``.

Why every draw comes from (seed, epoch) and is made up front, as the loader's are: a run resumed in the middle
of an epoch replays the same mixes, with nothing in the checkpoint.
"""
from __future__ import annotations

import numpy as np
import torch


class Mix:
    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, switch_prob: float = 0.5, seed: int = 0):
        self.mixup, self.cutmix, self.switch_prob, self.seed = mixup, cutmix, switch_prob, seed
        self.draws: list[tuple[float, bool, float, float]] = []

    def set_epoch(self, epoch: int, steps: int) -> None:
        """Draw (lam, cutmix?, box centre row, column as fractions) for every step of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, 0x6D6978])  # its own stream, apart from the loader's
        use_cut = (rng.random(steps) < self.switch_prob) if self.mixup > 0 and self.cutmix > 0 else \
            np.full(steps, self.cutmix > 0)
        lam = np.where(use_cut, rng.beta(max(self.cutmix, 1e-3), max(self.cutmix, 1e-3), steps),
                       rng.beta(max(self.mixup, 1e-3), max(self.mixup, 1e-3), steps))
        centres = rng.random((steps, 2))
        self.draws = [(float(lam[i]), bool(use_cut[i]), float(centres[i, 0]), float(centres[i, 1])) for i in range(steps)]

    def __call__(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, float]:
        """The mixed batch (x is changed in place) and the weight of its own labels."""
        lam, cut, cr, cc = self.draws[step]
        if not cut:
            other = x.flip(0)  # a copy, taken before x changes in place
            return x.mul_(lam).add_(other, alpha=1.0 - lam), lam
        h, w = x.shape[-2:]
        side = np.sqrt(1.0 - lam)
        bh, bw = int(round(h * side)), int(round(w * side))
        r, c = int(cr * h), int(cc * w)
        r0, r1 = max(r - bh // 2, 0), min(r - bh // 2 + bh, h)
        c0, c1 = max(c - bw // 2, 0), min(c - bw // 2 + bw, w)
        x[..., r0:r1, c0:c1] = x[..., r0:r1, c0:c1].flip(0)  # flip copies: only the box, not the whole batch
        return x, 1.0 - (r1 - r0) * (c1 - c0) / (h * w)
