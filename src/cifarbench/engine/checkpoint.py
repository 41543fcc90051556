"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so the safe unpickler can load it:
model, optimizer and scheduler state, epoch and step, best metric, history, RNG states and the config.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from cifarbench.errors import CifarbenchError


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj, path: str | Path) -> None:
    """Temp file in the same folder, fsync, rename: a crash or a full disk never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CifarbenchError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous checkpoint is intact") from None
    fsync_dir(path.parent)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CifarbenchError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a checkpoint, unsafe pickle: all the same to the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CifarbenchError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CifarbenchError(f"{path}: not a cifarbench checkpoint (no 'model' entry)")
    return ckpt


def eval_state_dict(ckpt: dict) -> dict:
    """The weights to evaluate, predict with and export: the EMA average when the run kept one."""
    return ckpt.get("model_ema") or ckpt["model"]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
