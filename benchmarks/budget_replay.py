"""Replay the budget rule on a finished study: which final epochs would the current rule and preset choose from
that study's own measured speeds and sweep? Nothing is trained; the test split is not read.

  python benchmarks/budget_replay.py STUDY_DIR [--preset quick] [--budget 29m] [--jobs 2]

Used for BENCHMARKS.md "The quick study" (run 5 replayed after the test-reserve fix and the new shares).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cifarbench.config import read_json
from cifarbench.study import budget as B
from cifarbench.study.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir")
    ap.add_argument("--preset", default="quick", help="preset name or study TOML whose shares and caps to use")
    ap.add_argument("--budget", default=None, help="default: the study's own")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    study = Path(args.study_dir)
    state = read_json(study / "study.json")
    spec = load_spec(args.preset)
    b = state["budget"]
    budget_s = B.parse_budget(args.budget) if args.budget else b["budget_s"]
    d = B._dataset(spec, state.get("data"))
    speeds = B.Speeds(b["calibration"], d, None)
    sweeps = {n: m.get("sweep") or [] for n, m in state["models"].items()}
    winners = {n: next(e["params"] for e in m["sweep"] if e.get("winner")) for n, m in state["models"].items()}
    elapsed = b["allocation"]["elapsed_s"]  # the study clock when its finals were planned
    plan = B._plan(spec, budget_s, elapsed, speeds, d, args.jobs, None, lambda n: winners[n], study, sweeps)
    print(json.dumps({k: plan[k] for k in ("elapsed_s", "reserve_s", "final_s", "predicted_final_s",
                                           "predicted_total_s", "fits", "epochs")}, indent=1))


if __name__ == "__main__":
    main()
