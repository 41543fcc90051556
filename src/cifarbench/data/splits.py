"""The in-memory dataset types and the seeded, stratified split logic.

A 32x32 dataset fits in memory, so every format is decoded once into a uint8 [N, C, H, W]
tensor; the engine moves it to the training device and augments it there in batches.

The validation split is carved out of the training split, never out of test: model
selection must not see the test images (the study this project rebuilds tuned on test).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cifarbench import log
from cifarbench.errors import CifarbenchError


@dataclass(eq=False)
class ImageSet:
    """One split: uint8 images [N, C, H, W] (contiguous, CPU) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        # Programmer errors, not user errors: the format loaders validate files before this.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageSet.images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise ValueError(f"ImageSet.labels must be [N={len(self.images)}], got {tuple(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64).contiguous()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> "ImageSet":
        """A new ImageSet holding the rows at ``index`` (a copy, in that order)."""
        return ImageSet(self.images.index_select(0, index), self.labels.index_select(0, index))

    def counts(self, num_classes: int) -> list[int]:
        """Images per class, as a list of length ``num_classes``."""
        return torch.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(eq=False)
class Splits:
    """A dataset ready for training: train / val / test ImageSets plus the class names."""

    name: str
    classes: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    _stats: tuple | None = field(default=None, init=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[2])

    @property
    def mean(self) -> tuple[float, ...]:
        return self._channel_stats()[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self._channel_stats()[1]

    def _channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # From the train split only (val and test must not leak into preprocessing).
        # A 256-bin histogram per channel gives exact float64 moments without ever
        # materialising a float copy of the images (45k CIFAR images would be 1.1 GB).
        if self._stats is None:
            if len(self.train) == 0:
                raise CifarbenchError(f"{self.name}: the training split is empty; cannot compute mean/std")
            values = torch.arange(256, dtype=torch.float64) / 255.0
            means, stds = [], []
            for c in range(self.channels):
                hist = torch.bincount(self.train.images[:, c].reshape(-1), minlength=256).to(torch.float64)
                n = hist.sum()
                m = (hist * values).sum() / n
                var = (hist * (values - m) ** 2).sum() / n
                means.append(float(m))
                stds.append(float(var.sqrt()))
            self._stats = (tuple(means), tuple(stds))
        return self._stats

    def subset(self, train: int | None = None, seed: int = 0) -> "Splits":
        """A stratified, seeded subsample of ``train`` training images; val and test are unchanged.

        ``None`` (or a size at least the training split's) returns ``self`` unchanged.
        """
        if train is None:
            return self
        if train <= 0:
            raise CifarbenchError(f"train subset must be a positive number of images, got {train}")
        if train >= len(self.train):
            if train > len(self.train):
                log.warn(f"train subset {train:,} >= the {len(self.train):,} training images of {self.name}; using all")
            return self
        keep, _ = stratified_split(self.train.labels, len(self.train) - train, seed)
        return Splits(self.name, list(self.classes), self.train.take(keep), self.val, self.test)


def _allocate(counts: torch.Tensor, k: int) -> torch.Tensor:
    """Split ``k`` picks over classes in proportion to ``counts`` (largest remainder; ties: lower class)."""
    n = int(counts.sum())
    exact = counts.to(torch.float64) * k / n
    alloc = exact.floor().to(torch.int64)
    short = k - int(alloc.sum())
    if short > 0:
        # Sorting -remainder with a stable sort breaks ties by class index, so it is deterministic.
        order = torch.sort(-(exact - alloc), stable=True).indices
        alloc[order[:short]] += 1
    return torch.minimum(alloc, counts)


def stratified_split(labels: torch.Tensor, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split of indices ``0..N-1`` into (keep, val), each sorted ascending.

    Every class gives ``val_size * n_class / N`` images (rounded by largest remainder, so the
    total is exactly ``val_size``); which ones is decided by ``seed``. No per-image Python.
    """
    n = len(labels)
    if val_size < 0:
        raise CifarbenchError(f"validation size must be >= 0, got {val_size}")
    if val_size >= n:
        raise CifarbenchError(f"validation size {val_size:,} must be smaller than the {n:,} training images")
    if val_size == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.int64)
    labels = labels.to(torch.int64)
    counts = torch.bincount(labels)
    take = _allocate(counts, val_size)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    # Group the shuffled indices by class (stable sort keeps the shuffle inside each class),
    # then the first take[c] of class c go to validation.
    by_class = perm[torch.sort(labels[perm], stable=True).indices]
    sorted_labels = labels[by_class]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]
    is_val = rank < take[sorted_labels]
    return by_class[~is_val].sort().values, by_class[is_val].sort().values


def make_splits(name: str, classes: list[str], train: ImageSet, test: ImageSet, val_size: int, seed: int = 0) -> Splits:
    """Carve a stratified, seeded validation split of ``val_size`` images out of ``train``."""
    if val_size >= len(train):
        raise CifarbenchError(
            f"{name}: validation size {val_size:,} must be smaller than the {len(train):,} training images")
    if val_size == 0:
        empty = ImageSet(train.images[:0].clone(), train.labels[:0].clone())
        return Splits(name, classes, train, empty, test)
    keep, val = stratified_split(train.labels, val_size, seed)
    return Splits(name, classes, train.take(keep), train.take(val), test)
