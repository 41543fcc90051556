"""The report's "Time budget" section: the rule a budgeted study applied, the epochs it chose, and how
its prediction compared with the wall time the study took.

It reads study.json's "budget" (written by study/budget.py: the rule as applied, the calibration, the
decision) and the study's own clock ("wall_s", "stage_wall_s"); nothing when the study had no budget.
"""
from __future__ import annotations

import math
import statistics

from cifarbench.log import clock
from cifarbench.report.doc import Bullets, Heading, Para, Table
from cifarbench.report.load import Study

DASH = "—"


def _clock(seconds) -> str:
    return DASH if seconds is None or not math.isfinite(seconds) else clock(seconds)


def _secs(x) -> str:
    return DASH if x is None else f"{x:.0f}"


def _ep(epochs: int, subset: int | None, cap: int | None = None) -> str:
    """Epochs, with the cap after them, and the subset each trained on where the budget cut one."""
    return f"{epochs}" + (f" ({cap})" if cap is not None else "") + (f" on {subset:,}" if subset else "")


def _actual_run_s(study: Study, model: str) -> float | None:
    """Mean wall time of the model's finished finals (results.json wall_time_s)."""
    for m in study.models:
        if m.name == model:
            walls = [r.results["wall_time_s"] for r in m.finals if r.results.get("wall_time_s")]
            return statistics.fmean(walls) if walls else None
    return None


def subset_note(study: Study) -> str:
    """Sentences for the results table when the budget moved some finals to their budget_fallback config or trained
    them on part of the training images, else ""."""
    a = (study.info.get("budget") or {}).get("allocation") or {}
    out = ""
    moved = [r for r in a.get("models", []) if r.get("fallback")]
    if moved:
        out += (" Under the time budget, these finals trained with their study file's budget_fallback instead of its "
                "config: " + "; ".join(f"{r['model']} with {r['fallback']['as_toml']}" for r in moved)
                + " (section \"Time budget\").")
    cut = [r for r in a.get("models", []) if r.get("train_subset")]
    if cut:
        out += (" Under the time budget, even one epoch per model on all the training images did not fit, so these "
                "finals trained on a stratified subset: " + ", ".join(
                    f"{r['model']} {r['epochs']} epoch(s) on {r['train_subset']:,} of {r['train_images']:,} images"
                    for r in cut) + " (section \"Time budget\").")
    return out


def budget_blocks(study: Study) -> list:
    b = study.info.get("budget")
    if not b:
        return []
    out = [Heading(2, "Time budget"),
           Para(f"Budget **{b.get('budget')}** ({_clock(b.get('budget_s'))}) for the whole study on this machine. "
                "The final stage's epochs were set by this rule, fixed before any run; its inputs are measured "
                "speeds and the study file's shares, never a test figure:"),
           Bullets([str(r) for r in b.get("rule") or []])]
    a = b.get("allocation")
    if not a:
        p = b.get("predicted") or {}
        out.append(Para("The finals are not planned yet: the rule runs when the sweep has finished"
                        + (f" (predicted at the start: epochs {', '.join(f'{k} {v}' for k, v in p['epochs'].items())})."
                           if p.get("epochs") else ".")))
        return out
    rows = []
    for r in a["models"]:
        rows.append([r["model"] + (" (fallback)" if r.get("fallback") else ""), f"{r['share']:.2f}",
                     f"{r['calibrated_images_per_sec']:.0f}",
                     f"{r['images_per_sec']:.0f}", r["source"], f"{r['epoch_s']:.1f}",
                     _ep(r["epochs"], r.get("train_subset"), r["cap"]), f"{r['predicted_run_s']:.0f}",
                     _secs(_actual_run_s(study, r["model"]))])
    out.append(Table(["Model", "Share", "Calibrated img/s", "Img/s used", "Speed from", "Epoch (s)",
                      "Epochs (cap)", "Predicted run (s)", "Actual run (s)"], rows,
                     numeric=[False, True, True, True, False, True, True, True, True]))
    times = (study.info.get("stage_wall_s") or {}).get("final") or {}
    actual_final = times["end"] - times["start"] if "end" in times and "start" in times else None
    wall = study.info.get("wall_s")
    notes = [f"When the finals were planned: {_clock(a['elapsed_s'])} used (calibration, data overview, sweep), "
             f"{_clock(a['reserve_s'])} reserved for the test and the report, {_clock(a['final_s'])} left for the "
             f"finals with {a['lanes']} run(s) side by side and {a['seeds']} seed(s) per model.",
             f"Finals: predicted {_clock(a['predicted_final_s'])} after the sweep, actual {_clock(actual_final)}"
             + ("" if actual_final is None else f" ({100 * (actual_final / a['predicted_final_s'] - 1):+.1f} %)")
             + ". Epoch columns: seconds of one epoch (training and validation) at the speed used; "
               "the cap is the study file's final epochs; \"on N\": each epoch trained on a stratified subset of N "
               "training images, because even one epoch per model on all of them did not fit the budget.",
             f"Whole study: predicted {_clock(a['predicted_total_s'])}, actual {_clock(wall)} up to this report"
             + ("" if wall is None else f" ({100 * wall / b['budget_s']:.1f} % of the budget)") + "."]
    for r in a["models"]:
        if r.get("fallback"):
            fb = r["fallback"]
            notes.append(f"{r['model']}: the rule gave the study file's config {_ep(fb['file_epochs'], fb.get('file_train_subset'))} "
                         f"epoch(s) at {fb['file_images_per_sec']:.0f} img/s, fewer than its budget_fallback's "
                         f"below_epochs = {fb['below_epochs']}, so its finals trained with {fb['as_toml']} instead "
                         "(the row marked \"(fallback)\": its speed and epochs).")
    for r in a.get("replans") or []:
        after = _ep(r["epochs"][r["model"]], (r.get("train_subset") or {}).get(r["model"]))
        notes.append(f"{r['model']}'s finals planned again when they started, at {_clock(r['elapsed_s'])}: the finals "
                     f"before ran at {r['speed_ratio']:.2f}x the speed used above; epochs "
                     f"{_ep(r['epochs_before'], r.get('train_subset_before'))} -> {after}, "
                     f"predicted end {_clock(r['predicted_total_s'])}.")
    if not a.get("fits"):
        notes.append("**Over budget by the rule's own prediction**: even one final epoch per model, on the fewest "
                     "training images the rule allows, did not fit what the sweep left.")
    out.append(Bullets(notes))
    return out
