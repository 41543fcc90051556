"""DeviceLoader: a whole split held as one uint8 tensor on the training device, augmented in batches.

Why not a DataLoader: for 32×32 images the per-image Python and PIL work of a DataLoader costs as much as
the model step on a small CPU. Here an epoch is one permutation plus a few batched tensor ops.

Why all of an epoch's randomness is drawn up front (permutation, crop offsets, flips, for every image):
- a run resumed in the middle of an epoch replays exactly the same batches (exact resume);
- under DDP, rank r takes the r-th slice of each global batch, so N processes with batch B see exactly the
  images and augmentations that one process with batch N·B sees.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from cifarbench.config import run_steps

PAD = 4  # random-crop padding, the standard CIFAR recipe (the default of --crop-pad)
PROG_RES_STEP = 4  # progressive resizing moves in steps of this many px: few distinct shapes, few kernel set-ups


def prog_res_schedule(start: int, full: int, end: float, epochs: float, steps: int) -> Callable[[int, int], int]:
    """Progressive resizing (``--prog-res``): the training resolution of step ``step`` of epoch ``epoch``.

    It grows linearly with the fraction of the run's training steps done, from ``start`` px at the first step to
    ``full`` px at fraction ``end`` (then stays there), rounded down to a multiple of PROG_RES_STEP but never
    under ``start``. A pure function of (epoch, step): a resumed run replays the same sizes, and every DDP rank
    trains its slice of a global batch at the same size. Why: a convolution's cost grows with the pixels, so
    the early steps, which learn coarse features, run 1.2x to 2x faster at 16-24 px on a CPU (BENCHMARKS.md,
    "Progressive resizing"); the last part of the run trains at the size the model is evaluated at."""
    total = run_steps(epochs, steps)

    def at(epoch: int, step: int) -> int:
        t = (epoch * steps + step) / total
        if t >= end:
            return full
        r = start + (full - start) * t / end
        return max(start, int(r) // PROG_RES_STEP * PROG_RES_STEP)
    return at


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that depends only on (seed, epoch): nothing to save in checkpoints."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


class DeviceLoader:
    """Iterate (x, y) batches of a split: x float (normalised, optionally resized), y int64, both on `device`.

    `train=True` shuffles, augments and drops the last incomplete global batch; `train=False` walks the
    split in order. `res_schedule` (training only) gives each step's resolution: progressive resizing.
    `rank`/`world_size` shard every batch for DDP. `iterate(start_step, stop_step)` resumes mid-epoch and ends a
    fractional epoch's last pass early; the pass's draws are the whole pass's either way.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool,
                 device: torch.device | str, mean, std, resolution: int | None = None,
                 augment: str = "crop-flip", seed: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, cutout: int = 0, crop_pad: int = PAD,
                 res_schedule: Callable[[int, int], int] | None = None, flip: str = "random"):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"DeviceLoader wants uint8 N×C×H×W images, got {images.dtype} {tuple(images.shape)}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train = batch_size, train
        self.resolution, self.augment, self.seed = resolution, augment, seed
        self.rank, self.world_size = rank, world_size
        self.channels_last, self.cutout, self.pad = channels_last, cutout, crop_pad
        self.flip = flip  # "random" | "alternate" (--flip)
        self.res_schedule = res_schedule if train else None  # (epoch, step) -> px: progressive resizing
        c = images.shape[1]
        mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        # x/255 - mean) / std == x * scale + shift: one fused multiply-add per pixel
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std
        self.fill = (mean * 255).round().to(torch.uint8)  # cutout paints the mean colour: 0 after normalising
        self.epoch = 0

    def __len__(self) -> int:
        n, step = len(self.labels), self.batch_size * self.world_size
        return n // step if self.train else -(-n // step)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self):
        """Permutation and augmentation draws for every image of this epoch (CPU generator: reproducible)."""
        n = len(self.labels)
        g = epoch_generator(self.seed, self.epoch)
        perm = torch.randperm(n, generator=g)
        flip = torch.rand(n, generator=g) < 0.5  # drawn in both modes: the crops stay the same draws
        if self.flip == "alternate" and self.epoch:
            # the first epoch's draws, inverted in every odd epoch: over any two epochs each image is seen once
            # mirrored and once not, where random flips show half of the images the same way twice
            g0 = epoch_generator(self.seed, 0)
            torch.randperm(n, generator=g0)
            flip = (torch.rand(n, generator=g0) < 0.5) ^ bool(self.epoch % 2)
        offs = torch.randint(0, 2 * self.pad + 1, (2, n), generator=g)
        # drawn only when on, and after the others: runs without cutout keep their exact random stream
        centres = None
        if self.cutout:
            h, w = self.images.shape[-2:]
            centres = torch.stack([torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)])
        return (perm.to(self.device), flip.to(self.device), offs.to(self.device),
                centres.to(self.device) if centres is not None else None)

    def __iter__(self):
        return self.iterate()

    def iterate(self, start_step: int = 0, stop_step: int | None = None):
        n, b, w = len(self.labels), self.batch_size, self.world_size
        if self.train:
            perm, flip, offs, centres = self._plan()
        stop = len(self) if stop_step is None else min(stop_step, len(self))
        for step in range(start_step, stop):
            lo = step * b * w + self.rank * b  # this rank's slice of the global batch
            if self.train:
                idx = perm[lo:lo + b]
                x = self._augment(self.images[idx], flip[idx], offs[:, idx])
                if centres is not None:
                    x = self._cutout(x, centres[:, idx])
            else:
                # an uneven last global batch may leave this rank nothing: it gets an empty batch
                idx = torch.arange(min(lo, n), min(lo + b, n), device=self.device)
                x = self.images[idx]
            res = self.res_schedule(self.epoch, step) if self.res_schedule is not None else self.resolution
            yield self._to_float(x, res), self.labels[idx]

    def _augment(self, x: torch.Tensor, flip: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        """Random crop with zero padding (self.pad px each side) and horizontal flip, batched, on uint8."""
        if self.augment == "none":
            return x
        if self.augment == "crop-flip":
            nb, c, h, wd = x.shape
            padded = F.pad(x, (self.pad,) * 4)
            rows = (offs[0].view(nb, 1) + torch.arange(h, device=x.device)).view(nb, 1, h, 1)
            cols = (offs[1].view(nb, 1) + torch.arange(wd, device=x.device)).view(nb, 1, 1, wd)
            bidx = torch.arange(nb, device=x.device).view(nb, 1, 1, 1)
            cidx = torch.arange(c, device=x.device).view(1, c, 1, 1)
            x = padded[bidx, cidx, rows, cols]
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

    def _cutout(self, x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Cutout (DeVries & Taylor 2017), batched: a cutout x cutout square around each image's centre draw,
        clipped at the border, set to the mean colour."""
        h, w = x.shape[-2:]
        lo = centres - self.cutout // 2  # [2, nb]: top row and left column of each square
        r = torch.arange(h, device=x.device).view(1, h)
        c = torch.arange(w, device=x.device).view(1, w)
        rows = (r >= lo[0].view(-1, 1)) & (r < lo[0].view(-1, 1) + self.cutout)  # [nb, h]
        cols = (c >= lo[1].view(-1, 1)) & (c < lo[1].view(-1, 1) + self.cutout)  # [nb, w]
        mask = (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1)  # [nb, 1, h, w]
        return torch.where(mask, self.fill, x)

    def _to_float(self, x: torch.Tensor, res: int | None = None) -> torch.Tensor:
        x = x.float().mul_(self.scale).add_(self.shift)
        if res is not None and res != x.shape[-1] and len(x):
            # antialias when shrinking (progressive resizing, --resolution below the data's size): a plain
            # bilinear sample would skip pixels instead of averaging them
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=res < x.shape[-1])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
