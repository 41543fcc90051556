"""The report's figures, drawn with matplotlib's Agg canvas straight to PNG.

Figures are built as ``matplotlib.figure.Figure`` objects on a ``FigureCanvasAgg`` rather than
through pyplot: no global figure registry, no GUI backend, nothing left open between calls.
Every function takes plain numbers (runs read from files, FinalStats) and a path, and returns it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, MaxNLocator

from cifarbench.report.flags import FinalStats, mean_std, pareto_front
from cifarbench.report.load import Run

TRAIN_C, VAL_C = "#1f77b4", "#d62728"
DPI = 100


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _col(run: Run, key: str) -> np.ndarray:
    a = np.asarray(run.metrics[key], dtype=float)
    a[~np.isfinite(a)] = np.nan  # a diverged run's inf would wreck the axis limits
    return a


def _mean_curve(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds on the epochs every seed reached."""
    n = min(r.epochs for r in runs)
    ys = np.stack([_col(r, key)[:n] for r in runs])
    with np.errstate(all="ignore"):
        mean = np.nanmean(ys, axis=0) if n else np.zeros(0)
    return _col(runs[0], "epoch")[:n], mean


def _minor_log_label(y: float, _pos=None) -> str:
    """Label only the 2, 3 and 5 minor ticks of a log axis: enough to read values, not a wall of digits."""
    if y <= 0:
        return ""
    mant = y / 10 ** math.floor(math.log10(y) + 1e-9)
    return f"{y:.2g}" if any(abs(mant - k) < 1e-6 for k in (2, 3, 5)) else ""


def _curve_panel(ax_loss, ax_acc, title: str, runs: list[Run]) -> None:
    runs = [r for r in runs if r.epochs]
    for ax, what in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.set_title(f"{title}: {what}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.25" on short runs
        if not runs:
            ax.text(0.5, 0.5, "no epochs yet", ha="center", va="center", transform=ax.transAxes, color="#888")
            continue
        for split, color in (("train", TRAIN_C), ("val", VAL_C)):
            key = f"{split}_{what}"
            if len(runs) > 1:  # each seed thin, the mean over seeds bold
                for r in runs:
                    ax.plot(_col(r, "epoch"), _col(r, key), color=color, lw=0.8, alpha=0.35)
                x, y = _mean_curve(runs, key)
                ax.plot(x, y, color=color, lw=1.8, label=f"{split} (mean of {len(runs)})")
            else:
                ax.plot(_col(runs[0], "epoch"), _col(runs[0], key), color=color, lw=1.6, marker=".", ms=4, label=split)
        if what == "loss":
            ax.set_yscale("log")
            # plain numbers (0.6, 1, 2) read better than 6x10^-1 on a loss axis
            ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
            ax.set_ylabel("cross-entropy loss (log scale)", fontsize=8)
        else:
            ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.legend(fontsize=7, loc="best")


def learning_curves(panels: Sequence[tuple[str, list[Run]]], path: Path, per_row: int = 4) -> Path:
    """One panel pair (loss above accuracy) per entry, train vs val; several runs are averaged."""
    n = max(len(panels), 1)
    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    fig = _figure(3.4 * cols + 0.4, 5.2 * rows)
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for k, (title, runs) in enumerate(panels):
        r, c = divmod(k, cols)
        _curve_panel(axes[2 * r][c], axes[2 * r + 1][c], title, runs)
    for k in range(len(panels), rows * cols):  # hide the unused cells of the last row
        r, c = divmod(k, cols)
        axes[2 * r][c].set_visible(False)
        axes[2 * r + 1][c].set_visible(False)
    return _save(fig, path)


def tradeoff(stats: list[FinalStats], path: Path) -> Path:
    """Accuracy against MACs per image and against training time, Pareto front marked."""
    fig = _figure(11, 4.3)
    axes = fig.subplots(1, 2)
    specs = ((axes[0], "macs_per_image", "MACs per image (forward, log scale)", True),
             (axes[1], "train_time_s", "training time (s, wall clock, mean over seeds)", False))
    for ax, key, xlabel, logx in specs:
        pts = [(getattr(s, key), *mean_std(s.acc)[:2], s) for s in stats if getattr(s, key) and s.acc]
        split = pts[0][3].acc_split if pts else "test"
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(f"{split} accuracy (%, mean ± std)", fontsize=9)
        ax.grid(alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, "no finished finals yet", ha="center", va="center", transform=ax.transAxes, color="#888")
            continue
        front = pareto_front([(x, m) for x, m, _, _ in pts])
        for (x, m, sd, s), on in zip(pts, front):
            ax.errorbar([x], [m], yerr=[sd or 0.0], fmt="o", ms=8, capsize=4,
                        color="#2ca02c" if on else "#7f7f7f", mfc="#2ca02c" if on else "white")
            ax.annotate(s.label, (x, m), textcoords="offset points", xytext=(7, 6), fontsize=8)
        fp = sorted((x, m) for (x, m, _, _), on in zip(pts, front) if on)
        if len(fp) > 1:
            ax.plot(*zip(*fp), color="#2ca02c", lw=1.2, ls="--", drawstyle="steps-post", label="Pareto front")
        ax.plot([], [], "o", color="#2ca02c", label="on the Pareto front")
        ax.plot([], [], "o", color="#7f7f7f", mfc="white", label="dominated")
        ax.legend(fontsize=7, loc="lower right")
        if logx:
            ax.set_xscale("log")
        ax.margins(x=0.2, y=0.15)
    return _save(fig, path)


def per_class(stats: list[FinalStats], path: Path) -> Path:
    """Grouped bars: per-class test accuracy of each model (mean over seeds)."""
    have = [s for s in stats if s.per_class_acc]
    classes = have[0].classes or [str(i) for i in range(len(have[0].per_class_acc))]
    n, k = len(classes), len(have)
    fig = _figure(max(7.0, 0.6 * n * max(k, 1) / 2 + 2), 3.8)
    ax = fig.subplots()
    width = 0.8 / k
    x = np.arange(n)
    for i, s in enumerate(have):
        ax.bar(x + (i - (k - 1) / 2) * width, s.per_class_acc, width, label=s.label)
    ax.set_xticks(x, classes, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8)
    ax.set_ylabel("test accuracy (%)", fontsize=9)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=k, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _save(fig, path)


def confusion(stat: FinalStats, path: Path) -> Path:
    """Heatmap of the confusion matrix summed over seeds: rows true class, columns predicted;
    colour is the row-normalised share, numbers are counts."""
    m = np.asarray(stat.confusion, dtype=float)
    n = m.shape[0]
    classes = stat.classes or [str(i) for i in range(n)]
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = min(max(4.5, 0.5 * n + 1.5), 14)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    im = ax.imshow(share * 100, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of the true class")
    if n <= 20:  # past 20 classes the labels and counts become unreadable
        ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "#222")
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("true class", fontsize=9)
    seeds = f"sum over {stat.confusion_seeds} seeds" if stat.confusion_seeds > 1 else "one seed"
    ax.set_title(f"{stat.label}: test confusion ({seeds})", fontsize=10)
    return _save(fig, path)
