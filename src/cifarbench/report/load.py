"""Read a study folder into plain Python objects: the report's only input.

Everything comes from files (study.json, study.toml, and each run's config.json, metrics.csv and
results.json), so a report can be rebuilt at any time, on any machine, without torch and without the
live objects that produced it. A study that is still running is fine: missing runs are just missing.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarbench import log
from cifarbench.config import read_json
from cifarbench.errors import CifarbenchError

# metrics.csv columns (ARCHITECTURE.md, "The run folder"); accuracies in %.
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "images_per_sec")


@dataclass
class Run:
    """One run folder, as the study indexed it."""
    rel: str                      # path relative to the study folder, as in study.json
    path: Path
    name: str                     # sweep config name, or "seed<k>" for a final
    state: str                    # the study's view: complete | pruned | failed | running | pending
    params: dict[str, Any] = field(default_factory=dict)   # the sweep point (study.json)
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)   # config.json (empty if absent)
    results: dict[str, Any] = field(default_factory=dict)  # results.json (empty if absent)
    metrics: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in METRIC_COLUMNS})
    study_val_acc: float | None = None  # what study.json recorded, used when results.json is missing

    @property
    def status(self) -> str:
        """The run's own status (finished, diverged, ...) when it wrote one, else the study's state."""
        return self.results.get("status") or self.state

    @property
    def epochs(self) -> int:
        return len(self.metrics["epoch"])

    def get(self, key: str, default=None):
        """A setting of the run: results.json first, then config.json, then the sweep params."""
        for src in (self.results, self.config, self.params):
            if src.get(key) is not None:
                return src[key]
        return default

    @property
    def best_val_acc(self) -> float | None:
        v = self.results.get("best_val_acc")
        if v is None and self.metrics["val_acc"]:
            finite = [x for x in self.metrics["val_acc"] if math.isfinite(x)]
            v = max(finite) if finite else None
        return v if v is not None else self.study_val_acc


@dataclass
class ModelEntry:
    name: str
    label: str
    paper_test_acc: float | None
    sweep: list[Run]
    winner: str | None
    finals: list[Run]


@dataclass
class Study:
    dir: Path
    name: str
    info: dict[str, Any]          # study.json as written by the study
    toml_text: str | None         # study.toml verbatim, if present
    models: list[ModelEntry]

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config") or {}

    @property
    def env(self) -> dict[str, Any]:
        """The study's environment; falls back to the first run that recorded one."""
        if self.info.get("env"):
            return self.info["env"]
        for m in self.models:
            for r in m.finals + m.sweep:
                if r.results.get("env"):
                    return r.results["env"]
        return {}

    @property
    def dataset(self) -> str:
        return self.info.get("dataset") or self.config.get("dataset") or "?"


def _float(s: str) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan  # blank cells: e.g. no validation split


def read_metrics(path: Path) -> dict[str, list[float]]:
    """metrics.csv as column -> list of floats (NaN for blanks). A missing file is an empty run."""
    cols: dict[str, list[float]] = {c: [] for c in METRIC_COLUMNS}
    if not path.exists():
        return cols
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return cols
    header = rows[0]
    missing = [c for c in ("epoch", "train_loss", "val_loss") if c not in header]
    if missing:
        raise CifarbenchError(f"{path}: not a metrics.csv (missing column(s) {', '.join(missing)})")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            if i == len(rows):  # a run still writing its last line: ignore that line only
                log.warn(f"{path}: line {i} is incomplete; ignored")
                break
            raise CifarbenchError(f"{path}: line {i} has {len(row)} fields, expected {len(header)}")
        rec = dict(zip(header, row))
        for c in METRIC_COLUMNS:
            cols[c].append(_float(rec.get(c, "")))
    return cols


def _read_optional_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.exists() else {}


def load_run(study_dir: Path, entry: dict[str, Any], name: str) -> Run:
    rel = entry.get("run") or ""
    path = (study_dir / rel) if rel else study_dir / "__missing__"
    run = Run(rel=rel, path=path, name=name, state=entry.get("state", "pending"),
              params=dict(entry.get("params") or {}), seed=entry.get("seed"),
              study_val_acc=entry.get("val_acc"))
    if rel and path.is_dir():
        run.config = _read_optional_json(path / "config.json")
        run.results = _read_optional_json(path / "results.json")
        run.metrics = read_metrics(path / "metrics.csv")
    elif rel and run.state == "complete":
        log.warn(f"{path}: run folder missing, though {study_dir / 'study.json'} says it is complete")
    return run


def load_study(study_dir: str | Path) -> Study:
    """Read STUDY/study.json and every run it names. Raises CifarbenchError if it is not a study folder."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise CifarbenchError(f"{study_dir}: no such study folder")
    sj = study_dir / "study.json"
    if not sj.exists():
        raise CifarbenchError(f"{sj}: not found; is {study_dir} a study folder (made by `cifarbench study`)?")
    info = read_json(sj)
    if not isinstance(info, dict) or not isinstance(info.get("models", {}), dict):
        raise CifarbenchError(f"{sj}: expected an object with a 'models' object")
    toml_path = study_dir / "study.toml"
    toml_text = toml_path.read_text() if toml_path.exists() else None

    # Model order: the study config's order when known (the order the user wrote), else study.json's.
    cfg_models = [m.get("name") for m in (info.get("config") or {}).get("models", []) if isinstance(m, dict)]
    cfg_by_name = {m.get("name"): m for m in (info.get("config") or {}).get("models", []) if isinstance(m, dict)}
    names = [n for n in cfg_models if n in info.get("models", {})]
    names += [n for n in info.get("models", {}) if n not in names]

    models = []
    for name in names:
        m = info["models"][name] or {}
        cfg = cfg_by_name.get(name, {})
        sweep = [load_run(study_dir, e, e.get("name", f"config{i}")) for i, e in enumerate(m.get("sweep") or [])]
        finals = [load_run(study_dir, e, f"seed{e.get('seed', i)}") for i, e in enumerate(m.get("finals") or [])]
        models.append(ModelEntry(
            name=name, label=m.get("label") or cfg.get("label") or name,
            paper_test_acc=m.get("paper_test_acc", cfg.get("paper_test_acc")),
            sweep=sweep, winner=m.get("winner"), finals=finals))
    return Study(dir=study_dir, name=info.get("name") or study_dir.name, info=info, toml_text=toml_text,
                 models=models)
