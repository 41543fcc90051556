"""Decoded-array caches (.npz, uncompressed) for datasets that are slow to decode or generate.

A cache only ever costs speed, never correctness: an unreadable cache is ignored (and rebuilt
by the caller), an unwritable folder is a warning, and writes are atomic so a crash cannot
leave a file that looks valid.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from cifarbench import log


def load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` from ``path``, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError) as e:
        log.warn(f"ignoring unreadable cache {path} ({e})")
        return None


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        log.warn(f"cannot write cache {path} ({e})")
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
