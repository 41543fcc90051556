"""``folder:PATH`` datasets in the ImageFolder layout: PATH/train/<class>/*.png and PATH/test/<class>/*.

Classes are the sorted folder names under train/. Images are decoded once with PIL (as RGB,
all the same size) and cached as an uncompressed .npz in ``<data_dir>/cache/``, keyed by a hash
of every file's relative path, size and modification time: touching, adding or removing a file
rebuilds the cache, and the second load of an unchanged folder reads one file instead of
decoding thousands.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cifarbench import log
from cifarbench.cpus import usable_cpus
from cifarbench.data.cache import load_npz, save_npz
from cifarbench.data.splits import ImageSet
from cifarbench.errors import CifarbenchError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
CACHE_VERSION = 1  # bump when the cached arrays change meaning
KEYS = ("train_x", "train_y", "test_x", "test_y")


def _scan(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Classes and, per split, the (path, class index) of every image, in a deterministic order."""
    if not root.is_dir():
        raise CifarbenchError(f"folder dataset {root} does not exist or is not a folder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise CifarbenchError(f"folder dataset {root}: missing {train_dir} (layout: train/<class>/*, test/<class>/*)")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CifarbenchError(f"folder dataset {root}: no class folders in {train_dir}")
    items: dict[str, list[tuple[Path, int]]] = {}
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise CifarbenchError(f"folder dataset {root}: missing {split_dir} (layout: train/<class>/*, test/<class>/*)")
        items[split] = []
        for d in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if d.name not in classes:
                raise CifarbenchError(f"{d}: class {d.name!r} is not among the train/ classes")
            files = sorted(f for f in d.iterdir() if f.suffix.lower() in EXTENSIONS and not f.name.startswith("."))
            items[split] += [(f, classes.index(d.name)) for f in files]
        if not items[split]:
            raise CifarbenchError(f"folder dataset {root}: no images under {split_dir}")
    return classes, items


def _cache_key(root: Path, items: dict[str, list[tuple[Path, int]]]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}\n".encode())
    for split in ("train", "test"):
        for path, label in items[split]:
            st = path.stat()
            h.update(f"{split}\t{path.relative_to(root)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise CifarbenchError(f"{path}: cannot decode image ({e})") from None


def _decode_all(items: list[tuple[Path, int]], threads: int) -> tuple[np.ndarray, np.ndarray]:
    # PIL releases the GIL while decoding, so threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        arrays = list(pool.map(_decode, [p for p, _ in items]))
    first_shape = arrays[0].shape
    for (path, _), a in zip(items, arrays):
        if a.shape != first_shape:
            raise CifarbenchError(f"{path}: image is {a.shape[1]}x{a.shape[0]} but {items[0][0]} is "
                                  f"{first_shape[1]}x{first_shape[0]}; all images must have the same size")
    x = np.stack(arrays).transpose(0, 3, 1, 2).copy()  # NHWC -> contiguous NCHW
    return x, np.array([label for _, label in items], dtype=np.int64)


def _check_sizes(train: np.ndarray, test: np.ndarray, root: Path) -> None:
    if train.shape[1:] != test.shape[1:]:
        raise CifarbenchError(f"folder dataset {root}: test images are {test.shape[3]}x{test.shape[2]}, "
                              f"train images {train.shape[3]}x{train.shape[2]}; all must have the same size")


def load_folder(root: str | os.PathLike, data_dir: Path | None = None, threads: int | None = None
                ) -> tuple[list[str], ImageSet, ImageSet]:
    """Load an ImageFolder-layout dataset; returns classes, train, test. Caches under ``data_dir/cache``."""
    root = Path(root).expanduser().resolve()
    classes, items = _scan(root)
    cache = None
    if data_dir is not None:
        cache = Path(data_dir) / "cache" / f"folder-{root.name}-{_cache_key(root, items)}.npz"
        arrays = load_npz(cache, KEYS)
        if arrays is not None:
            log.info(f"{root}: loaded decoded images from {cache}")
            return classes, *_imagesets(arrays)
    threads = threads or min(8, usable_cpus())  # decoding threads: the cores this process may use
    log.info(f"{root}: decoding {len(items['train']) + len(items['test']):,} images")
    train_x, train_y = _decode_all(items["train"], threads)
    test_x, test_y = _decode_all(items["test"], threads)
    _check_sizes(train_x, test_x, root)
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    if cache is not None:
        save_npz(cache, **arrays)
    return classes, *_imagesets(arrays)


def _imagesets(arrays: dict[str, np.ndarray]) -> tuple[ImageSet, ImageSet]:
    return tuple(ImageSet(torch.from_numpy(arrays[f"{s}_x"]), torch.from_numpy(arrays[f"{s}_y"]))
                 for s in ("train", "test"))
