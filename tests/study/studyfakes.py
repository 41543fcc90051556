"""Stand-ins for the engine's ``train`` and ``evaluate_run``, for testing the study's orchestration.

They write real run folders (config.json, metrics.csv, results.json, and a ``last.json`` in place of
last.pt), follow the engine's rules (resume="auto" returns a finished run at once and continues an
interrupted one; eval_test=False leaves test_* null) and log every call as a JSON line to the file
named by $STUDYFAKES_LOG, so tests can count calls across processes. Module-level functions, so worker
processes started with "spawn" can import them.

Knobs (environment, so they reach spawned workers):
  STUDYFAKES_SLEEP=S            seconds per epoch
  STUDYFAKES_INTERRUPT=TEXT     interrupt (engine.Interrupted) the first attempt of every run whose
                                output path contains TEXT, after its first epoch
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

from cifarbench.config import read_json, write_json

OPT_BASE = {"sgd": 40.0, "momentum": 55.0, "nesterov": 60.0, "adam": 50.0, "adamw": 52.0}


def val_score(cfg) -> float:
    """A deterministic 'final validation accuracy' for a config: depends on opt, lr and seed."""
    return round(OPT_BASE[cfg.opt] + 5 * math.log10(cfg.lr * 1e4) + 0.7 * cfg.seed, 3)


def log_event(event: str, **fields) -> None:
    path = os.environ.get("STUDYFAKES_LOG")
    if path:
        line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **fields}) + "\n"
        with open(path, "a") as f:  # one short O_APPEND write per line: lines from processes do not mix
            f.write(line)


def read_events(path) -> list[dict]:
    p = Path(path)
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def train(cfg, splits=None, on_epoch=None):
    assert cfg.eval_test is False, f"{cfg.output}: a study run with eval_test=True would read the test split"
    assert cfg.resume == "auto"
    out = Path(cfg.output)
    if (out / "results.json").exists():
        prev = read_json(out / "results.json")
        if prev.get("status") in ("finished", "diverged", "pruned"):
            log_event("skip", run=str(out))
            return prev
    start, history = 0, []
    if (out / "last.json").exists():
        last = read_json(out / "last.json")
        start, history = last["epoch"], last["history"]
    log_event("train", run=str(out), start=start, threads=cfg.threads, device=cfg.device, seed=cfg.seed,
              opt=cfg.opt, lr=cfg.lr, epochs=cfg.epochs)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    final = val_score(cfg)
    status = "finished"
    interrupt = os.environ.get("STUDYFAKES_INTERRUPT")
    for epoch in range(start, cfg.epochs):
        time.sleep(float(os.environ.get("STUDYFAKES_SLEEP", "0")))
        if interrupt and interrupt in str(out) and start == 0 and epoch == 1:
            from cifarbench.engine import Interrupted  # imported late: torch makes a worker start 5 s slower

            write_json(out / "results.json", {"status": "interrupted", "epochs_done": epoch})
            raise Interrupted(f"{out}: interrupted in epoch {epoch + 1}")
        val = round(final * (epoch + 1) / cfg.epochs, 3)
        row = {"epoch": epoch + 1, "train_loss": round(2.0 / (epoch + 1), 4), "train_acc": val + 5, "val_loss": 1.0,
               "val_acc": val, "lr": cfg.lr, "epoch_time": 0.1, "images_per_sec": 1000.0}
        history.append(row)
        with open(out / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerows(history)
        write_json(out / "last.json", {"epoch": epoch + 1, "history": history})
        if on_epoch is not None and on_epoch(epoch + 1, row):
            status = "pruned"
            break
    best = max(h["val_acc"] for h in history)
    res = {"status": status, "model": cfg.model, "dataset": cfg.dataset, "stem": cfg.stem, "seed": cfg.seed,
           "resolution": cfg.resolution or 32, "epochs_done": len(history), "best_epoch": len(history),
           "best_val_acc": best, "val_acc": best, "val_loss": 1.0, "test_acc": None, "test_loss": None,
           "per_class_acc": None, "confusion": None, "classes": ["a", "b"], "params": 1000, "macs_per_image": 10000,
           "total_train_macs": 1, "train_time_s": 0.1 * len(history), "wall_time_s": 0.2, "images_per_sec": 1000.0,
           "env": {"device": "cpu"}}
    write_json(out / "results.json", res)
    return res


def slow_train(cfg, splits=None, on_epoch=None):
    """train() at 30 s per epoch: a worker that is killed while it runs this dies mid-trial."""
    os.environ["STUDYFAKES_SLEEP"] = "30"
    return train(cfg, splits, on_epoch)


def evaluate(run_dir, split="test", data_dir=None, device="auto"):
    """Test accuracy that ranks configs the *opposite* way to validation: selecting on test would show."""
    run_dir = Path(run_dir)
    log_event("eval", run=str(run_dir), split=split)
    res = read_json(run_dir / "results.json")
    acc = round(150.0 - res["best_val_acc"], 3)
    res.update(test_acc=acc, test_loss=0.5)
    write_json(run_dir / "results.json", res)
    return {"acc": acc, "loss": 0.5, "n": 100, "per_class_acc": [acc, acc], "confusion": [[1, 0], [0, 1]],
            "classes": ["a", "b"]}


def claim_all(url: str, name: str, barrier, queue) -> None:
    """Claim trials of a sweep as fast as possible once every process is ready; put the numbers on ``queue``."""
    from cifarbench.study import sweep as sw

    s = sw._Sweep(url, name)
    got = []
    barrier.wait()
    while True:
        trial = s.claim()
        if trial is None:
            break
        got.append(trial.number)
    queue.put(got)


def anonymous_worker(*args) -> None:
    """A sweep worker that does not say which process it is, so only its heartbeat tells it is alive
    (as for a worker on another machine)."""
    from cifarbench.study import liveness, sweep

    liveness._process_identity = lambda: None
    sweep._worker_process(*args)


def mark_and_sleep(cfg):
    """A run that leaves a marker file (so a test can count the runs that started) and takes a second."""
    import time
    from pathlib import Path

    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output) / "started").write_text("")
    time.sleep(1.0)
    return {"status": "finished"}
