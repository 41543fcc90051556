"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

The batch files are Python-2 pickles (dict with bytes keys; ``data`` a uint8 array of shape
(N, 3072) holding the R, G and B planes of each 32x32 image; ``labels`` or ``fine_labels``).
They are unpickled with a restricted unpickler that only builds numpy arrays, so a hostile
file cannot run code, and every file is validated with a one-line error naming it.

Counts: the loader accepts any consistent set of batch files (tests use tiny fakes with a few
images per batch). Files that are not byte-identical to the official ones (MD5, from
torchvision's ``CIFAR10.train_list`` / ``test_list`` / ``meta``) get one warning per process
and dataset, which also says when the image counts differ from the official 50,000 / 10,000.
"""
from __future__ import annotations

import codecs
import io
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cifarbench import log
from cifarbench.data.download import download, md5_bytes, md5_file, safe_extract
from cifarbench.data.splits import ImageSet
from cifarbench.errors import CifarbenchError

try:  # numpy >= 2 moved it; the pickles name numpy.core.multiarray
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct


@dataclass(frozen=True)
class CifarSpec:
    title: str  # "CIFAR-10", for messages
    folder: str  # the folder inside the archive
    archive: str
    archive_md5: str
    train_files: tuple[tuple[str, str], ...]  # (file name, official MD5)
    test_files: tuple[tuple[str, str], ...]
    meta_file: tuple[str, str]
    label_key: bytes
    names_key: bytes
    num_classes: int
    official_counts: tuple[int, int]  # train, test


SPECS = {
    "cifar10": CifarSpec(
        "CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        (("data_batch_1", "c99cafc152244af753f735de768cd75f"),
         ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
         ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
         ("data_batch_4", "634d18415352ddfa80567beed471001a"),
         ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
        (("test_batch", "40351d587109b95175f43aff81a1287e"),),
        ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        b"labels", b"label_names", 10, (50000, 10000)),
    "cifar100": CifarSpec(
        "CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        (("train", "16019d7e3df5f24257cddd939b257f8d"),),
        (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        ("meta", "7973b15100ade9c7d40fb424638fde48"),
        b"fine_labels", b"fine_label_names", 100, (50000, 10000)),
}

# Where the archives come from; tests point these at file:// or unreachable addresses.
URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}

_warned: set[str] = set()  # datasets already warned about in this process


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warn(msg)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else (pickle can otherwise run code)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol 2 as _codecs.encode(str, "latin1"); harmless, and
        # it lets people (and our tests) write CIFAR-style files with pickle.dumps(protocol=2).
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"disallowed global {module}.{name}") from None


def _unpickle(path: Path, blob: bytes) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # pickle raises many types on bad input: EOFError, UnpicklingError, ValueError, ...
        if isinstance(e, EOFError) or "truncated" in str(e):
            raise CifarbenchError(f"{path}: truncated pickle ({len(blob):,} bytes; {e or 'ran out of input'})") from None
        raise CifarbenchError(f"{path}: not a CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CifarbenchError(f"{path}: not a CIFAR pickle (holds a {type(obj).__name__}, expected a dict)")
    # Python 2 wrote the keys as byte strings; accept files re-saved by Python 3 with str keys too.
    return {k.encode("latin1") if isinstance(k, str) else k: v for k, v in obj.items()}


def _read_batch(path: Path, blob: bytes, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path, blob)
    for key in (b"data", spec.label_key):
        if key not in d:
            raise CifarbenchError(f"{path}: missing key {key.decode()!r} (has {', '.join(repr(k) for k in d)})")
    data = d[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CifarbenchError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    try:
        labels = np.asarray(d[spec.label_key], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise CifarbenchError(f"{path}: {spec.label_key.decode()!r} is not a list of integers ({e})") from None
    if labels.shape != (len(data),):
        raise CifarbenchError(f"{path}: {len(data):,} images but {spec.label_key.decode()!r} has shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        bad = labels[(labels < 0) | (labels >= spec.num_classes)][0]
        raise CifarbenchError(f"{path}: label {bad} out of range 0..{spec.num_classes - 1}")
    return data, labels


def _read_classes(path: Path, blob: bytes, spec: CifarSpec) -> list[str]:
    d = _unpickle(path, blob)
    names = d.get(spec.names_key)
    if not isinstance(names, list) or len(names) != spec.num_classes:
        n = len(names) if isinstance(names, list) else "no"
        raise CifarbenchError(f"{path}: expected {spec.num_classes} names under {spec.names_key.decode()!r}, found {n}")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CifarbenchError(f"{path}: cannot read ({e.strerror or e})") from None


def ensure_folder(name: str, data_dir: Path, download_ok: bool = True) -> Path:
    """Return ``data_dir/<folder>``, extracting a placed archive or downloading it when absent."""
    spec = SPECS[name]
    folder = data_dir / spec.folder
    if folder.is_dir():
        return folder
    archive = data_dir / spec.archive
    place = f"it (or the extracted {spec.folder}/ folder)"
    if archive.exists():
        if md5_file(archive) != spec.archive_md5:
            # A user-placed archive (e.g. the dev rebuild) is used anyway: the user chose it.
            _warn_once(name, f"{archive} differs from the official {spec.title} archive (MD5); "
                             "accuracies may not match published numbers")
    elif download_ok:
        log.info(f"downloading {spec.title} to {data_dir}")
        download(URLS[name], archive, md5=spec.archive_md5, place_hint=place)
    else:
        raise CifarbenchError(f"{spec.title} not found and download disabled; place {spec.archive} "
                              f"(or the extracted {spec.folder}/ folder) in {data_dir}")
    log.info(f"extracting {archive}")
    safe_extract(archive, data_dir)
    if not folder.is_dir():
        raise CifarbenchError(f"{archive}: has no {spec.folder}/ folder")
    return folder


def load_cifar(name: str, data_dir: Path, download: bool = True) -> tuple[list[str], ImageSet, ImageSet]:
    """Read and validate a CIFAR folder (extracting or downloading it if needed); returns classes, train, test."""
    spec = SPECS[name]
    folder = ensure_folder(name, Path(data_dir), download)
    files = [spec.meta_file, *spec.train_files, *spec.test_files]
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing:
        raise CifarbenchError(f"{folder}: missing {spec.title} file(s) {', '.join(missing)}")

    # Each file is read once, then hashed and unpickled from memory. hashlib releases the GIL,
    # so the MD5s run on a second core while this thread unpickles (about 0.4 s saved of ~1 s).
    blobs = {f: _read_bytes(folder / f) for f, _ in files}
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashes = pool.map(lambda f: md5_bytes(blobs[f]), [f for f, _ in files])
        classes = _read_classes(folder / spec.meta_file[0], blobs[spec.meta_file[0]], spec)
        parts = {}
        for split, group in (("train", spec.train_files), ("test", spec.test_files)):
            arrays = [_read_batch(folder / f, blobs[f], spec) for f, _ in group]
            data = np.concatenate([a for a, _ in arrays])
            labels = np.concatenate([b for _, b in arrays])
            images = torch.from_numpy(data).view(len(data), 3, 32, 32)  # rows are R, G, B planes: already NCHW
            parts[split] = ImageSet(images, torch.from_numpy(labels))
        differs = [f for (f, official), h in zip(files, hashes) if h != official]

    counts = (len(parts["train"]), len(parts["test"]))
    if differs:
        extra = "" if counts == spec.official_counts else (
            f", {counts[0]:,} train / {counts[1]:,} test images instead of "
            f"{spec.official_counts[0]:,} / {spec.official_counts[1]:,}")
        _warn_once(name, f"{folder} files differ from the official {spec.title} files (MD5{extra}); "
                         "accuracies may not match published numbers")
    return classes, parts["train"], parts["test"]
