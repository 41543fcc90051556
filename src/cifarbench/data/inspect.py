"""``cifarbench data``: image counts per class and split, a class-distribution chart and a sample grid.

The plots use matplotlib's object API (``Figure`` + Agg canvas), never pyplot: no global
backend switch, no GUI, safe in threads and on headless machines. The study report reuses
``plot_class_distribution`` and ``plot_samples``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cifarbench.data.splits import Splits

SPLITS = ("train", "val", "test")
COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


def count_rows(splits: Splits) -> list[dict]:
    """One row per class ({"class", "train", "val", "test"}) plus a "total" row."""
    counts = {s: getattr(splits, s).counts(splits.num_classes) for s in SPLITS}
    rows = [{"class": c, **{s: counts[s][i] for s in SPLITS}} for i, c in enumerate(splits.classes)]
    rows.append({"class": "total", **{s: len(getattr(splits, s)) for s in SPLITS}})
    return rows


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_class_distribution(splits: Splits, path) -> Path:
    """Grouped bar chart: images per class, one bar per split."""
    n = splits.num_classes
    fig = _figure(9.0 if n <= 20 else min(22.0, 2 + 0.2 * n), 4.8)  # 100 rotated labels need ~0.2 in each
    ax = fig.add_subplot()
    x = np.arange(n)
    width = 0.8 / len(SPLITS)
    for i, s in enumerate(SPLITS):
        counts = getattr(splits, s).counts(n)
        bars = ax.bar(x + (i - 1) * width, counts, width, label=f"{s} ({sum(counts):,})", color=COLORS[s])
        if n <= 10:
            ax.bar_label(bars, labels=[f"{c:,}" for c in counts], fontsize=7, padding=1)
    ax.set_xticks(x, splits.classes, rotation=0 if n <= 10 else 90, fontsize=8 if n <= 10 else 7)
    ax.set_ylabel("images")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_title(f"{splits.name}: images per class and split", pad=24)
    # above the axes, so it never covers a bar
    ax.legend(frameon=False, ncol=len(SPLITS), loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def _pick(labels: torch.Tensor, num_classes: int, per_class: int, seed: int) -> list[torch.Tensor]:
    """Up to ``per_class`` seeded random indices of each class."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    return [perm[labels[perm] == c][:per_class] for c in range(num_classes)]


def plot_samples(splits: Splits, path, per_class: int = 8, max_classes: int = 20, seed: int = 0) -> Path:
    """A grid of training images, one row per class (the first ``max_classes`` classes), class names on the left.

    The images are tiled into one mosaic and drawn with one ``imshow`` (hundreds of subplots are slow).
    """
    shown = min(splits.num_classes, max_classes)
    c, h = splits.channels, splits.image_size
    pad = 2
    mosaic = np.full((shown * (h + pad), per_class * (h + pad), c), 255, dtype=np.uint8)
    images = splits.train.images
    for row, idx in enumerate(_pick(splits.train.labels, shown, per_class, seed)):
        for col, i in enumerate(idx.tolist()):
            y, x = row * (h + pad), col * (h + pad)
            mosaic[y:y + h, x:x + h] = images[i].permute(1, 2, 0).numpy()
    fig = _figure(1.6 + 0.6 * per_class, 0.3 + 0.6 * shown)
    ax = fig.add_subplot()
    ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap="gray" if c == 1 else None,
              vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([r * (h + pad) + h / 2 for r in range(shown)], splits.classes[:shown], fontsize=9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    more = f" (first {shown} of {splits.num_classes} classes)" if shown < splits.num_classes else ""
    ax.set_title(f"{splits.name}: training samples{more}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def inspect_dataset(name, data_dir=None, output="data-report", val_size=None, seed=0) -> dict:
    """Load ``name``, count images per class and split, write class_distribution.png and samples.png."""
    from cifarbench.data import load_dataset

    splits = load_dataset(name, data_dir=data_dir, val_size=val_size, seed=seed)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files = [plot_class_distribution(splits, out / "class_distribution.png"),
             plot_samples(splits, out / "samples.png")]
    return {
        "dataset": splits.name,
        "classes": list(splits.classes),
        "image_size": splits.image_size,
        "channels": splits.channels,
        "mean": [round(m, 4) for m in splits.mean],
        "std": [round(s, 4) for s in splits.std],
        "rows": count_rows(splits),
        "files": [str(f) for f in files],
    }
