"""`cifarbench predict`: classify image files, folders or a dataset split with a trained run.

Preprocessing is exactly the run's own, read from its results.json (``preprocess``: channels, native
image size, network resolution, and the train-split mean and std saved at training time, never
recomputed). An image file goes through one stated rule before that:

1. decode with Pillow (``load()`` at once, so a truncated file fails here, naming the file);
2. convert to the run's channels: grey -> RGB replicates the grey value, RGB -> grey is Pillow's
   ITU-R 601-2 luma; an alpha channel is dropped (not composited);
3. resize to ``image_size`` x ``image_size`` with Pillow's bilinear filter when the size differs:
   no crop, the aspect ratio is not kept;
4. then the run's own evaluation path: ``DeviceLoader(train=False)`` normalises on the device and
   resizes to ``resolution`` with the same bilinear interpolation as in training.

Every conversion and resize is written in the row's ``note``. The model runs in fp32, in batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from cifarbench import log
from cifarbench.errors import CifarbenchError



@dataclass
class Run:
    """A trained run, ready to predict with: the model (eval mode) and how its inputs were made."""
    dir: Path
    cfg: object  # TrainConfig
    classes: list[str]
    preprocess: dict  # channels, image_size, resolution, mean, std
    model: nn.Module
    checkpoint: Path


def load_run(run_dir, device: str | torch.device = "cpu") -> Run:
    """Read a run folder: config.json, results.json's classes and preprocess, and the eval weights of
    best.pt (else last.pt) -- the EMA average when the run kept one."""
    from cifarbench.config import TrainConfig, read_json
    from cifarbench.engine.trainer import load_eval_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CifarbenchError(f"{run_dir}: not a run folder")
    results = read_json(run_dir / "results.json")
    pre = results.get("preprocess")
    if not pre:
        raise CifarbenchError(f"{run_dir / 'results.json'} has no 'preprocess' entry: the run was written before "
                              f"cifarbench could predict; retrain it")
    if pre["channels"] not in (1, 3):
        raise CifarbenchError(f"{run_dir / 'results.json'}: {pre['channels']} input channels; only 1 and 3 are supported")
    cfg = TrainConfig.from_dict(read_json(run_dir / "config.json"), source=str(run_dir / "config.json"))
    classes = list(results["classes"])
    model, ckpt_path = load_eval_model(run_dir, cfg, len(classes), pre["channels"])
    if results.get("status") not in ("finished", None):
        log.warn(f"{run_dir}: the run is {results['status']}; using {ckpt_path.name}")
    model.to(device).eval()
    return Run(run_dir, cfg, classes, pre, model, ckpt_path)


# ---------------------------------------------------------------- inputs
def find_images(inputs) -> tuple[list[Path], list[str]]:
    """Files as given, folders searched recursively (sorted); plus an error line per input that yields nothing.

    In a folder only files with an extension Pillow reads are taken (a README beside the images is not an
    error), hidden ones excepted; a file named explicitly is always tried.
    """
    from PIL import Image

    extensions = set(Image.registered_extensions())
    files, errors = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not found:
                errors.append(f"{item}: no image files in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            errors.append(f"{item}: no such file or folder")
    return files, errors


def read_image(path, channels: int, size: int) -> tuple[torch.Tensor, str]:
    """One image file as uint8 C×size×size, and a note saying what was converted (empty if nothing)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file raises here
            if img.mode in ("P", "PA"):  # palette: look through it to the colours
                img = img.convert("RGBA")
            notes = []
            grey = Image.getmodebase(img.mode) == "L"
            if "A" in img.getbands() or "a" in img.getbands():
                notes.append("alpha dropped")
            if channels == 3 and grey:
                notes.append("grey -> RGB")
            elif channels == 1 and not grey:
                notes.append("RGB -> grey")
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (size, size):
                notes.append(f"resized {img.width}x{img.height} -> {size}x{size}")
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise CifarbenchError(f"{path}: not an image (Pillow cannot identify it)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # truncated, corrupt, huge
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CifarbenchError(f"{path}: cannot read image ({why})") from None
    x = torch.from_numpy(a.copy()).view(size, size, -1).permute(2, 0, 1).contiguous()
    return x, "; ".join(notes)


# ---------------------------------------------------------------- the model
@torch.no_grad()
def probabilities(run: Run, images: torch.Tensor, device, batch_size: int = 256) -> torch.Tensor:
    """Softmax over the classes for uint8 N×C×H×W images at the run's image_size: N×classes on the CPU.

    The batches come from DeviceLoader(train=False), the loader the run was evaluated with, so the
    normalisation and the resize to the network resolution are the training code's own.
    """
    from cifarbench.engine.loader import DeviceLoader

    pre = run.preprocess
    loader = DeviceLoader(images, torch.zeros(len(images), dtype=torch.long), batch_size, False, device,
                          pre["mean"], pre["std"], pre["resolution"])
    # fp32 forward; softmax in float64 so that probabilities of all classes sum to 1 within 1e-15
    out = [run.model(x).double().softmax(1).cpu() for x, _ in loader]
    return torch.cat(out) if out else torch.zeros(0, len(run.classes), dtype=torch.float64)


def predict(run_dir, inputs=(), top_k: int = 3, device: str = "auto", batch_size: int = 256,
            dataset: str | None = None, split: str = "test", data_dir=None) -> dict:
    """Classify image files and folders (``inputs``) and/or a dataset split with a trained run.

    Returns ``{"rows": [...], "errors": [...]}``: one row per image (``path``, ``label`` for dataset
    images, ``class_1``, ``prob_1``, ... ``class_k``, ``prob_k``, ``note``) and one line per input that
    could not be read; the others are still predicted.
    """
    from cifarbench.engine.env import resolve_device

    if not inputs and dataset is None:
        raise CifarbenchError("predict: give image files, folders or --dataset NAME")
    if batch_size < 1:
        raise CifarbenchError(f"--batch-size {batch_size}: must be at least 1")
    if top_k < 1:
        raise CifarbenchError(f"--top-k {top_k}: must be at least 1")
    try:
        dev = resolve_device(device)
    except RuntimeError:  # torch.device() on a name it does not know
        raise CifarbenchError(f"--device {device!r}: not a device (auto, cpu, cuda, cuda:N or mps)") from None
    run = load_run(run_dir, dev)
    top_k = min(top_k, len(run.classes))
    c, size = run.preprocess["channels"], run.preprocess["image_size"]

    heads, images = [], []  # per image: the row's leading columns, and the uint8 tensor
    files, errors = find_images(inputs)
    for path in files:
        try:
            x, note = read_image(path, c, size)
        except CifarbenchError as e:
            errors.append(str(e))
            continue
        # with a dataset every row has a label column (empty for files): tables and CSV take the first row's keys
        heads.append({"path": str(path), **({"label": None} if dataset else {}), "note": note})
        images.append(x)
    if dataset is not None:
        part, classes = _dataset_split(run, dataset, split, data_dir)
        heads += [{"path": f"{dataset}:{split}/{i}", "label": classes[y], "note": ""}
                  for i, y in enumerate(part.labels.tolist())]
        images += list(part.images)

    rows = []
    if images:
        top_p, top_i = probabilities(run, torch.stack(images), dev, batch_size).topk(top_k, dim=1)
        for head, p, i in zip(heads, top_p.tolist(), top_i.tolist()):
            note = head.pop("note")  # last, after the classes: the widest column
            for rank, (pk, ik) in enumerate(zip(p, i), 1):
                head[f"class_{rank}"], head[f"prob_{rank}"] = run.classes[ik], pk
            rows.append({**head, "note": note})
    return {"rows": rows, "errors": errors, "checkpoint": str(run.checkpoint)}


def _dataset_split(run: Run, name: str, split: str, data_dir):
    """A split of a dataset, loaded with the run's config (same validation split) when it is the run's dataset."""
    from cifarbench.data import load_dataset
    from cifarbench.engine.trainer import load_splits

    if split not in ("test", "val", "train"):
        raise CifarbenchError(f"--split {split!r}: choose test, val or train")
    if name == run.cfg.dataset:
        splits = load_splits(run.cfg.replace(data_dir=str(data_dir)) if data_dir else run.cfg)
    else:
        splits = load_dataset(name, data_dir=data_dir, seed=0)
    part = getattr(splits, split)
    want = (run.preprocess["channels"], run.preprocess["image_size"], run.preprocess["image_size"])
    if tuple(part.images.shape[1:]) != want:
        raise CifarbenchError(f"--dataset {name}: images are {'x'.join(map(str, part.images.shape[1:]))} but "
                              f"{run.dir} expects {'x'.join(map(str, want))}; write them as image files to "
                              f"predict them with conversion")
    return part, splits.classes
