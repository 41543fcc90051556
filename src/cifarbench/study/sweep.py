"""The sweep: one Optuna study per model, shared by any number of workers on any machines.

This is the only sweep implementation: ``cifarbench study`` runs its stage 1 through it (with its
workers in-process or as local processes), ``cifarbench sweep`` creates the Optuna studies and starts N
local workers, and ``cifarbench worker`` joins from anywhere that reaches the storage.

Storages: see ``storage.py`` (SQLite by default, PostgreSQL, MySQL, a journal file).

Exactly once. Optuna's GridSampler does not promise it: its docs say that with concurrent workers
"different workers will occasionally suggest the same parameter configuration". So a grid is not
sampled at all: ``create_sweeps`` enqueues one WAITING trial per grid point, and a worker claims a
trial by moving it WAITING -> RUNNING with ``storage.set_trial_state_values``, which succeeds for one
caller only: a row lock (SELECT ... FOR UPDATE) on PostgreSQL/MySQL, the order of the log on a
journal. SQLite ignores FOR UPDATE and Python's sqlite3 reads outside the write transaction, so two
processes could both see WAITING; there every claim also holds an exclusive file lock next to the
database (SQLite lives on one machine, so a file lock is a complete mutex). Workers never create a
trial for a grid (``study.ask`` would, when the queue is empty), so no point runs twice; a trial
that still finds its point taken (two coordinators enqueueing at once) is failed as a duplicate before
it trains. Search spaces (sampler "tpe") create trials with ``study.ask`` (Optuna's default sampler,
TPE) up to ``n_trials``.

A worker that dies. Its trial is failed and re-queued by the next worker that looks (``liveness.py``:
heartbeats, or at once when the dead worker ran on the same machine), so the point is claimed again
and its run resumes from the dead worker's last checkpoint (the run folder is the same: it is named
after the grid point). An interrupted run (Ctrl-C, SIGTERM) is failed and re-queued at once. Workers
wait while other workers' trials are running, so a surviving worker picks up a dead one's trial.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from cifarbench import log
from cifarbench.errors import CifarbenchError
from cifarbench.study.jobs import Slot, apply_slot, device_slots, spawn_context
from cifarbench.study.liveness import Liveness
from cifarbench.study.spec import StudySpec, load_spec, params_of, parse_spec
from cifarbench.study.storage import (claim_lock, default_storage, open_storage, optuna_module as _optuna, redact,
                                      retrying)

__all__ = ["create_sweeps", "run_worker", "start_workers", "run_workers", "run_sweep", "sweep_entries",
           "select_winner", "study_name", "open_storage", "default_storage"]

ATTR = "cifarbench"          # study user attr holding the spec, so a bare worker knows what to run
DEFAULT_HEARTBEAT = 10       # seconds between heartbeats of a running trial
DEFAULT_GRACE = 60           # a RUNNING trial with no heartbeat for this long belongs to a dead worker
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "pending"}


def study_name(spec: StudySpec, model: str) -> str:
    return f"{spec.name}/{model}"


# ---------------------------------------------------------------- creating the sweeps
def _queue_only_sampler():
    """The sampler of a grid sweep: never asked, because every grid trial is enqueued with its point fixed.

    Not Optuna's GridSampler: it picks points itself (and, by its docs, twice under concurrent workers),
    and its after_trial assumes trials it assigned (it calls Study.stop, which raises outside optimize).
    Raising here makes a trial created outside the queue a loud bug instead of a silent duplicate.
    """
    optuna = _optuna()

    class QueueOnlySampler(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, param_name, param_distribution):
            raise RuntimeError(f"grid sweep: trial {trial.number} was not enqueued (param {param_name!r})")

    return QueueOnlySampler()


def _sampler(spec: StudySpec):
    optuna = _optuna()
    if spec.sampler == "grid":
        return _queue_only_sampler()
    return optuna.samplers.TPESampler()  # Optuna's default sampler


def _pruner(spec: StudySpec):
    optuna = _optuna()
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(spec.sweep.get("pruner_startup_trials", 2)),
                                           n_warmup_steps=int(spec.sweep.get("pruner_warmup_epochs", 1)))
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.scale_epochs(int(spec.sweep["epochs"])))
    return optuna.pruners.NopPruner()


def _spec_attr(spec: StudySpec, model: str, study_dir: Path) -> dict[str, Any]:
    return {"spec": json.loads(json.dumps(spec.raw, default=str)), "source": spec.source, "model": model,
            "study_dir": str(Path(study_dir).resolve())}


def create_sweeps(spec: StudySpec, storage_url: str, study_dir: str | Path) -> list[str]:
    """Create (or load) one Optuna study per model and queue every grid point that has no live trial.

    Idempotent: a rerun queues only the points whose every trial failed, so finished points are kept and
    failed ones are tried again.
    """
    optuna = _optuna()
    storage = open_storage(storage_url)
    names = []
    for m in spec.models:
        name = study_name(spec, m.name)
        study = retrying(optuna.create_study, study_name=name, storage=storage, direction="maximize",
                         load_if_exists=True, sampler=_sampler(spec), pruner=_pruner(spec))
        mine = _spec_attr(spec, m.name, Path(study_dir))
        theirs = study.user_attrs.get(ATTR)
        if theirs is None:
            study.set_user_attr(ATTR, mine)
        elif theirs["spec"] != mine["spec"]:
            raise CifarbenchError(f"--storage {redact(storage_url)}: study {name!r} exists with a different config; "
                                  "use another study name, storage or study folder")
        if spec.sampler == "grid":
            with claim_lock(storage_url):
                live = {t.user_attrs.get("point") for t in study.get_trials(deepcopy=False)
                        if t.state.name in ("WAITING", "RUNNING", "COMPLETE", "PRUNED")}
                for i, point in enumerate(m.grid):
                    if i not in live:
                        study.enqueue_trial({"config": i}, user_attrs={"point": i, "config": point["name"]})
        names.append(name)
    return names


def is_interrupt(e: BaseException) -> bool:
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
        return True
    try:
        from cifarbench.engine import Interrupted
    except ImportError:
        return False
    return isinstance(e, Interrupted)


class _Sweep:
    """One model's Optuna study as one worker sees it."""

    def __init__(self, storage_url: str, name: str):
        optuna = _optuna()
        plain = open_storage(storage_url)
        try:
            attrs = optuna.load_study(study_name=name, storage=plain).user_attrs.get(ATTR)
        except KeyError:
            raise CifarbenchError(f"--study {name!r}: no such study in {redact(storage_url)}") from None
        if not attrs:
            raise CifarbenchError(f"--study {name!r}: not a cifarbench sweep (no {ATTR!r} attribute)")
        self.url, self.name = storage_url, name
        self.spec = parse_spec(attrs["spec"], source=attrs.get("source", name))
        self.model = self.spec.model(attrs["model"])
        self.study_dir = Path(attrs["study_dir"])
        sw = self.spec.sweep
        self.interval = int(sw.get("heartbeat_interval", DEFAULT_HEARTBEAT))
        grace = int(sw.get("grace_period", DEFAULT_GRACE))
        max_retry = int(sw.get("max_retry", 3))
        self.storage = open_storage(storage_url, self.interval, grace, max_retry)
        self.live = Liveness(self.storage, grace, max_retry)
        self.study = optuna.load_study(study_name=name, storage=self.storage,
                                       sampler=_sampler(self.spec), pruner=_pruner(self.spec))

    def states(self, *names: str):
        optuna = _optuna()
        return self.study.get_trials(deepcopy=False, states=tuple(optuna.trial.TrialState[n] for n in names))

    def claim(self):
        """The next trial for this worker, or None when no trial is waiting (and, for a search, the budget is spent)."""
        optuna = _optuna()
        with claim_lock(self.url):
            self.live.reap(self.study)
            for t in self.states("WAITING"):
                try:
                    # _trial_id: the storage key; the same call Study.ask makes to pop its queue
                    if self.storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.RUNNING):
                        trial = optuna.trial.Trial(self.study, t._trial_id)
                        self.live.claimed(trial)
                        return trial
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue
            if self.spec.sampler == "tpe":
                retried = {t.system_attrs.get("failed_trial") for t in self.states("WAITING", "RUNNING", "COMPLETE", "PRUNED")}
                used = [t for t in self.study.get_trials(deepcopy=False)
                        if t.state.name != "FAIL" or t.number not in retried]
                if len(used) < int(self.spec.sweep.get("n_trials", 0)):
                    trial = self.study.ask()
                    self.live.claimed(trial)
                    return trial
        return None

    def next_trial(self, poll: float):
        """Claim a trial; while none is waiting but others run, wait (a dead worker's trial gets re-queued)."""
        said = False
        while True:
            trial = retrying(self.claim)
            if trial is not None:
                return trial
            running = self.states("RUNNING")
            if not running:
                return None
            if not said:
                log.info(f"{self.name}: waiting for {len(running)} running trial(s) of other workers "
                         f"(re-queued if silent for {self.live.grace} s)")
                said = True
            time.sleep(poll)

    def params(self, trial) -> tuple[str, dict[str, Any]]:
        """The run name and TrainConfig overrides of a trial (a grid point, or a point of the search space)."""
        if self.spec.sampler == "grid":
            i = trial.suggest_categorical("config", list(range(len(self.model.grid))))
            point = self.model.grid[i]
            return point["name"], params_of(point)
        params = {}
        for k, v in sorted(self.model.space.items()):
            if isinstance(v, list):
                params[k] = trial.suggest_categorical(k, v)
            elif v.get("int"):
                params[k] = trial.suggest_int(k, int(v["low"]), int(v["high"]), log=bool(v.get("log")))
            else:
                params[k] = trial.suggest_float(k, float(v["low"]), float(v["high"]), log=bool(v.get("log")))
        # A re-queued trial keeps its first number in the folder name, so it resumes that run.
        origin = self.storage.get_trial(trial._trial_id).system_attrs.get("failed_trial", trial.number)
        return f"trial{origin:03d}", params

    def duplicate_of(self, trial, point: int) -> int | None:
        for t in self.states("RUNNING", "COMPLETE", "PRUNED"):
            if t.number != trial.number and t.user_attrs.get("point") == point:
                return t.number
        return None

    def run(self, trial, output: Path, data_dir: str | None, slot: Slot | None, train_fn: Callable) -> str:
        """Train one trial's run and tell Optuna how it ended; returns its state."""
        optuna = _optuna()
        try:
            return self._run(trial, output, data_dir, slot, train_fn)
        except optuna.exceptions.UpdateFinishedTrialError as e:
            # Another worker declared this one dead (no heartbeat for grace_period) and re-queued the
            # trial; the copy resumes the run from its checkpoint.
            log.warn(f"{self.name}: trial {trial.number} was taken over by another worker ({e})")
            return "failed"

    def _run(self, trial, output: Path, data_dir: str | None, slot: Slot | None, train_fn: Callable) -> str:
        optuna = _optuna()
        TS = optuna.trial.TrialState
        name, params = self.params(trial)
        if self.spec.sampler == "grid":
            dup = self.duplicate_of(trial, trial.user_attrs.get("point"))
            if dup is not None:
                trial.set_user_attr("duplicate_of", dup)
                self.study.tell(trial, state=TS.FAIL)
                log.warn(f"{self.name}: trial {trial.number} ({name}) duplicates trial {dup}; skipped")
                return "failed"
        rel = f"sweep/{self.model.name}/{name}"
        run_dir = output / rel
        cfg = apply_slot(self.spec.run_config(self.model, "sweep", params, output=str(run_dir), data_dir=data_dir), slot)
        for k, v in (("name", name), ("run", rel), ("run_dir", str(run_dir.resolve())), ("params", params)):
            trial.set_user_attr(k, v)

        def on_epoch(epoch: int, metrics: dict) -> bool:
            val = metrics.get("val_acc")
            if val is None:
                return False
            retrying(trial.report, float(val), int(epoch))
            return bool(retrying(trial.should_prune))

        log.info(f"{self.name}: trial {trial.number} -> {rel}")
        try:
            with self.live.running(trial, self.interval):
                res = train_fn(cfg, on_epoch=on_epoch)
        except BaseException as e:
            if isinstance(e, optuna.exceptions.UpdateFinishedTrialError):
                raise  # taken over (see run)
            recorded = self._end(trial, TS.FAIL, error=f"{type(e).__name__}: {e}")
            if is_interrupt(e):
                if recorded:  # resume it on the next start (unless a reaper has re-queued it already)
                    self.live.retry(self.study, self.storage.get_trial(trial._trial_id))
                raise
            log.warn(f"{self.name}: trial {trial.number} ({name}) failed: {e}")
            return "failed"
        status, val = res.get("status"), res.get("best_val_acc")
        if status == "finished" and val is not None:
            self._end(trial, TS.COMPLETE, float(val), status=status, val_acc=val)
            return "complete"
        if status == "pruned":
            self._end(trial, TS.PRUNED, status=status, val_acc=val)
            return "pruned"
        self._end(trial, TS.FAIL, status=status, val_acc=val)
        return "failed"

    def _end(self, trial, state, value: float | None = None, **attrs) -> bool:
        """Record how a trial ended; False if it could not be (another worker took it over)."""
        optuna = _optuna()
        try:
            for k, v in attrs.items():
                retrying(trial.set_user_attr, k, v)
            if value is None:
                retrying(self.study.tell, trial, state=state)
            else:
                retrying(self.study.tell, trial, value, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as e:
            # Reaped while still alive (no heartbeat for grace_period): the re-queued trial finds the
            # finished run folder and records it.
            log.warn(f"{self.name}: could not record trial {trial.number} ({type(e).__name__}: {e})")
            return False
        return True


def _default_train(cfg, on_epoch=None):
    from cifarbench.engine import train

    return train(cfg, on_epoch=on_epoch)


def _study_names(storage_url: str, name: str) -> list[str]:
    """NAME itself, or every model's study of the study NAME (NAME/<model>)."""
    optuna = _optuna()
    names = retrying(optuna.study.get_all_study_names, open_storage(storage_url))
    if name in names:
        return [name]
    mine = [n for n in names if n.startswith(name + "/")]
    if not mine:
        raise CifarbenchError(f"--study {name!r}: no such study in {redact(storage_url)} "
                              f"(have: {', '.join(names) or 'none'})")
    return mine


def run_worker(storage: str, study_name: str | list[str], output: str | None = None, data_dir: str | None = None,
               device: str | None = None, max_trials: int | None = None, threads: int | None = None,
               train_fn: Callable | None = None, poll: float | None = None) -> int:
    """Pull trials of one sweep (or of every model's sweep of a study) until none is left; returns how many ran."""
    names = [study_name] if isinstance(study_name, str) else list(study_name)
    names = [n for name in names for n in _study_names(storage, name)]
    train_fn = train_fn or _default_train
    slot = Slot(device=device, threads=threads)
    done = 0
    for name in names:
        sweep = _Sweep(storage, name)
        out = Path(output) if output else sweep.study_dir
        wait = poll if poll is not None else max(0.5, min(5.0, sweep.interval / 2))
        while max_trials is None or done < max_trials:
            trial = sweep.next_trial(wait)
            if trial is None:
                break
            sweep.run(trial, out, data_dir, slot, train_fn)
            done += 1
    return done


def _worker_process(storage, names, output, data_dir, slot, train_fn, poll):
    """The target of a local worker process (module level, so "spawn" can import it)."""
    from cifarbench import log as _log

    try:
        run_worker(storage, names, output=output, data_dir=data_dir, device=slot.device, threads=slot.threads,
                   train_fn=train_fn, poll=poll)
    except KeyboardInterrupt:
        raise SystemExit(130)
    except CifarbenchError as e:
        _log.warn(f"worker: {e}")
        raise SystemExit(2)


def start_workers(storage: str, names: list[str], n: int, output: str | None = None, data_dir: str | None = None,
                  device: str | None = None, train_fn: Callable | None = None, poll: float | None = None) -> list[int]:
    """Run ``n`` local worker processes over the sweeps ``names`` and wait for them; returns their exit codes.

    A worker that dies does not stop the others: they wait for its trial to go stale and run it again.
    """
    ctx = spawn_context()
    procs = [ctx.Process(target=_worker_process, name=f"cifarbench-worker-{i}",
                         args=(storage, names, output, data_dir, slot, train_fn, poll))
             for i, slot in enumerate(device_slots(n, device))]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=60)  # they got the SIGINT too and are writing their checkpoints
        raise
    return [p.exitcode for p in procs]


def run_workers(storage: str, names: list[str], n: int, output: str | None = None, data_dir: str | None = None,
                device: str | None = None, train_fn: Callable | None = None, poll: float | None = None) -> None:
    """n == 1: work in this process; else n worker processes."""
    if n <= 1:
        run_worker(storage, names, output=output, data_dir=data_dir, device=device, train_fn=train_fn, poll=poll)
        return
    codes = start_workers(storage, names, n, output=output, data_dir=data_dir, device=device,
                          train_fn=train_fn, poll=poll)
    bad = [c for c in codes if c not in (0, None)]
    if bad:
        log.warn(f"{len(bad)} of {n} worker(s) exited with an error (codes {bad}); their trials were re-queued")


# ---------------------------------------------------------------- results
def sweep_entries(storage_url: str, spec: StudySpec, model: str, study_dir: str | Path) -> list[dict[str, Any]]:
    """study.json's view of one model's sweep: one entry per grid point (its best trial), or per trial of a search."""
    optuna = _optuna()
    name = study_name(spec, model)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    except KeyError:
        return []
    trials = study.get_trials(deepcopy=False)
    rank = {"COMPLETE": 5, "PRUNED": 4, "RUNNING": 3, "WAITING": 2, "FAIL": 1}

    def entry(t, name: str, params: dict) -> dict[str, Any]:
        run = t.user_attrs.get("run") or f"sweep/{model}/{name}"
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and Path(run_dir).resolve() != (Path(study_dir) / run).resolve():
            run = run_dir  # the worker wrote it elsewhere (--output): keep the absolute path
        e = {"name": name, "params": params, "run": run, "state": STATES.get(t.state.name, t.state.name.lower()),
             "val_acc": t.user_attrs.get("val_acc"), "trial": t.number}
        if t.user_attrs.get("status"):
            e["status"] = t.user_attrs["status"]
        if t.user_attrs.get("error"):
            e["error"] = t.user_attrs["error"]
        return e

    m = spec.model(model)
    if spec.sampler == "grid":
        out = []
        for i, point in enumerate(m.grid):
            mine = [t for t in trials if t.user_attrs.get("point") == i and "duplicate_of" not in t.user_attrs]
            best = max(mine, key=lambda t: (rank[t.state.name], t.number), default=None)
            if best is None:
                out.append({"name": point["name"], "params": params_of(point), "run": f"sweep/{model}/{point['name']}",
                            "state": "pending", "val_acc": None})
            else:
                out.append(entry(best, point["name"], params_of(point)))
        return out
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    out = []
    for t in trials:
        if t.state.name == "FAIL" and t.number in retried:
            continue  # superseded by its re-queued copy
        origin = t.system_attrs.get("failed_trial", t.number)
        out.append(entry(t, t.user_attrs.get("name", f"trial{origin:03d}"), t.user_attrs.get("params", dict(t.params))))
    return out


def select_winner(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The entry with the best validation accuracy among completed ones (the test split plays no part)."""
    done = [e for e in entries if e["state"] == "complete" and e.get("val_acc") is not None]
    return max(done, key=lambda e: e["val_acc"], default=None)  # max keeps the first of equals: grid order


# ---------------------------------------------------------------- cifarbench sweep
def run_sweep(config: str, storage: str | None = None, workers: int = 1, output: str | None = None,
              data_dir: str | None = None, device: str | None = None, train_fn: Callable | None = None,
              poll: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Create a study's sweeps on ``storage`` and run ``workers`` local workers until every trial is done.

    Returns {model: sweep entries}. More workers can join from other machines with ``cifarbench worker``.
    """
    from cifarbench.study.memory import check_packing, study_configs

    spec = load_spec(config)
    if workers > 1:  # N local workers are N processes, on one GPU when there is one: refuse what cannot fit
        check_packing(study_configs(spec, ("sweep",)), device_slots(workers, device), flag="--workers")
    study_dir = Path(output or Path("studies") / spec.name)
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(study_dir)
    names = create_sweeps(spec, storage, study_dir)
    log.info(f"sweep {spec.name}: {len(names)} Optuna studies on {redact(storage)}: {', '.join(names)}; "
             f"join with: cifarbench worker --storage {redact(storage)} --study {spec.name}")
    run_workers(storage, names, workers, output=str(study_dir), data_dir=data_dir, device=device,
                train_fn=train_fn, poll=poll)
    results = {m.name: sweep_entries(storage, spec, m.name, study_dir) for m in spec.models}
    for model, entries in results.items():
        win = select_winner(entries)
        log.info(f"{model}: " + ", ".join(f"{e['name']} {e['state']}" + (f" {e['val_acc']:.2f}" if e.get("val_acc") is not None else "")
                                          for e in entries) + (f"; best on val: {win['name']}" if win else ""))
    return results
