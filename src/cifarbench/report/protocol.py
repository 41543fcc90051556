"""How a study's runs relate to its study file: the deviations, and the measured time per epoch.

A study run with ``--epochs-scale`` (or ``--max-epochs``) trains fewer epochs than its file says, but each
epoch is a full one: its seconds per epoch price the whole protocol. ``cifarbench study --preset paper
--epochs-scale 0.05`` thus states, from measurement, what the paper's 420 epochs at 224 px would take
(9 sweep runs x 30 epochs + 3 finals x 50) on the same device.
"""
from __future__ import annotations

import math
import statistics

from cifarbench.report.doc import Bullets, Heading, Para, Table
from cifarbench.report.load import Study

DASH = "—"


def deviation_blocks(study: Study) -> list:
    """A bold line and the list of deviations from the study file (study.json "deviations"), or nothing."""
    devs = study.info.get("deviations") or []
    if not devs:
        return []
    return [Para("**Deviations from the study file** (flags of `cifarbench study`, its `[override]` table): "
                 "the figures below are of this study, not of the file's protocol."), Bullets([str(d) for d in devs])]


def _file_epochs(study: Study, model: str, stage: str, runs) -> int | None:
    """The epochs the study file gives a run of this stage (study.json "epochs": [file, run]), else the runs' own."""
    pair = ((study.info.get("epochs") or {}).get(model) or {}).get(stage)
    if pair:
        return int(pair[0])
    planned = [r.config.get("epochs") for r in runs if r.config.get("epochs")]
    return max(planned) if planned else None


def epoch_costs(study: Study) -> list[dict]:
    """One row per model and stage with timed epochs: mean seconds per training epoch (metrics.csv epoch_time),
    and the training seconds the study file's runs of that stage would take at that speed."""
    rows = []
    for m in study.models:
        for stage, runs in (("sweep", m.sweep), ("final", m.finals)):
            times = [t for r in runs for t in r.metrics["epoch_time"] if math.isfinite(t)]
            if not times:
                continue
            ips = [x for r in runs for x in r.metrics["images_per_sec"] if math.isfinite(x)]
            file_epochs = _file_epochs(study, m.name, stage, runs)
            mean = statistics.fmean(times)
            res = next((r.get("resolution") for r in runs if r.get("resolution")), None)
            rows.append({"model": m.label, "stage": stage, "resolution": res, "runs": len(runs),
                         "epochs_timed": len(times), "s_per_epoch": mean,
                         "images_per_sec": statistics.fmean(ips) if ips else None, "file_epochs": file_epochs,
                         "file_s": len(runs) * file_epochs * mean if file_epochs else None})
    return rows


def _dur(s: float | None) -> str:
    if s is None:
        return DASH
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def cost_blocks(study: Study) -> list:
    rows = epoch_costs(study)
    out: list = [Heading(2, "Time per epoch")]
    if not rows:
        return out + [Para("No epoch has been timed yet.")]
    out.append(Para("Mean seconds per training epoch (metrics.csv `epoch_time`: the training pass, evaluation "
                    "excluded) over every timed epoch of the stage's runs, and what the study file's runs of that "
                    "stage (runs × its epochs) would take at that speed."))
    out.append(Table(["Model", "Stage", "Resolution", "Runs", "Epochs timed", "s / epoch", "Images/s",
                      "File's epochs per run", "File's training time"],
                     [[r["model"], r["stage"], str(r["resolution"] or DASH), str(r["runs"]), str(r["epochs_timed"]),
                       f"{r['s_per_epoch']:.2f}", DASH if r["images_per_sec"] is None else f"{r['images_per_sec']:.0f}",
                       str(r["file_epochs"] or DASH), _dur(r["file_s"])] for r in rows],
                     numeric=[False, False] + [True] * 7))
    known = [r for r in rows if r["file_s"] is not None]
    if known:
        epochs = sum(r["runs"] * r["file_epochs"] for r in known)
        out.append(Para(f"At these speeds the study file's {epochs} training epochs take about "
                        f"{_dur(sum(r['file_s'] for r in known))} of training on this device, evaluation and "
                        "start-up not included" + (" (runs side by side share the device, so each ran slower "
                                                   "than alone)" if (study.env.get("jobs") or 1) > 1 else "") + "."))
    return out
