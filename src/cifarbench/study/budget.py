"""A wall-clock budget for a study: ``cifarbench study --budget 29m``, or ``budget = "29m"`` in its TOML.

The final stage's epochs per model are set to fit the budget on the machine at hand, by a rule fixed before
any run. Its inputs are measured speeds and the study file's per-model shares (chosen by the study's author
from validation figures); the test split plays no part.

1. Calibration, once, when the study starts: every distinct speed setting of the sweep and final runs (model,
   stem, resolution, batch, amp, channels_last, progressive resizing, and the thread count the run's slot will
   give it) is timed for a few training steps (``plan._steps_per_image``: 2 warm-up + up to 3 timed, eager;
   with ``--prog-res`` also at the smallest size, the steps priced by their pixels: ``plan.prog_res_cost``).
   From it the sweep's length is predicted. If the sweep alone would overrun the budget, the study stops
   before it starts, with one line saying how long it would take; if the sweep fits but not one final epoch
   per model with the reserve, one warning line says so and the study goes on (the calibration is a few
   steps: the sweep's own speeds decide).
2. After the sweep, whose cost is then known rather than predicted, the finals get
       T = budget - elapsed - reserve
   elapsed: the study's wall time so far (``StudyState.wall_s``, summed over sessions); reserve: the test stage
   (each final's test images, times 1 + its TTA views, at EVAL_COST of a training image and at the speed of all
   lanes together, since the test stage evaluates one final at a time with every core, plus TEST_RUN_S per run)
   plus RESERVE_S.
   A model's speed is the median images/s of its own sweep runs that had the same speed setting (real epochs
   on this machine, run side by side as the finals will be); a model without one uses its calibration, scaled
   by the median sweep/calibration ratio of the models that have both. An epoch costs
       c_m = (training images + EVAL_COST x validation images) / speed_m
   and a run adds R_m (start-up and the final reload: its sweep runs' wall - train - validation time, else
   RUN_OVERHEAD_S). The ``lanes`` runs side by side (``--jobs``) give lanes x T run-seconds, shared between
   the models by the study file's ``budget_share`` (default equal) and split over the seeds:
       epochs_m = floor((share_m x lanes x T / seeds - R_m) / c_m), within [min_m, cap_m]
   min_m = 1 (or the warm-up epochs + 1); cap_m = the final epochs the study file gives the model.
   Then the finals are laid out as the study runs them (models in order, seeds inside, each run on the first
   free lane, as ``jobs.run_side_by_side`` does): while that schedule is longer than T, the model furthest over
   its share loses an epoch; then, while it stays within T, the model furthest under its share gains one
   (so time a floor or a cap leaves over goes to the others). If even the minimum epochs overrun T (a slow
   machine, or ``taskset -c 0``), each epoch trains on part of the training images (the engine's stratified
   ``train_subset``): the models over their share are cut to it, then all by one factor until the schedule
   fits, never below MIN_FRACTION of the images (then the plan says it does not fit); the models on whole
   epochs gain epochs into the time the cut freed, and what is still left grows the cut models' subsets.
   A model whose study-file entry has a ``budget_fallback`` (TrainConfig fields, and ``below_epochs``) and gets
   fewer than below_epochs whole epochs this way (a subset counts as none) trains its finals with those fields
   instead, e.g. a cheaper stem: on a CPU without bf16 the quick preset's ResNet18 gets one epoch of its
   ``cifar-s2`` stem, where the ``imagenet`` stem runs about 3x faster and gains more from the epochs that buys
   (BENCHMARKS.md, "A budget fallback"). The fallback's speed is its calibration, scaled by the sweep/
   calibration ratio, and step 2 runs again with it. The sweep's winner (its learning rate) carries over.
3. When a model's first final is about to start (``replan``), its epochs are decided again, from what the
   finals so far measured: the median ratio of their images/s to the speed step 2 used (over the finals of
   models priced from their sweep where one has finished: a fallback's calibration error is not the host's
   drift) rescales the epoch cost of this model and the ones after it, and step 2's allocation runs on them for the time left, with
   the lanes that runs in flight still hold (their predicted time at the ratio, less the time they have run).
   A slower machine (another job started) so cuts the later models' epochs, and a faster one (this project's
   2-core hosts vary by +-20 % over minutes: BENCHMARKS.md, run 8) gives them the time step 2 left over.
   The first model, or one with no finished final before it, keeps step 2's epochs.
4. Each decision (with the calibration, speeds and predictions) is written to study.json's "budget" and never
   made again: a resumed study reuses it, so an interrupted final resumes with the same epochs (the engine
   refuses a run whose config changed). A different ``--budget`` on a rerun is reported and ignored once the
   finals are planned; before that it replaces the stored one, and a rerun without one keeps it. A budget
   given only after the finals started is ignored (their runs have the study file's epochs).

The prediction errs long on purpose (a run's start-up counted per run, the test timed at one job's threads);
what it cannot see is the machine getting slower after the sweep (other jobs starting), the reason a
budget should leave a margin under a hard limit.
"""
from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from cifarbench import log
from cifarbench.log import clock
from cifarbench.config import TTA_VIEWS, read_json
from cifarbench.errors import CifarbenchError

# A validation or test image (forward only, no_grad, large batches) costs about a third of a training image
# (forward + backward + step); plan.py's estimate uses the same figure.
EVAL_COST = 1 / 3
RUN_OVERHEAD_S = 10.0  # a final's start-up and final reload when no sweep run measured it (quick study: 4-14 s)
TEST_RUN_S = 3.0       # evaluate_run per final: load the data, the model and best.pt
RESERVE_S = 30.0       # the report (3 s on the quick study), imports before the study's clock starts, worker start-up
MIN_FRACTION = 0.02  # of the training images, the least a budget cuts an epoch to (900 of CIFAR-10's 45,000)

RULE = [
    "Calibration at the start: a few timed training steps per model with the runs' exact speed settings "
    "(model, stem, resolution, batch, amp, channels_last, threads per run); with progressive resizing also at "
    "its smallest size, each step priced by its pixels between the two.",
    f"After the sweep: finals time T = budget - elapsed - reserve (test stage at {EVAL_COST:.2f} of a training "
    f"image per test image, times 1 + the TTA views with --tta, at the speed of all runs side by side together, + {TEST_RUN_S:g} s per final, + {RESERVE_S:g} s "
    "for the report and start-up).",
    "Speed per model: the median images/s of its own sweep runs with the same settings, else its calibration "
    "scaled by the other models' sweep/calibration ratio.",
    f"Epoch cost = (training images + {EVAL_COST:.2f} x validation images) / speed; per-run overhead from the "
    f"sweep runs (else {RUN_OVERHEAD_S:g} s), plus the TTA views of the last epoch's validation pass with --tta.",
    "epochs = floor((share x runs side by side x T / seeds - overhead) / epoch cost), at least 1 (warm-up + 1), "
    "at most the study file's final epochs; shares are the study file's budget_share (default equal).",
    "Then the finals' schedule (models in order, seeds inside, each run on the first free slot) is fitted to T: "
    "the model furthest over its share loses an epoch while it is too long; the model furthest under its "
    "share gains one while it still fits.",
    "If even the minimum epochs do not fit, each epoch trains on a stratified subset of the training images "
    f"(train_subset): the models over their share are cut to it, then all by one factor until the schedule fits "
    f"(at least {MIN_FRACTION:.0%} of the images); time still left grows the cut models' subsets.",
    "A model with a budget_fallback (fields of its config, e.g. a cheaper stem, and below_epochs) that this gives "
    "fewer than below_epochs whole epochs (a subset counts as none) trains its finals with those fields instead, "
    "priced by their own calibration scaled by the sweep/calibration ratio, and the epochs are set again; decided "
    "once, after the sweep (re-plans keep it).",
    "When each later model's finals start, its epochs are decided again the same way, for the time left, with "
    "the speeds rescaled by the finished finals' measured speed over the speed the plan used (the median ratio; "
    "over the finals of models whose speed came from their sweep, where one has finished).",
    "Each decision is made once and stored in study.json; the test split plays no part.",
]

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


# ---------------------------------------------------------------- the budget value
def parse_budget(value: Any, where: str = "--budget") -> float:
    """Seconds from 30m, 1h30m, 90s, 1800 (seconds) or a TOML number; one-line error naming the value."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            m = _DURATION.fullmatch(text)
            if m and text and any(m.groups()):
                seconds = sum(float(g) * f for g, f in zip(m.groups(), (3600, 60, 1)) if g)
    if seconds is None or not math.isfinite(seconds):
        raise CifarbenchError(f"{where} {value!r}: not a duration (examples: 30m, 1h30m, 90s, 1800 for seconds)")
    if seconds <= 0:
        raise CifarbenchError(f"{where} {value!r}: must be more than 0 seconds")
    return seconds


def resolve(spec, flag: str | None) -> tuple[float, str] | None:
    """(seconds, as written) of the flag, else of the study file's ``budget``, else None."""
    if flag is not None:
        return parse_budget(flag), str(flag)
    if spec.budget is not None:
        return spec.budget, str(spec.raw.get("budget"))
    return None


# ---------------------------------------------------------------- the rule (pure)
@dataclass
class ModelCost:
    name: str
    epoch_s: float            # one epoch of one run: training plus the validation pass
    overhead_s: float = 0.0   # per run: start-up and the final reload
    share: float = 1.0
    cap: int | None = None
    min_epochs: int = 1
    train_s: float | None = None  # the training part of epoch_s (None: all of it), what a subset shortens

    @classmethod
    def from_speed(cls, name: str, images_per_sec: float, train_images: int, val_images: int, **kw) -> "ModelCost":
        """An epoch trains on ``train_images`` and evaluates ``val_images`` (at EVAL_COST of a training image each)."""
        return cls(name, (train_images + EVAL_COST * val_images) / images_per_sec,
                   train_s=train_images / images_per_sec, **kw)

    def run_s(self, epochs: int, fraction: float = 1.0) -> float:
        """A run of ``epochs`` epochs, each on ``fraction`` of the training images (the validation pass stays whole)."""
        train = self.epoch_s if self.train_s is None else self.train_s
        return self.overhead_s + epochs * (self.epoch_s - (1.0 - fraction) * train)


def schedule_s(durations: list[float], lanes: int, busy: list[float] | None = None) -> float:
    """How long the runs take with ``lanes`` side by side, each next one on the first lane to come free;
    ``busy``: seconds some lanes stay taken by runs already in flight."""
    free = [0.0] * max(1, lanes)
    for i, b in enumerate((busy or [])[:len(free)]):
        free[i] = max(0.0, b)
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def allocate(budget_s: float, elapsed_s: float, reserve_s: float, models: list[ModelCost], seeds: int,
             lanes: int, busy: list[float] | None = None) -> dict[str, Any]:
    """Final epochs per model (the module docstring's step 2): {"epochs", "final_s", "predicted_final_s", "fits", ...}.

    ``busy``: seconds that some lanes stay taken by runs already in flight (a re-plan, step 3); they come off
    the run-seconds the models share."""
    seeds, lanes = max(1, seeds), max(1, lanes)
    final_s = budget_s - elapsed_s - reserve_s
    total = sum(m.share for m in models)
    t = max(final_s, 0.0)
    free_s = max(0.0, t * lanes - sum(min(max(b, 0.0), t) for b in busy or []))  # less what runs in flight hold
    target = {m.name: free_s * m.share / total for m in models}  # run-seconds, all its seeds

    def clamp(m: ModelCost, e: int) -> int:
        return max(m.min_epochs, min(e, m.cap) if m.cap is not None else e)

    epochs = {m.name: clamp(m, math.floor((target[m.name] / seeds - m.overhead_s) / max(m.epoch_s, 1e-9)))
              for m in models}

    fraction = {m.name: 1.0 for m in models}  # of the training images each epoch trains on

    def length(plus_one: ModelCost | None = None) -> float:
        return schedule_s([m.run_s(epochs[m.name] + (m is plus_one), fraction[m.name]) for m in models
                           for _ in range(seeds)], lanes, busy)

    def use(m: ModelCost) -> float:  # the fraction of its share the model's runs take
        return seeds * m.run_s(epochs[m.name], fraction[m.name]) / target[m.name] if target[m.name] > 0 else math.inf

    def gain() -> None:  # a model cut to part of the images gets no more epochs
        while True:
            room = [m for m in models if fraction[m.name] >= 1.0 and (m.cap is None or epochs[m.name] < m.cap)
                    and length(m) <= final_s]
            if not room:
                break
            epochs[min(room, key=use).name] += 1

    while length() > final_s:
        over = [m for m in models if epochs[m.name] > m.min_epochs]
        if not over:
            break
        epochs[max(over, key=use).name] -= 1
    gain()
    if length() > final_s:  # even the minimum epochs overrun: _cut_epochs trains them on part of the images
        _cut_epochs(models, epochs, fraction, target, seeds, final_s, length)
        gain()  # the time a cut model no longer takes goes back to the others
        _fill_cut(fraction, final_s, length)  # and what they cannot use, to the cut models
    predicted = length()
    return {"epochs": epochs, "fraction": fraction, "final_s": final_s, "predicted_final_s": predicted,
            "fits": predicted <= final_s, "target_s": target}


def _cut_epochs(models: list[ModelCost], epochs: dict, fraction: dict, target: dict, seeds: int, final_s: float,
                length: Callable[[], float]) -> None:
    """Step 2's last resort, when every model is at its minimum epochs and the finals still overrun: each model's
    epochs train on a part of the training images (a stratified subset, the engine's train_subset), first the
    models over their share down to it, then every model by the same factor until the schedule fits; never
    below MIN_FRACTION (then the plan does not fit, and says so)."""
    for m in models:
        train = m.epoch_s if m.train_s is None else m.train_s
        per_epoch = (target[m.name] / seeds - m.overhead_s) / epochs[m.name]  # what its share gives an epoch
        fraction[m.name] = min(1.0, max(MIN_FRACTION, 1.0 - (m.epoch_s - per_epoch) / train)) if train > 0 else 1.0
    _scale_to_fit(fraction, dict(fraction), 0.0, 1.0, final_s, length)


def _fill_cut(fraction: dict, final_s: float, length: Callable[[], float]) -> None:
    """After the cut, the time the models on whole epochs could not use goes back to the cut ones, by one factor."""
    cut = {n: f for n, f in fraction.items() if f < 1.0}
    if cut and length() <= final_s:
        _scale_to_fit(fraction, cut, 1.0, max(1.0 / f for f in cut.values()), final_s, length)


def _scale_to_fit(fraction: dict, base: dict, lo: float, hi: float, final_s: float, length: Callable[[], float]) -> None:
    """fraction = base x g (within [MIN_FRACTION, 1]) for the largest g in [lo, hi] whose schedule fits, to 1e-4."""
    def scale(g: float) -> bool:
        fraction.update({n: min(1.0, max(MIN_FRACTION, f * g)) for n, f in base.items()})
        return length() <= final_s

    if scale(hi):
        return
    while hi - lo > 1e-4 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if scale(mid) else (lo, mid)
    scale(lo)


# ---------------------------------------------------------------- speeds
def _dataset(spec, data: dict | None) -> dict[str, int]:
    """Image counts and shape: the study's data overview when it has loaded the data, else plan.py's table."""
    if data and data.get("rows"):
        total = data["rows"][-1]
        return {"train_file": total["train"] + total["val"], "val": total["val"], "test": total["test"],
                "size": data["image_size"], "channels": data["channels"], "classes": len(data["classes"])}
    from cifarbench.data import default_val_size
    from cifarbench.study.plan import DATASETS

    n_all, native, chans, classes = DATASETS.get(spec.dataset, (50000, 32, 3, 10))
    return {"train_file": n_all, "val": default_val_size(spec.dataset, n_all), "test": 10000, "size": native,
            "channels": chans, "classes": classes}


def _images(cfg: dict, d: dict[str, int]) -> tuple[int, int]:
    """(training, validation) images of one epoch of a run with this config."""
    val = d["val"] if cfg.get("val_size") is None else cfg["val_size"]
    train = d["train_file"] - val
    return (min(train, cfg["train_subset"]) if cfg.get("train_subset") else train), val


def _key(cfg: dict, threads: int | None, d: dict[str, int]) -> dict[str, Any]:
    """What sets a run's images/s (lr, seeds and epochs do not)."""
    key = {"model": cfg["model"], "stem": cfg["stem"], "resolution": cfg.get("resolution") or d["size"],
           "batch_size": cfg["batch_size"], "amp": cfg["amp"], "channels_last": cfg["channels_last"], "threads": threads}
    if cfg.get("prog_res"):  # only when on: calibrations stored before the flag existed keep matching
        key.update(prog_res=cfg["prog_res"], prog_res_end=cfg.get("prog_res_end", 0.75))
    return key


def _same(entry: dict, key: dict) -> bool:
    """A stored calibration measured this speed setting (one with progressive resizing never stands for one without)."""
    return all(entry.get(k) == v for k, v in key.items()) and bool(entry.get("prog_res")) == bool(key.get("prog_res"))


class Speeds:
    """Calibrated training images/s per speed setting, each measured once and kept in ``entries`` (study.json)."""

    def __init__(self, entries: list[dict], d: dict[str, int], device: str | None):
        self.entries, self.d, self.device = entries, d, device

    def get(self, cfg: dict, threads: int | None) -> float:
        key = _key(cfg, threads, self.d)
        for e in self.entries:
            if _same(e, key):
                return e["images_per_sec"]
        import torch

        from cifarbench.engine.env import amp_unsupported, resolve_device
        from cifarbench.study.plan import _run_seconds_per_image

        dev = resolve_device(self.device or cfg.get("device") or "auto")
        amp = cfg["amp"] and not amp_unsupported(dev)  # the engine refuses amp where bf16 would be slower
        t0 = time.perf_counter()
        s = _run_seconds_per_image(cfg["model"], cfg["stem"], key["resolution"], self.d["channels"], self.d["classes"],
                                   dev, cfg["batch_size"], amp, cfg["channels_last"], threads=threads,
                                   prog_res=key.get("prog_res", 0), prog_res_end=key.get("prog_res_end", 0.75))
        used = threads or torch.get_num_threads()
        if dev.type == "cuda":  # hand the measurement's memory back before the runs start (the context stays)
            torch.cuda.empty_cache()
        self.entries.append({**key, "images_per_sec": round(1 / s, 1), "threads_used": used,
                             "seconds": round(time.perf_counter() - t0, 1)})
        log.info(f"budget: calibrated {cfg['model']} ({cfg['stem']}, {key['resolution']} px, batch {cfg['batch_size']}, "
                 f"{used} thread(s)): {1 / s:.0f} img/s")
        return round(1 / s, 1)


def _sweep_measured(study_dir, entries: list[dict], key: dict, d: dict[str, int]) -> tuple[list[float], list[float]]:
    """images/s and per-run overhead (s) of the finished sweep runs that ran with this speed setting."""
    ips, over = [], []
    for e in entries:
        if e.get("state") not in ("complete", "pruned"):
            continue
        try:
            cfg, res = read_json(study_dir / e["run"] / "config.json"), read_json(study_dir / e["run"] / "results.json")
        except (CifarbenchError, KeyError):
            continue
        if _key(cfg, cfg.get("threads"), d) != key or not res.get("images_per_sec"):
            continue
        ips.append(float(res["images_per_sec"]))
        if res.get("wall_time_s") and res.get("train_time_s") is not None:
            val_s = res.get("epochs_done", 0) * EVAL_COST * _images(cfg, d)[1] / res["images_per_sec"]
            over.append(max(0.0, res["wall_time_s"] - res["train_time_s"] - val_s))
    return ips, over


# ---------------------------------------------------------------- from a study to the rule's inputs
def _slot(jobs: int, device: str | None):
    from cifarbench.study.jobs import device_slots

    slots = device_slots(jobs, device)
    return slots[0], len(slots)


def _run_cfg(spec, model, stage: str, params: dict, device: str | None, slot,
             fallback: bool = False) -> tuple[dict, int | None]:
    cfg = spec.run_config(model, stage, params, fallback=fallback)
    if device:
        cfg = cfg.replace(device=device)
    return cfg.to_dict(), slot.threads or cfg.threads  # the slot's threads, as jobs.apply_slot gives them


def _sweep_s(spec, speeds: Speeds, d, jobs: int, device: str | None) -> float:
    """The sweep's predicted length: every grid point (or trial) for the sweep epochs, ``jobs`` at a time."""
    from cifarbench.study.spec import _space_example, params_of

    slot, lanes = _slot(jobs, device)
    durations = []
    for m in spec.models:
        points = [params_of(p) for p in m.grid] or [_space_example(m.space)] * int(spec.sweep.get("n_trials", 0))
        for p in points:
            cfg, threads = _run_cfg(spec, m, "sweep", p, device, slot)
            train, val = _images(cfg, d)
            durations.append(RUN_OVERHEAD_S + cfg["epochs"] * (train + EVAL_COST * val) / speeds.get(cfg, threads))
    return schedule_s(durations, lanes)


def _final_costs(spec, params: Callable[[str], dict], speeds: Speeds, d, jobs: int, device: str | None,
                 study_dir=None, sweeps: dict | None = None,
                 fallback: frozenset[str] = frozenset()) -> tuple[list[ModelCost], list[dict]]:
    """Each model's ModelCost and its row for study.json; ``fallback``: the models priced with their budget_fallback
    config (a speed setting no sweep run had: its calibration, scaled by the ratio of the study file's configs)."""
    slot, _ = _slot(jobs, device)
    found = []
    for m in spec.models:
        cfg, threads = _run_cfg(spec, m, "final", params(m.name), device, slot)
        calib = speeds.get(cfg, threads)
        ips, over = (_sweep_measured(study_dir, sweeps.get(m.name, []), _key(cfg, threads, d), d)
                     if sweeps else ([], []))
        found.append((m, cfg, calib, ips, over))
    ratios = [statistics.median(ips) / calib for _, _, calib, ips, _ in found if ips]
    scale = statistics.median(ratios) if ratios else 1.0
    for i, (m, cfg, calib, ips, over) in enumerate(found):
        if m.name in fallback:
            cfg, threads = _run_cfg(spec, m, "final", params(m.name), device, slot, fallback=True)
            found[i] = (m, cfg, speeds.get(cfg, threads), [], over)  # the sweep's start-up overhead still holds
    costs, rows = [], []
    total_share = sum(m.budget_share for m in spec.models)
    for m, cfg, calib, ips, over in found:
        if ips:
            speed, source = statistics.median(ips), f"sweep, {len(ips)} run(s)"
        else:
            speed = calib * scale
            source = f"calibration x {scale:.2f} (the sweep/calibration ratio)" if ratios else "calibration"
        train, val = _images(cfg, d)
        overhead = statistics.median(over) if over else RUN_OVERHEAD_S
        views = TTA_VIEWS[cfg.get("tta") or "none"]  # a final with --tta adds its TTA views to the last epoch's
        overhead += views * EVAL_COST * val / speed  # validation pass (the plain view is in the epoch's cost)
        low = min(cfg["epochs"], math.floor(cfg.get("warmup_epochs") or 0) + 1)  # validate: warm-up < epochs
        cost = ModelCost.from_speed(m.name, speed, train, val, overhead_s=overhead, share=m.budget_share,
                                    cap=cfg["epochs"], min_epochs=low)
        costs.append(cost)
        rows.append({"model": m.name, "share": round(m.budget_share / total_share, 4), "calibrated_images_per_sec": calib,
                     "images_per_sec": round(speed, 1), "source": source, "train_images": train, "val_images": val,
                     "epoch_s": round(cost.epoch_s, 2), "overhead_s": round(overhead, 2), "cap": cfg["epochs"],
                     "min_epochs": low, "tta_views": views})
    return costs, rows


def _reserve(rows: list[dict], seeds: int, d, lanes: int = 1) -> float:
    # the test stage evaluates each final plainly and, with --tta, over its extra views in the same pass; it evaluates one final
    # at a time with every lane's cores, so at lanes x a lane's speed (quick study, 2026-11-30: 1:45 measured for
    # its 6 finals with flip TTA, where the speed of one lane predicted 3:08 and lanes x that speed 1:34)
    test = sum(seeds * (d["test"] * (1 + r.get("tta_views", 0)) * EVAL_COST / (lanes * r["images_per_sec"])
                        + TEST_RUN_S) for r in rows)
    return test + RESERVE_S


def _plan(spec, budget_s: float, elapsed_s: float, speeds: Speeds, d, jobs: int, device: str | None,
          params: Callable[[str], dict], study_dir=None, sweeps: dict | None = None) -> dict[str, Any]:
    lanes = _slot(jobs, device)[1]

    def fit(fallback: frozenset[str]):
        costs, rows = _final_costs(spec, params, speeds, d, jobs, device, study_dir, sweeps, fallback)
        reserve = _reserve(rows, len(spec.seeds), d, lanes)
        alloc = allocate(budget_s, elapsed_s, reserve, costs, len(spec.seeds), lanes)
        return costs, rows, reserve, alloc, _record(alloc, costs, rows)

    costs, rows, reserve, alloc, subsets = fit(frozenset())
    # the fallback rule: a model the study file's config gives fewer whole epochs than its budget_fallback's
    # below_epochs (a subset counts as none) trains its finals with the fallback's fields instead
    switch = {m.name: next(r for r in rows if r["model"] == m.name) for m in spec.models if m.budget_fallback
              and (alloc["epochs"][m.name] if not subsets[m.name] else 0) < m.fallback_below}
    if switch:
        from cifarbench.study.spec import _toml_value

        costs, rows, reserve, alloc, subsets = fit(frozenset(switch))
        for r in rows:
            if r["model"] in switch:
                before, m = switch[r["model"]], spec.model(r["model"])
                r["fallback"] = {"fields": dict(m.budget_fallback), "below_epochs": m.fallback_below,
                                 # as the study file writes them, for the log and the report (which reads files)
                                 "as_toml": ", ".join(f"{k} = {_toml_value(v)}" for k, v in m.budget_fallback.items()),
                                 "file_epochs": before["epochs"], "file_train_subset": before.get("train_subset"),
                                 "file_images_per_sec": before["images_per_sec"]}
    return {"elapsed_s": round(elapsed_s, 1), "reserve_s": round(reserve, 1), "final_s": round(alloc["final_s"], 1),
            "predicted_final_s": round(alloc["predicted_final_s"], 1),
            "predicted_total_s": round(elapsed_s + alloc["predicted_final_s"] + reserve, 1), "fits": alloc["fits"],
            "lanes": lanes, "seeds": len(spec.seeds), "epochs": alloc["epochs"], "train_subset": subsets,
            "fallback": list(switch), "models": rows}  # switch is in the study's model order


def _record(alloc: dict, costs: list[ModelCost], rows: list[dict]) -> dict[str, int | None]:
    """Write an allocation's epochs, training images and predicted run time into the models' rows; return
    {model: train_subset}, None where an epoch is the whole training set."""
    subsets = {}
    for c in costs:
        r = next(r for r in rows if r["model"] == c.name)
        e, f = alloc["epochs"][c.name], alloc["fraction"][c.name]
        subsets[c.name] = None if f >= 1.0 else max(1, math.floor(f * r["train_images"]))
        r.update(epochs=e, train_subset=subsets[c.name], predicted_run_s=round(c.run_s(e, f), 1))
    return subsets


def _first_point(spec) -> Callable[[str], dict]:
    """Before the sweep the winner is unknown: predict with the first grid point (the speed settings rarely vary)."""
    from cifarbench.study.spec import _space_example, params_of

    return lambda name: (params_of(spec.model(name).grid[0]) if spec.model(name).grid
                         else _space_example(spec.model(name).space))


# ---------------------------------------------------------------- the study's hooks
def prepare(state, flag: str | None, jobs: int, device: str | None) -> dict | None:
    """At the study's start: record the budget, calibrate, and stop now if the study cannot fit it."""
    spec, b = state.spec, state.data.get("budget")
    given = resolve(spec, flag)
    if b and b.get("allocation"):
        if given and given[0] != b["budget_s"]:
            log.warn(f"budget {given[1]}: ignored; this study's finals were planned for {b['budget']} and keep their "
                     "epochs (an interrupted run resumes only with the same config); use another --output for a new budget")
        return b
    if given is None:
        return b
    if state.data["stages"]["final"] != "pending":
        log.warn(f"budget {given[1]}: ignored; this study's finals already started with the study file's epochs")
        return None
    b = state.data.setdefault("budget", {"calibration": []})
    b.update(budget=given[1], budget_s=given[0], rule=RULE)
    d = _dataset(spec, state.data.get("data"))
    speeds = Speeds(b["calibration"], d, device)
    sweep_s = 0.0 if state.data["stages"]["sweep"] == "done" else _sweep_s(spec, speeds, d, jobs, device)
    pred = _plan(spec, given[0], state.wall_s() + sweep_s, speeds, d, jobs, device, _first_point(spec))
    b["predicted"] = {"sweep_s": round(sweep_s, 1), **pred}
    state.save()
    for line in format_lines(b)[1:]:
        log.info(line)
    if not pred["fits"] and state.data["stages"]["sweep"] == "pending":
        msg = (f"budget {given[1]}: too short for study {spec.name} on this machine: the sweep takes about "
               f"{clock(sweep_s)}, one final epoch per model (on {MIN_FRACTION:.0%} of the training images) "
               f"{clock(pred['predicted_final_s'])} and the test and report "
               f"{clock(pred['reserve_s'])} (calibrated; {clock(pred['predicted_total_s'])} in all)")
        if pred["elapsed_s"] > given[0]:  # not even the sweep: nothing useful can come of starting
            raise CifarbenchError(msg + "; give a longer budget or a smaller sweep")
        log.warn(msg + "; the finals will get their minimum epochs unless the sweep runs faster than calibrated")
    elif any(pred["train_subset"].values()) and state.data["stages"]["sweep"] == "pending":
        log.warn(f"budget {given[1]}: one final epoch per model on all the training images does not fit on this "
                 "machine (calibrated); unless the sweep runs faster, the finals will train on stratified subsets: "
                 + ", ".join(f"{m} {n:,}" for m, n in pred["train_subset"].items() if n))
    return b


def final_epochs(state, jobs: int, device: str | None, params: Callable[[str], dict]) -> dict[str, int] | None:
    """The finals' epochs per model under the budget, decided now (after the sweep) or read back; None: no budget."""
    b = state.data.get("budget")
    if not b:
        return None
    if not b.get("allocation"):
        spec = state.spec
        d = _dataset(spec, state.data.get("data"))
        speeds = Speeds(b.setdefault("calibration", []), d, device)
        sweeps = {name: m.get("sweep") or [] for name, m in state.data["models"].items()}
        b["allocation"] = _plan(spec, b["budget_s"], state.wall_s(), speeds, d, jobs, device, params, state.dir, sweeps)
        state.save()
        a = b["allocation"]
        log.info(f"budget {b['budget']}: {clock(a['elapsed_s'])} used, {clock(a['final_s'])} for the finals: "
                 + ", ".join(f"{r['model']} {_epochs_text(r['epochs'], r.get('train_subset'))}{fallback_text(r)} "
                             f"({r['images_per_sec']:.0f} img/s, {r['source']})" for r in a["models"])
                 + f"; predicted end {clock(a['predicted_total_s'])}")
        if any(a.get("train_subset", {}).values()):
            log.warn(f"budget {b['budget']}: one final epoch per model on all the training images does not fit; the "
                     "finals train on a stratified subset (train_subset), reported as such")
        if not a["fits"]:
            log.warn(f"budget {b['budget']}: even one epoch per model on {MIN_FRACTION:.0%} of the training images "
                     f"overruns it: predicted end {clock(a['predicted_total_s'])}")
    return dict(b["allocation"]["epochs"])


def fallback_models(state) -> set[str]:
    """The models whose finals the budget moved to their budget_fallback (study.json, decided after the sweep)."""
    return set(((state.data.get("budget") or {}).get("allocation") or {}).get("fallback") or [])


def fallback_text(row: dict) -> str:
    """' with stem = "imagenet" (budget_fallback: the study file's config got 1 epoch(s), fewer than 2)' for a row
    the fallback moved, else ''."""
    fb = row.get("fallback")
    if not fb:
        return ""
    return (f" with {fb['as_toml']} (budget_fallback: the study file's config got "
            f"{_epochs_text(fb['file_epochs'], fb.get('file_train_subset'))}, fewer than {fb['below_epochs']})")


def replan(state, model: str, in_flight: list[tuple[str, float]]) -> dict[str, int | None] | None:
    """Step 3 of the rule: ``model``'s finals' {"epochs", "train_subset"}, fixed when its first final is about to
    start; None: no budget.

    ``in_flight``: (model, time.monotonic() at its start) of each final still running. The first model, or one
    with no finished final of an earlier model to measure from, keeps the allocation's epochs. Otherwise the
    finished finals' speed against the speed the allocation used (median ratio) rescales the epoch cost of
    this model and those after it, and the allocation runs again on them, for the time left, with the lanes
    still taken by the runs in flight. The decision is stored (study.json: the allocation's "fixed" and
    "replans") and never made again: a resumed final keeps its epochs, as the engine requires.
    """
    b = state.data.get("budget") or {}
    a = b.get("allocation")
    if not a:
        return None
    fixed = a.setdefault("fixed", [])
    subsets = a.setdefault("train_subset", {})
    if model in fixed:
        return {"epochs": a["epochs"][model], "train_subset": subsets.get(model)}
    names = [m.name for m in state.spec.models]
    started = any((state.dir / e["run"] / "config.json").exists() for e in state.model(model).get("finals") or [])
    rows = {r["model"]: r for r in a["models"]}
    later = names[names.index(model):]
    ratios, from_sweep = [], []
    for name in names[:names.index(model)]:
        for e in state.model(name).get("finals") or []:
            try:
                ips = read_json(state.dir / e["run"] / "results.json").get("images_per_sec")
            except (CifarbenchError, KeyError):
                continue
            if e.get("state") == "complete" and ips:
                ratios.append(float(ips) / rows[name]["images_per_sec"])
                if rows[name]["source"].startswith("sweep"):
                    from_sweep.append(ratios[-1])
    # The ratio stands for the host's drift since the sweep. A model priced from its calibration alone (a fallback
    # config no sweep ran) also carries that few-step measurement's own error (quick study run 13: ResNet18's
    # fallback ran at 0.89x its calibration while the small models' finals ran 1.2x faster than their sweeps),
    # so its finals count only when no model priced from its sweep has finished one.
    ratios = from_sweep or ratios
    if ratios and not started:  # a run that started keeps its config (an older study.json has no "fixed")
        ratio, now, elapsed = statistics.median(ratios), time.monotonic(), state.wall_s()
        busy = [rows[m]["predicted_run_s"] / ratio - (now - t0) for m, t0 in in_flight]
        costs = [ModelCost.from_speed(n, rows[n]["images_per_sec"] * ratio, rows[n]["train_images"],
                                      rows[n]["val_images"], overhead_s=rows[n]["overhead_s"], share=rows[n]["share"],
                                      cap=rows[n]["cap"], min_epochs=rows[n].get("min_epochs", 1)) for n in later]
        alloc = allocate(b["budget_s"], elapsed, a["reserve_s"], costs, a["seeds"], a["lanes"], busy)
        before = (a["epochs"][model], subsets.get(model))
        now_subsets = _record(alloc, costs, list(rows.values()))
        a.setdefault("replans", []).append(
            {"model": model, "elapsed_s": round(elapsed, 1), "speed_ratio": round(ratio, 3),
             "in_flight_s": [round(max(0.0, x), 1) for x in busy], "epochs_before": before[0],
             "train_subset_before": before[1], "epochs": dict(alloc["epochs"]), "train_subset": now_subsets,
             "predicted_total_s": round(elapsed + alloc["predicted_final_s"] + a["reserve_s"], 1),
             "fits": alloc["fits"]})
        a["epochs"].update(alloc["epochs"])  # the later models' figures are provisional until their own re-plan
        subsets.update(now_subsets)
        log.info(f"budget {b['budget']}: {model}'s finals planned again at {clock(elapsed)}: the finals so far ran at "
                 f"{ratio:.2f}x the speed the plan used; {model} {_epochs_text(*before)} -> "
                 f"{_epochs_text(alloc['epochs'][model], subsets[model])}; "
                 f"predicted end {clock(a['replans'][-1]['predicted_total_s'])}")
    fixed.append(model)
    state.save()
    return {"epochs": a["epochs"][model], "train_subset": subsets.get(model)}


def _epochs_text(epochs: int, subset: int | None) -> str:
    return f"{epochs} epoch(s)" + (f" on {subset:,} images" if subset else "")


def dry_run(spec, flag: str | None, jobs: int, device: str | None) -> dict | None:
    """The budget plan for ``--dry-run``: calibration, predicted sweep and finals (decided for real after the sweep)."""
    given = resolve(spec, flag)
    if given is None:
        return None
    d = _dataset(spec, None)
    b: dict[str, Any] = {"budget": given[1], "budget_s": given[0], "rule": RULE, "calibration": []}
    speeds = Speeds(b["calibration"], d, device)
    t0 = time.perf_counter()
    sweep_s = _sweep_s(spec, speeds, d, jobs, device)
    pred = _plan(spec, given[0], time.perf_counter() - t0 + sweep_s, speeds, d, jobs, device, _first_point(spec))
    b["predicted"] = {"sweep_s": round(sweep_s, 1), **pred}
    b["lines"] = format_lines(b)
    return b


def format_lines(b: dict) -> list[str]:
    """The budget plan in a few lines (the dry run prints them, a study logs them)."""
    p = b.get("allocation") or b.get("predicted") or {}
    out = [f"budget {b['budget']} ({clock(b['budget_s'])}):"]
    if b.get("calibration"):
        out.append("  calibrated: " + ", ".join(f"{c['model']} {c['images_per_sec']:.0f} img/s "
                                                f"({c['threads_used']} thread(s), batch {c['batch_size']})"
                                                for c in b["calibration"]))
    if p:
        sweep = f"sweep {clock(b['predicted']['sweep_s'])}, " if "sweep_s" in b.get("predicted", {}) else ""
        out.append(f"  predicted: {sweep}{p['lanes']} run(s) side by side, finals {clock(p['predicted_final_s'])} "
                   f"({clock(p['final_s'])} left for them), test and report {clock(p['reserve_s'])}, "
                   f"end {clock(p['predicted_total_s'])}")
        out.append("  final epochs (decided after the sweep from its measured speeds, and again as each model's "
                   "finals start): " + ", ".join(
                       f"{r['model']} {r['epochs']}" + (f" on {r['train_subset']:,} of {r['train_images']:,} images"
                                                        if r.get("train_subset") else "") + f" (cap {r['cap']})"
                       + fallback_text(r)
                       for r in p["models"]))
        if not p["fits"]:
            out.append(f"  does not fit: even one final epoch per model on {MIN_FRACTION:.0%} of the training images "
                       "overruns the budget")
    return out
