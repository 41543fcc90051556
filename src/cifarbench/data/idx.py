"""MNIST and Fashion-MNIST from their idx files (``train-images-idx3-ubyte[.gz]`` and friends).

Looked for in the data dir (``<data_dir>/fashion-mnist/``, or torchvision's
``<data_dir>/FashionMNIST/raw/``), then in the system folders Debian's packages install
(``dataset-fashion-mnist`` puts the gzipped files in ``/usr/share/datasets/fashion-mnist``).
Nothing is downloaded: the files are small and packaged, and this keeps offline runs honest.

idx format: a 4-byte magic (two zero bytes, a type code, 0x08 = unsigned byte, and the number of
dimensions), one big-endian uint32 per dimension, then the raw bytes.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from cifarbench.data.splits import ImageSet
from cifarbench.errors import CifarbenchError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
# Sub-folders of the data dir, in the order they are tried (ours, then torchvision's layout).
SUBDIRS = {
    "mnist": ["mnist", "MNIST/raw"],
    "fashion-mnist": ["fashion-mnist", "FashionMNIST/raw", "fashion_mnist"],
}
# System folders tried after the data dir; a module-level dict so tests can point it elsewhere.
SYSTEM_DIRS = {
    "mnist": [Path("/usr/share/datasets/mnist")],
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_files(name: str, data_dir: Path) -> dict[str, Path]:
    """The four idx files from the first folder that holds all of them, else a CifarbenchError."""
    folders = [data_dir / s for s in SUBDIRS[name]] + list(SYSTEM_DIRS[name])
    for folder in folders:
        found = {key: _find(folder, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found
        if any(found.values()):  # a half-filled folder is a mistake worth naming
            missing = [FILES[k] + "[.gz]" for k, p in found.items() if p is None]
            raise CifarbenchError(f"{folder}: missing {TITLES[name]} file(s) {', '.join(missing)}")
    names = ", ".join(s + "[.gz]" for s in FILES.values())
    raise CifarbenchError(f"{TITLES[name]} not found: place {names} in {folders[0]} "
                          f"(also looked in {', '.join(str(f) for f in folders[1:])})")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file with ``ndim`` dimensions, validating magic and length."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise CifarbenchError(f"{path}: cannot read ({e})") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise CifarbenchError(f"{path}: bad idx magic {raw[:4].hex() or '(empty)'}, "
                              f"expected 000008{ndim:02x} (unsigned bytes, {ndim} dimension(s))")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise CifarbenchError(f"{path}: {len(raw):,} bytes, expected {expected:,} for dimensions {dims} "
                              "(truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_split(name: str, images_path: Path, labels_path: Path) -> ImageSet:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise CifarbenchError(f"{labels_path}: {len(labels):,} labels for the {len(images):,} images of {images_path}")
    if images.shape[1:] != (28, 28):
        raise CifarbenchError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    n_classes = len(CLASSES[name])
    if len(labels) and labels.max() >= n_classes:
        raise CifarbenchError(f"{labels_path}: label {int(labels.max())} out of range 0..{n_classes - 1}")
    # np.frombuffer views are read-only; copy into tensors we own.
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    return ImageSet(x, torch.from_numpy(labels.astype(np.int64)))


def load_idx(name: str, data_dir: Path) -> tuple[list[str], ImageSet, ImageSet]:
    """Load MNIST or Fashion-MNIST; returns classes, train, test (uint8 [N, 1, 28, 28])."""
    f = find_files(name, Path(data_dir))
    train = _read_split(name, f["train_images"], f["train_labels"])
    test = _read_split(name, f["test_images"], f["test_labels"])
    return list(CLASSES[name]), train, test
