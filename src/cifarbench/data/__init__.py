"""Datasets: every format becomes a ``Splits`` of uint8 [N, C, H, W] tensors held in memory.

    from cifarbench.data import load_dataset
    splits = load_dataset("cifar10", data_dir="~/data")   # 45,000 / 5,000 / 10,000
    splits.train.images, splits.train.labels, splits.classes, splits.mean, splits.std

Names: ``cifar10``, ``cifar100`` (official python-version archives, downloaded when absent),
``mnist``, ``fashion-mnist`` (idx files), ``shapes`` (generated, offline) and ``folder:PATH``
(ImageFolder layout). The validation split is carved from train, stratified and seeded.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from cifarbench.data.splits import ImageSet, Splits, make_splits
from cifarbench.errors import CifarbenchError

__all__ = ["ImageSet", "Splits", "load_dataset", "list_datasets", "resolve_data_dir", "default_val_size"]

NAMES = ["cifar10", "cifar100", "fashion-mnist", "mnist", "shapes", "folder:PATH"]
# Spellings people use for the same datasets (torchvision class names, hyphens, underscores).
ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fashion_mnist": "fashion-mnist",
           "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}
DEFAULT_VAL = {"cifar10": 5000, "cifar100": 5000, "fashion-mnist": 5000, "mnist": 5000, "shapes": 2000}
FOLDER_VAL_FRACTION = 0.1


def list_datasets() -> list[str]:
    return list(NAMES)


def resolve_data_dir(data_dir=None) -> Path:
    """``data_dir`` if given, else $CIFARBENCH_DATA, else $XDG_CACHE_HOME/cifarbench (~/.cache/cifarbench)."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("CIFARBENCH_DATA"):
        return Path(os.environ["CIFARBENCH_DATA"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "cifarbench"


def canonical_name(name: str) -> str:
    """The canonical dataset name (``folder:PATH`` keeps its path), or a CifarbenchError listing valid names."""
    if name.startswith("folder:"):
        if not name[len("folder:"):]:
            raise CifarbenchError("dataset 'folder:' needs a path, e.g. folder:~/images")
        return name
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in NAMES:
        return key
    ranked = sorted(NAMES, key=lambda n: -difflib.SequenceMatcher(None, key, n).ratio())
    raise CifarbenchError(f"unknown dataset {name!r}; valid names: {', '.join(ranked)}")


def default_val_size(name: str, n_train: int) -> int:
    """5,000 for the CIFARs and MNISTs, 2,000 for shapes, 10% of train for folder datasets."""
    return DEFAULT_VAL.get(canonical_name(name).split(":")[0], round(FOLDER_VAL_FRACTION * n_train))


def load_dataset(name: str, data_dir=None, val_size: int | None = None, seed: int = 0,
                 download: bool = True) -> Splits:
    """Load ``name`` and split off a stratified validation set of ``val_size`` images (seeded by ``seed``).

    ``val_size=None`` uses the dataset's default, ``0`` gives an empty validation split. The test
    split is returned as stored; the split logic never touches it.
    """
    name = canonical_name(name)
    root = resolve_data_dir(data_dir)
    if name in ("cifar10", "cifar100"):
        from cifarbench.data.cifar import load_cifar

        classes, train, test = load_cifar(name, root, download=download)
    elif name in ("mnist", "fashion-mnist"):
        from cifarbench.data.idx import load_idx

        classes, train, test = load_idx(name, root)
    elif name == "shapes":
        from cifarbench.data.shapes import load_shapes

        classes, train, test = load_shapes()
    else:
        from cifarbench.data.folder import load_folder

        classes, train, test = load_folder(name[len("folder:"):], data_dir=root)
    if val_size is None:
        val_size = default_val_size(name, len(train))
    return make_splits(name, classes, train, test, val_size, seed)
