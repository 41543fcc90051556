"""A study's TOML file: parsing, validation and the TrainConfig of every run.

Everything a study does is decided here, before any work starts: an unknown key, a missing model or
a grid point that ``TrainConfig.validate`` refuses stops the study with one line naming the file and
the key, not an hour later in the middle of the sweep.

How a run's config is built (later wins)::

    TrainConfig defaults < [defaults] < the model's defaults < the grid point (or trial) params
                         < the stage table ([sweep] or [final]: epochs, train_subset, ...)
                         < the model's own stage table (its `sweep` or `final`: e.g. fewer epochs for a big model)
                         < its `budget_fallback`, for finals the budget moved to it (study/budget.py, step 2)
                         < [override] (TrainConfig fields), then its epochs_scale and max_epochs

The stage comes last because it *is* the study's structure: a grid point may change the optimizer,
never turn a 30-epoch sweep into a 50-epoch one. ``[override]`` is the exception on purpose: a run of a
study *other* than the file says (``cifarbench study --epochs-scale 0.05 --dataset shapes ...`` writes it),
so every key in it is reported as a deviation, travels with the spec to every sweep worker, and is part of
the config a resumed study must match.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from cifarbench.config import TrainConfig, load_toml, tomllib
from cifarbench.errors import CifarbenchError
from cifarbench.study.budget import parse_budget

TOP_KEYS = {"name", "dataset", "description", "notes", "seeds", "target", "jobs", "defaults", "sweep", "final", "models",
            "override", "budget"}
# [override] keys that are not TrainConfig fields: the study's dataset, and a scale and a cap for every stage's epochs
# (rounded half up, at least 1: 0.05 turns the paper's 30-epoch sweep into 2 epochs and its 50-epoch finals into 3).
OVERRIDE_KEYS = {"dataset", "epochs_scale", "max_epochs"}
MODEL_KEYS = {"name", "label", "paper_test_acc", "defaults", "grid", "space", "sweep", "final", "budget_share",
              "budget_fallback"}
# [sweep] keys that steer Optuna rather than a run; every other key there must be a TrainConfig field.
SWEEP_KEYS = {"sampler", "pruner", "n_trials", "seed", "heartbeat_interval", "grace_period",
              "pruner_startup_trials", "pruner_warmup_epochs", "max_retry"}
SAMPLERS = ("grid", "tpe")
PRUNERS = ("none", "median", "hyperband")
# Set by the study itself for every run; a study file that sets them would break the study's guarantees
# (eval_test=False keeps the test split unread until stage 3; output/resume make reruns resume).
RESERVED = {"output", "resume", "eval_test", "data_dir", "seed", "dataset", "model"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # grid names become folder names


@dataclass
class ModelSpec:
    name: str
    label: str
    paper_test_acc: float | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    grid: list[dict[str, Any]] = field(default_factory=list)  # each: {"name": ..., **TrainConfig fields}
    space: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)  # this model's overrides of [sweep] (TrainConfig fields)
    final: dict[str, Any] = field(default_factory=dict)  # this model's overrides of [final]
    budget_share: float = 1.0  # its weight in the finals' time under a budget (study/budget.py)
    # Under a budget: the TrainConfig fields its finals switch to when the budget affords fewer than
    # ``fallback_below`` whole epochs of the file's config (study/budget.py, step 2); {}: no fallback.
    budget_fallback: dict[str, Any] = field(default_factory=dict)
    fallback_below: int = 0

    def point(self, name: str) -> dict[str, Any]:
        for p in self.grid:
            if p["name"] == name:
                return params_of(p)
        raise CifarbenchError(f"model {self.name}: no grid point named {name!r}")


@dataclass
class StudySpec:
    name: str
    dataset: str
    source: str                      # the file it came from (a preset's packaged path for presets)
    raw: dict[str, Any]              # the TOML as a dict (study.json "config")
    text: str                        # the TOML source, copied to STUDY/study.toml
    description: str = ""
    notes: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    target: str = "any"              # "gpu": the study is meant for a GPU (dry-run and start say so on a CPU)
    jobs: int = 1                    # runs side by side when --jobs is not given
    defaults: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)   # control keys + TrainConfig overrides
    final: dict[str, Any] = field(default_factory=dict)
    models: list[ModelSpec] = field(default_factory=list)
    override: dict[str, Any] = field(default_factory=dict)  # [override]: deviations from the file (module doc)
    budget: float | None = None  # seconds of wall time the finals' epochs are fitted to (study/budget.py)

    # --- sweep control, with defaults
    @property
    def sampler(self) -> str:
        return self.sweep.get("sampler", "grid")

    @property
    def pruner(self) -> str:
        return self.sweep.get("pruner", "none")

    @property
    def sweep_seed(self) -> int:
        return int(self.sweep.get("seed", self.seeds[0]))

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise CifarbenchError(f"{self.source}: no model {name!r} in this study")

    def run_config(self, model: str | ModelSpec, stage: str, params: dict[str, Any] | None = None,
                   seed: int | None = None, output: str | None = None, data_dir: str | None = None,
                   override: bool = True, fallback: bool = False) -> TrainConfig:
        """The TrainConfig of one run of this study (see the module docstring for the order).

        ``override=False``: the run as the study file alone has it, without [override] (for the deviations).
        ``fallback=True``: a final with the model's ``budget_fallback`` fields over its own stage table (the
        budget chose it: study/budget.py).
        """
        m = model if isinstance(model, ModelSpec) else self.model(model)
        stage_table = {k: v for k, v in (self.sweep if stage == "sweep" else self.final).items() if k not in SWEEP_KEYS}
        values: dict[str, Any] = {"model": m.name, "dataset": self.dataset if override else self.raw["dataset"]}
        own_stage = m.sweep if stage == "sweep" else m.final
        layers = [self.defaults, m.defaults, params or {}, stage_table, own_stage]
        if fallback:
            layers.append(m.budget_fallback)
        if override:
            layers.append({k: v for k, v in self.override.items() if k not in OVERRIDE_KEYS})
        for layer in layers:
            values.update(layer)
        if override:
            before = values["epochs"]  # every stage table has epochs (parse_spec checks)
            values["epochs"] = self.scale_epochs(before)
            if values.get("warmup_epochs") and values["epochs"] != before:
                # the warm-up keeps its share of the run (and stays below epochs, as validate wants)
                values["warmup_epochs"] = values["warmup_epochs"] * values["epochs"] / before
        values.update(seed=self.sweep_seed if seed is None else seed, eval_test=False, resume="auto",
                      output=output, data_dir=data_dir)
        return TrainConfig.from_dict(values, source=self.source)

    # --- [override]: runs that deviate from the study file
    def scale_epochs(self, epochs: int) -> int:
        """``epochs`` after [override]'s epochs_scale (rounded half up, at least 1) and max_epochs."""
        scale, cap = self.override.get("epochs_scale"), self.override.get("max_epochs")
        if scale is not None:
            epochs = max(1, math.floor(epochs * scale + 0.5))
        return min(epochs, cap) if cap is not None else epochs

    def stage_epochs(self) -> dict[str, dict[str, list[int]]]:
        """{model: {stage: [epochs in the study file, epochs run]}}: what the report projects the file's cost from."""
        return {m.name: {s: [self.run_config(m, s, override=False).epochs, self.run_config(m, s).epochs]
                         for s in ("sweep", "final")} for m in self.models}

    def deviations(self) -> list[str]:
        """What [override] changes from the study file, one line each (study.json, the report, the dry run)."""
        o, out = self.override, []
        if o.get("dataset", self.raw["dataset"]) != self.raw["dataset"]:
            out.append(f"dataset {self.raw['dataset']} -> {o['dataset']}")
        if "epochs_scale" in o or "max_epochs" in o:
            how = " and ".join(([f"scaled by {o['epochs_scale']:g}"] if "epochs_scale" in o else [])
                               + ([f"capped at {o['max_epochs']}"] if "max_epochs" in o else []))
            epochs, parts = self.stage_epochs(), []
            for stage in ("sweep", "final"):
                pairs: dict[tuple[int, int], list[str]] = {}
                for model, stages in epochs.items():
                    pairs.setdefault(tuple(stages[stage]), []).append(model)
                if len(pairs) == 1:
                    (a, b), = pairs
                    parts.append(f"{stage} {a} -> {b}")
                else:  # a model with its own stage epochs (e.g. the quick preset's finals)
                    parts.append(f"{stage} " + ", ".join(f"{a} -> {b} ({', '.join(ms)})" for (a, b), ms in pairs.items()))
            out.append(f"epochs {how}: " + ", ".join(parts))
        for k, v in sorted(o.items()):
            if k in OVERRIDE_KEYS:
                continue
            before = {_toml_value(getattr(self.run_config(m, s, p, override=False), k))
                      for m in self.models for p in _points(m) for s in ("sweep", "final")}
            if before != {_toml_value(v)}:  # a flag that changes nothing is no deviation
                out.append(f"{k} = {_toml_value(v)} in every run (the study file: {' / '.join(sorted(before))})")
        return out

    def with_override(self, override: dict[str, Any] | None) -> "StudySpec":
        """This study with ``override`` merged into its [override] table (`cifarbench study`'s flags), re-validated."""
        override = {k: v for k, v in (override or {}).items() if v is not None}
        if not override:
            return self
        raw = copy.deepcopy(self.raw)
        raw["override"] = {**raw.get("override", {}), **override}
        return parse_spec(raw, source=self.source, text=self.text)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    return f'"{v}"' if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)


def override_flags(override: dict[str, Any]) -> str:
    """The `cifarbench study` flags that write ``override`` (for messages that say how to resume)."""
    named = {"epochs_scale": "--epochs-scale", "max_epochs": "--max-epochs", "dataset": "--dataset"}
    return " ".join(f"{named[k]} {v}" if k in named else f"--override {k}={_toml_value(v)}"
                    for k, v in override.items()) or "no deviation flags"


def parse_override_args(items: list[str] | None, flag: str = "--override") -> dict[str, Any]:
    """`--override KEY=VALUE` pairs (or another flag's) as a dict; VALUE is read as a TOML value (16, 0.1, true,
    "x"), else as text."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CifarbenchError(f"{flag} {item!r}: expected KEY=VALUE, e.g. resolution=64")
        try:
            out[key] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value.strip()
    return out


def params_of(point: dict[str, Any]) -> dict[str, Any]:
    """A grid point's TrainConfig overrides (everything but its name)."""
    return {k: v for k, v in point.items() if k != "name"}


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("cifarbench.study").joinpath("presets").iterdir()
                  if p.name.endswith(".toml"))


def preset_path(name: str) -> Path:
    return Path(str(resources.files("cifarbench.study").joinpath("presets", f"{name}.toml")))


def load_spec(config_or_preset: str | Path) -> StudySpec:
    """A study from a TOML file path or a preset name (paper, modern, quick)."""
    s = str(config_or_preset)
    path = Path(s)
    if not path.exists() and "/" not in s and not s.endswith(".toml"):
        if s not in preset_names():
            raise CifarbenchError(f"{s}: no such study file or preset (presets: {', '.join(preset_names())})")
        path = preset_path(s)
    raw = load_toml(path)  # raises "PATH: no such config file" / "not valid TOML"
    return parse_spec(raw, source=str(path), text=path.read_text())


def parse_spec(raw: dict[str, Any], source: str = "study", text: str = "") -> StudySpec:
    def bad(where: str, msg: str):
        raise CifarbenchError(f"{source}: {where}{': ' if where else ''}{msg}")

    def check_table(where: str, table: Any, allowed: set[str] | None = None, extra: set[str] = frozenset()):
        if not isinstance(table, dict):
            bad(where, "must be a table")
        for k in table:
            if allowed is not None and k in allowed:
                continue
            if k in extra:
                continue
            if k in RESERVED:
                bad(where, f"key {k!r} is set by the study itself")
            if k not in TRAIN_FIELDS:
                bad(where, f"unknown key {k!r} (not a TrainConfig field)")

    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        bad("", f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    for key in ("name", "dataset"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            bad("", f"missing or empty {key!r}")
    if not SAFE_NAME.match(raw["name"]):
        bad("name", f"{raw['name']!r} must be letters, digits, '.', '_' or '-'")

    defaults = raw.get("defaults", {})
    check_table("[defaults]", defaults)
    sweep = raw.get("sweep", {})
    check_table("[sweep]", sweep, extra=SWEEP_KEYS)
    final = raw.get("final", {})
    check_table("[final]", final)
    for where, table in (("[sweep]", sweep), ("[final]", final)):
        if "epochs" not in table:
            bad(where, "missing 'epochs'")
    if sweep.get("sampler", "grid") not in SAMPLERS:
        bad("[sweep] sampler", f"{sweep['sampler']!r}: choose {' or '.join(SAMPLERS)}")
    if sweep.get("pruner", "none") not in PRUNERS:
        bad("[sweep] pruner", f"{sweep['pruner']!r}: choose one of {', '.join(PRUNERS)}")
    for k in ("n_trials", "heartbeat_interval", "grace_period", "pruner_startup_trials", "pruner_warmup_epochs", "max_retry"):
        if k in sweep and (not isinstance(sweep[k], int) or sweep[k] < 0):
            bad(f"[sweep] {k}", f"{sweep[k]!r} must be a non-negative integer")

    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds) or len(set(seeds)) != len(seeds):
        bad("seeds", f"{seeds!r} must be a non-empty list of distinct integers")
    notes = raw.get("notes", [])
    if isinstance(notes, str):
        notes = [notes]
    target = raw.get("target", "any")
    if target not in ("any", "gpu", "cpu"):
        bad("target", f"{target!r}: choose any, gpu or cpu")

    jobs = raw.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        bad("jobs", f"{jobs!r} must be a positive integer")
    override = raw.get("override", {})
    check_table("[override]", override, extra=OVERRIDE_KEYS)
    scale, cap = override.get("epochs_scale"), override.get("max_epochs")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf):
        bad("[override] epochs_scale", f"{scale!r} must be a positive number (--epochs-scale)")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        bad("[override] max_epochs", f"{cap!r} must be a positive integer (--max-epochs)")
    if "dataset" in override and (not isinstance(override["dataset"], str) or not override["dataset"]):
        bad("[override] dataset", f"{override['dataset']!r} must be a dataset name (--dataset)")

    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        bad("", "missing [[models]] (a study needs at least one model)")
    spec = StudySpec(name=raw["name"], dataset=override.get("dataset", raw["dataset"]), source=source, raw=raw,
                     text=text, description=str(raw.get("description", "")), notes=[str(n) for n in notes],
                     seeds=seeds, target=target, jobs=jobs, defaults=defaults, sweep=sweep, final=final,
                     override=override)
    spec.budget = parse_budget(raw["budget"], f"{source}: budget") if "budget" in raw else None
    sampler = spec.sampler
    for i, m in enumerate(models_raw):
        where = f"models[{i}]"
        if not isinstance(m, dict):
            bad(where, "must be a table")
        unknown = sorted(set(m) - MODEL_KEYS)
        if unknown:
            bad(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(MODEL_KEYS))})")
        if not isinstance(m.get("name"), str) or not SAFE_NAME.match(m["name"]):
            bad(where, "missing or invalid 'name' (a registry model name)")
        where = f"models[{m['name']}]"
        if any(x.name == m["name"] for x in spec.models):
            bad(where, "listed twice")
        for table in ("defaults", "sweep", "final"):
            check_table(f"{where}.{table}", m.get(table, {}))
        ms = ModelSpec(name=m["name"], label=str(m.get("label", m["name"])), paper_test_acc=m.get("paper_test_acc"),
                       defaults=m.get("defaults", {}), grid=list(m.get("grid", [])), space=dict(m.get("space", {})),
                       sweep=dict(m.get("sweep", {})), final=dict(m.get("final", {})))
        share = m.get("budget_share", 1.0)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < math.inf:
            bad(f"{where}.budget_share", f"{share!r} must be a positive number (the model's weight in the finals' time)")
        ms.budget_share = float(share)
        fb = m.get("budget_fallback")
        if fb is not None:
            fw = f"{where}.budget_fallback"
            check_table(fw, fb, extra={"below_epochs"})
            below = fb.get("below_epochs")
            if isinstance(below, bool) or not isinstance(below, int) or below < 1:
                bad(f"{fw}.below_epochs", f"{below!r} must be a positive integer (the fewest whole epochs of the "
                    "study file's config the budget must afford before the fallback takes over)")
            ms.budget_fallback = {k: v for k, v in fb.items() if k != "below_epochs"}
            if not ms.budget_fallback:
                bad(fw, "names no TrainConfig field to change (e.g. stem = \"imagenet\")")
            ms.fallback_below = below
        if sampler == "grid":
            if not ms.grid:
                bad(where, "sampler 'grid' needs a non-empty 'grid' list")
            names = set()
            for j, point in enumerate(ms.grid):
                pw = f"{where}.grid[{j}]"
                check_table(pw, point, extra={"name"})
                if not isinstance(point.get("name"), str) or not SAFE_NAME.match(point["name"]):
                    bad(pw, "missing or invalid 'name' (letters, digits, '.', '_', '-'; it names the run folder)")
                if point["name"] in names:
                    bad(pw, f"name {point['name']!r} used twice")
                names.add(point["name"])
        else:
            if not ms.space:
                bad(where, "sampler 'tpe' needs a 'space' table")
            _check_space(ms.space, lambda w, msg: bad(f"{where}.space.{w}", msg))
            if int(sweep.get("n_trials", 0)) < 1:
                bad("[sweep] n_trials", "sampler 'tpe' needs n_trials >= 1")
        spec.models.append(ms)
    _check_configs(spec, bad)
    return spec


def _check_space(space: dict[str, Any], bad) -> None:
    for k, v in space.items():
        if k in RESERVED or k not in TRAIN_FIELDS:
            bad(k, "not a TrainConfig field the sweep may set")
        if isinstance(v, list):
            if not v:
                bad(k, "empty choice list")
        elif isinstance(v, dict):
            extra = set(v) - {"low", "high", "log", "int"}
            if extra or "low" not in v or "high" not in v:
                bad(k, "a range needs exactly low, high (and optionally log, int)")
            if not v["low"] < v["high"] or (v.get("log") and v["low"] <= 0):
                bad(k, f"bad range [{v['low']}, {v['high']}]{' (log needs low > 0)' if v.get('log') else ''}")
        else:
            bad(k, "must be a list of choices or a {low, high, log} range")


def _check_configs(spec: StudySpec, bad) -> None:
    """Build and validate every run's TrainConfig now, so a bad value fails before the first epoch."""
    for m in spec.models:
        points = [(f"models[{m.name}].grid[{p['name']}]", params_of(p)) for p in m.grid] or \
                 [(f"models[{m.name}].space", _space_example(m.space))]
        stages = [("sweep", False), ("final", False)] + ([("final", True)] if m.budget_fallback else [])
        for where, params in points:
            for stage, fallback in stages:
                try:
                    spec.run_config(m, stage, params, fallback=fallback).validate()
                except CifarbenchError as e:
                    msg = str(e)
                    if msg.startswith(spec.source + ": "):
                        msg = msg[len(spec.source) + 2:]
                    bad(where, f"{msg} (in the {stage} stage{' with its budget_fallback' if fallback else ''})")
                except TypeError as e:  # a wrongly typed value, e.g. lr = "fast"
                    bad(where, str(e))


def _points(m: ModelSpec) -> list[dict[str, Any]]:
    """The TrainConfig overrides of each grid point, or one example point of a search space."""
    return [params_of(p) for p in m.grid] or [_space_example(m.space)]


def _space_example(space: dict[str, Any]) -> dict[str, Any]:
    """One point of a search space (the low end, the first choice), to validate its config."""
    return {k: (v[0] if isinstance(v, list) else v["low"]) for k, v in space.items()}
