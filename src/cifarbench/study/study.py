"""``cifarbench study``: sweep, select on validation, retrain the winners with several seeds, test, report.

Stages (each recorded in STUDY/study.json as pending | running | done):

1. sweep  - every grid point of every model for the sweep epochs (``sweep.py``, Optuna); the winner of
            each model is the point with the best *validation* accuracy.
2. final  - each winner retrained for the final epochs, once per seed (under a budget, the epochs that
            ``budget.py`` chose after the sweep, kept in study.json).
3. test   - the finals' best checkpoints evaluated on the test split: mean +- sample std over seeds.
4. report - ``cifarbench.report.render_report``.

The test split is read in stage 3 only: every sweep and final run has ``eval_test = False``, so the
engine never loads it, and selection reads ``best_val_acc``.

Resume: the study folder is the state. Rerunning the same command skips finished runs (their
results.json says "finished"), resumes interrupted ones from last.pt (every run has resume="auto"),
and re-queues sweep trials that an interrupt or a dead worker left behind.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from cifarbench import log
from cifarbench.config import TrainConfig, read_json, write_json
from cifarbench.errors import CifarbenchError
from cifarbench.study import budget as bg
from cifarbench.study import sweep as sw
from cifarbench.study.jobs import cpu_jobs, device_slots, run_side_by_side
from cifarbench.study.spec import StudySpec, load_spec, override_flags

STAGES = ("sweep", "final", "test", "report")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _final_train(cfg: TrainConfig) -> dict:
    from cifarbench.engine import train

    return train(cfg)


def _evaluate(run_dir: str, split: str, data_dir: str | None = None, device: str = "auto") -> dict:
    from cifarbench.engine import evaluate_run

    return evaluate_run(run_dir, split=split, data_dir=data_dir, device=device)


def _results(run_dir: Path) -> dict[str, Any]:
    """A run's results.json, or {} when it has not written one (not started, or an unreadable file)."""
    try:
        return read_json(run_dir / "results.json")
    except CifarbenchError:
        return {}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); the std of a single value is 0."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# ---------------------------------------------------------------- the study folder
class StudyState:
    """study.json, written atomically after every change so a crash never loses more than one run."""

    def __init__(self, study_dir: Path, spec: StudySpec):
        self.dir, self.spec = study_dir, spec
        self.path = study_dir / "study.json"
        config = json.loads(json.dumps(spec.raw, default=str))
        if self.path.exists():
            self.data = read_json(self.path)
            old = self.data.get("config") or {}
            if old != config and {**old, "override": None} == {**config, "override": None}:
                raise CifarbenchError(f"{study_dir}: holds study {spec.name!r} run with {override_flags(old.get('override', {}))}, "
                                      f"now {override_flags(config.get('override', {}))}; rerun with the same flags "
                                      "to resume it, or use another --output")
            if old != config:
                raise CifarbenchError(f"{study_dir}: holds study {self.data.get('name')!r} with a different config; "
                                      "use another --output (or delete that folder to start over)")
        else:
            study_dir.mkdir(parents=True, exist_ok=True)
            self.data = {"name": spec.name, "created": _now(), "updated": _now(), "config": config,
                         "dataset": spec.dataset, "description": spec.description, "notes": spec.notes,
                         "stages": {s: "pending" for s in STAGES},
                         "models": {m.name: {"label": m.label, "paper_test_acc": m.paper_test_acc, "sweep": [],
                                             "winner": None, "finals": [], "test": None} for m in spec.models}}
        (study_dir / "figures").mkdir(exist_ok=True)
        toml = study_dir / "study.toml"
        if not toml.exists() and spec.text:
            toml.write_text(spec.text)  # the file as written, comments included
        self._t0, self._wall0 = time.monotonic(), float(self.data.get("wall_s") or 0.0)

    def wall_s(self) -> float:
        """The study's wall time: this session so far plus the earlier ones (the time between them not counted)."""
        return self._wall0 + time.monotonic() - self._t0

    def stage(self, name: str, value: str) -> None:
        self.data["stages"][name] = value
        times = self.data.setdefault("stage_wall_s", {}).setdefault(name, {})  # on the wall_s clock, for a budget
        if value == "running":
            times.setdefault("start", round(self.wall_s(), 1))
        elif value == "done":
            times["end"] = round(self.wall_s(), 1)
        self.save()

    def model(self, name: str) -> dict[str, Any]:
        return self.data["models"][name]

    def save(self) -> None:
        self.data["updated"] = _now()
        self.data["wall_s"] = round(self.wall_s(), 1)
        write_json(self.path, self.data)


def _environment(device: str | None, jobs: int) -> dict[str, Any]:
    try:
        from cifarbench.engine.env import environment, resolve_device

        env = environment(resolve_device(device or "auto"))
    except ImportError as e:  # the engine is optional for reading a study, not for running one
        import platform, socket, sys

        from cifarbench.cpus import usable_cpus

        log.warn(f"environment record incomplete ({e})")
        env = {"python": sys.version.split()[0], "device": device or "auto", "hostname": socket.gethostname(),
               "platform": platform.platform(), "threads": usable_cpus(), "date": _now()}
    env["jobs"] = jobs
    if jobs > 1:
        env["threads_per_job"] = device_slots(jobs, device)[0].threads
    return env


def _data_overview(spec: StudySpec, study_dir: Path, data_dir: str | None) -> dict[str, Any] | None:
    """Images per class and split, the class-distribution chart and the sample grid, before any training.

    Loading the data here also makes a missing or broken dataset fail now, not after the sweep.
    The test column counts labels only; no model ever sees a test image before stage 3.
    """
    try:
        from cifarbench.data import load_dataset
        from cifarbench.data.inspect import count_rows, plot_class_distribution, plot_samples
    except ImportError as e:
        log.warn(f"no data overview: {e}")
        return None
    cfg = spec.run_config(spec.models[0], "final", data_dir=data_dir)
    splits = load_dataset(spec.dataset, data_dir=data_dir, val_size=cfg.val_size, seed=0)  # the engine's split seed
    out = {"rows": count_rows(splits), "classes": list(splits.classes), "image_size": splits.image_size,
           "channels": splits.channels, "files": []}
    figures = study_dir / "figures"
    try:
        for plot, name in ((plot_class_distribution, "data_distribution.png"), (plot_samples, "data_samples.png")):
            plot(splits, figures / name)
            out["files"].append(f"figures/{name}")
    except Exception as e:  # a plot is not worth stopping a study for
        log.warn(f"data figures not written ({type(e).__name__}: {e})")
    return out


def _check_models(spec: StudySpec) -> None:
    try:
        from cifarbench.models import list_models
    except ImportError:
        return
    known = set(list_models())
    for i, m in enumerate(spec.models):
        if m.name not in known:
            raise CifarbenchError(f"{spec.source}: models[{i}]: unknown model {m.name!r} (see `cifarbench models`)")


# ---------------------------------------------------------------- stages
def _stage_sweep(state: StudyState, storage: str, jobs: int, data_dir, device, train_fn, poll) -> None:
    spec = state.spec
    state.stage("sweep", "running")
    names = sw.create_sweeps(spec, storage, state.dir)
    try:
        sw.run_workers(storage, names, jobs, output=str(state.dir), data_dir=data_dir, device=device,
                       train_fn=train_fn, poll=poll)
    finally:  # record what is known, also when interrupted
        for m in spec.models:
            entries = sw.sweep_entries(storage, spec, m.name, state.dir)
            win = sw.select_winner(entries)
            for e in entries:
                e["winner"] = bool(win) and e["name"] == win["name"]
            state.model(m.name).update(sweep=entries, winner=win["name"] if win else None)
        state.save()
    missing = [m.name for m in spec.models if not state.model(m.name)["winner"]]
    if missing:
        errors = [e["error"] for m in missing for e in state.model(m)["sweep"] if e.get("error")]
        raise CifarbenchError(f"{state.dir}: no sweep run of {', '.join(missing)} finished"
                              + (f" (first error: {errors[0]})" if errors else "")
                              + "; fix the cause and rerun to retry the failed points")
    state.stage("sweep", "done")


def _winner_params(state: StudyState, model: str) -> dict[str, Any]:
    m = state.model(model)
    for e in m["sweep"]:
        if e["name"] == m["winner"]:
            return dict(e["params"])
    raise CifarbenchError(f"{state.path}: {model} has no sweep winner; rerun the study to finish its sweep")


def _stage_final(state: StudyState, jobs: int, data_dir, device, train_fn) -> None:
    spec = state.spec
    state.stage("final", "running")
    budgeted = bg.final_epochs(state, jobs, device, lambda name: _winner_params(state, name)) is not None
    fallback = bg.fallback_models(state)  # finals the budget moved to their budget_fallback config
    todo = []  # ((model, seed), config) of each final still to run, its epochs set when it starts (run_finals)
    for m in spec.models:
        params = _winner_params(state, m.name)
        entries = []
        for seed in spec.seeds:
            rel = f"final/{m.name}/seed{seed}"
            res = _results(state.dir / rel)
            entry = {"seed": seed, "run": rel, "config": state.model(m.name)["winner"], "params": params,
                     "state": "pending", "val_acc": None, "test_acc": None}
            if res.get("status") == "finished":
                entry.update(state="complete", val_acc=res.get("best_val_acc"), test_acc=res.get("test_acc"))
            else:
                cfg = spec.run_config(m, "final", params, seed=seed, output=str(state.dir / rel), data_dir=data_dir,
                                      fallback=m.name in fallback)
                if device:
                    cfg = cfg.replace(device=device)
                todo.append(((m.name, seed), cfg))
            entries.append(entry)
        state.model(m.name)["finals"] = entries
    state.save()
    if todo:
        log.info(f"final: {len(todo)} run(s), {jobs} at a time")
    in_flight: dict[tuple[str, int], float] = {}

    def run_finals():
        """The finals in order, each yielded when a lane is free: a model's epochs under a budget are fixed
        (bg.replan) only when its first final starts, from the finished finals' speed and the time left."""
        decided: dict[str, dict | None] = {}
        for key, cfg in todo:
            if budgeted and key[0] not in decided:
                decided[key[0]] = bg.replan(state, key[0], [(k[0], t0) for k, t0 in in_flight.items()])
            if decided.get(key[0]):  # the budget's choice, stored in study.json: the same on every resume
                subset = decided[key[0]]["train_subset"]
                cfg = cfg.replace(epochs=decided[key[0]]["epochs"], **({"train_subset": subset} if subset else {}))
            in_flight[key] = time.monotonic()
            yield key, cfg.validate()

    runs = run_side_by_side(train_fn or _final_train, run_finals(), device_slots(jobs, device))
    with contextlib.closing(runs):  # on an interrupt, close it at once: the queued runs are cancelled
        for (model, seed), res, err in runs:
            in_flight.pop((model, seed), None)
            entry = next(e for e in state.model(model)["finals"] if e["seed"] == seed)
            if err is not None:
                if sw.is_interrupt(err):
                    raise err
                entry.update(state="failed", error=f"{type(err).__name__}: {err}")
                log.warn(f"final {model} seed {seed} failed: {err}")
            else:
                ok = res.get("status") == "finished"
                entry.update(state="complete" if ok else "failed", val_acc=res.get("best_val_acc"),
                             status=res.get("status"))
            state.save()
    failed = [f"{m}/seed{e['seed']}" for m, d in state.data["models"].items() for e in d["finals"] if e["state"] != "complete"]
    state.stage("final", "done" if not failed else "running")
    if failed:
        log.warn(f"final runs not complete: {', '.join(failed)}; rerun the study to retry them")


def _stage_test(state: StudyState, data_dir, device, evaluate_fn) -> None:
    state.stage("test", "running")
    evaluate_fn = evaluate_fn or _evaluate
    for name, m in state.data["models"].items():
        for e in m["finals"]:
            if e["state"] != "complete":
                continue
            if e.get("test_acc") is None:  # already tested runs keep their number (resume)
                res = evaluate_fn(str(state.dir / e["run"]), "test", data_dir=data_dir, device=device or "auto")
                e["test_acc"] = res["acc"]
                state.save()
        done = [e for e in m["finals"] if e["state"] == "complete" and e.get("test_acc") is not None]
        t_mean, t_std = mean_std([e["test_acc"] for e in done])
        v_mean, v_std = mean_std([e["val_acc"] for e in done if e.get("val_acc") is not None])
        m["test"] = {"mean": t_mean, "std": t_std, "n": len(done), "val_mean": v_mean, "val_std": v_std} if done else None
        if done:
            log.info(f"{name}: test {t_mean:.2f} +- {t_std:.2f} % over {len(done)} seed(s) (val {v_mean:.2f})")
    state.stage("test", "done")


def _stage_report(state: StudyState) -> list[str]:
    state.stage("report", "running")
    try:
        from cifarbench.report import render_report

        files = [str(p) for p in render_report(state.dir)]
    except Exception as e:  # the numbers are in study.json; `cifarbench report STUDY` can rebuild it
        log.warn(f"report not written ({type(e).__name__}: {e}); run `cifarbench report {state.dir}` later")
        state.stage("report", "pending")
        return []
    state.stage("report", "done")
    return files


# ---------------------------------------------------------------- entry points
def plan_study(spec: StudySpec, device: str | None = None, measure: bool = True, budget: str | None = None,
               jobs: int | None = None) -> dict[str, Any]:
    """The runs a study would make, a measured estimate of its time on this device, and its budget plan."""
    from cifarbench.study.plan import estimate, plan

    out: dict[str, Any] = {"ok": True, "dry_run": True, "name": spec.name, "description": spec.description,
                           "target": spec.target, "notes": spec.notes, "deviations": spec.deviations(), "plan": plan(spec)}
    if measure:
        try:
            out["estimate"] = estimate(spec, device)
        except Exception as e:  # an estimate is a courtesy; the plan is the point
            log.warn(f"no time estimate ({type(e).__name__}: {e})")
        out["budget"] = bg.dry_run(spec, budget, spec.jobs if jobs is None else jobs, device)
    return out


def run_study(config_or_preset: str | Path, output: str | Path | None = None, data_dir: str | None = None,
              jobs: int | None = None, device: str | None = None, dry_run: bool = False, storage: str | None = None,
              train_fn: Callable | None = None, evaluate_fn: Callable | None = None,
              poll: float | None = None, override: dict[str, Any] | None = None,
              budget: str | None = None) -> dict[str, Any]:
    """Run (or resume) a study; returns study.json's content plus "ok" (every model tested on every seed).

    ``train_fn(cfg, on_epoch=None) -> results`` and ``evaluate_fn(run_dir, split, data_dir, device)``
    replace the engine (tests); with ``jobs`` > 1 they must be module-level functions.
    ``override``: keys of the study's [override] table (``epochs_scale``, ``max_epochs``, ``dataset``,
    TrainConfig fields), set by `cifarbench study`'s flags and reported as deviations from the study file.
    ``budget``: wall time to fit the finals' epochs to (30m, 1h30m, 1800), over the study file's ``budget``.
    """
    from cifarbench.study.memory import check_packing, study_configs

    spec = load_spec(config_or_preset).with_override(override)
    jobs = spec.jobs if jobs is None else jobs  # the study's own setting unless the caller says otherwise
    if jobs < 1:
        raise CifarbenchError(f"--jobs {jobs}: must be at least 1")
    jobs = cpu_jobs(jobs, device)  # on a CPU, no more side by side than the usable cores (taskset)
    spec = _amp_where_it_pays(spec, device)
    bg.resolve(spec, budget)  # a bad --budget fails now, before any work
    # before anything is written: a packing that cannot fit is refused now, also in a dry run
    packing = check_packing(study_configs(spec), device_slots(jobs, device)) if jobs > 1 else None
    if dry_run:
        return plan_study(spec, device, budget=budget, jobs=jobs)
    _check_models(spec)
    study_dir = Path(output or Path("studies") / spec.name).resolve()
    state = StudyState(study_dir, spec)
    storage = storage or sw.default_storage(study_dir)
    state.data["storage"] = sw.redact(storage)
    state.data["env"] = _environment(device, jobs)
    state.data.update(deviations=spec.deviations(), epochs=spec.stage_epochs(), memory=packing)
    for d in state.data["deviations"]:
        log.info(f"deviation from {Path(spec.source).name}: {d}")
    log.info(f"study {spec.name} in {study_dir} ({', '.join(f'{s} {v}' for s, v in state.data['stages'].items())})")
    if spec.target == "gpu" and state.data["env"].get("device", "cpu").startswith("cpu"):
        _warn_cpu(spec, device)
    if "data" not in state.data:
        overview = _data_overview(spec, study_dir, data_dir)
        if overview is not None:
            state.data["data"] = overview
    state.save()
    bg.prepare(state, budget, jobs, device)  # calibrates once; stops now if the budget cannot hold the study

    try:
        _stage_sweep(state, storage, jobs, data_dir, device, train_fn, poll)
        _stage_final(state, jobs, data_dir, device, train_fn)
        _stage_test(state, data_dir, device, evaluate_fn)
    except (KeyboardInterrupt, CifarbenchError) as e:
        if not sw.is_interrupt(e):
            raise
        from cifarbench.engine import Interrupted

        # a run's own message names `cifarbench train --resume`; a study resumes as a whole
        stage = next((k for k, v in state.data["stages"].items() if v != "done"), "?")
        state.save()  # the wall time so far, which a budget counts on resume
        raise Interrupted(f"study {spec.name} interrupted in its {stage} stage; finished runs are kept and "
                          f"interrupted ones continue from their checkpoints: rerun the same command to resume "
                          f"({study_dir})") from None
    files = _stage_report(state)
    seeds = len(spec.seeds)
    ok = all((m.get("test") or {}).get("n") == seeds for m in state.data["models"].values())
    return {**state.data, "ok": ok, "files": files, "study_dir": str(study_dir)}


def _amp_where_it_pays(spec: StudySpec, device: str | None) -> StudySpec:
    """The study with ``amp = false`` (an [override], reported as a deviation) where this machine has no bf16.

    A study file's ``amp = true`` is a speed setting chosen on a machine with bf16 units (the quick preset's
    ResNet18: 2.2x on AVX-512 BF16); the engine refuses --amp where bf16 would be slower than fp32 (an AMD EPYC
    without AVX-512, a GPU without bf16), which would fail every such run of the study. Its runs train in fp32
    instead, their config.json says so, and a resume on the same machine makes the same choice.
    """
    from cifarbench.engine.env import amp_unsupported, resolve_device
    from cifarbench.study.spec import _points

    if spec.override.get("amp") is False:
        return spec
    uses = [m.name for m in spec.models
            if any(spec.run_config(m, s, p).amp for p in _points(m) for s in ("sweep", "final"))]
    reason = amp_unsupported(resolve_device(device or "auto")) if uses else None
    if not reason:
        return spec
    log.warn(f"amp: {reason}: the runs of {', '.join(uses)} train in fp32 (amp = false, reported as a deviation "
             "from the study file)")
    return spec.with_override({"amp": False})


def _warn_cpu(spec: StudySpec, device: str | None) -> None:
    from cifarbench.study.plan import estimate, format_duration

    msg = f"study {spec.name!r} is meant for a GPU"
    try:
        est = estimate(spec, device)
        msg += f"; on this device ({est['device_name']}) it would take about {format_duration(est['seconds'])}"
    except Exception as e:
        msg += f" (no estimate: {type(e).__name__}: {e})"
    log.warn(msg)
