"""Regenerate constraints.txt: the versions a fresh resolve picks today, for every package but torch's own.

    .venv/bin/python .ci/constraints.py [REQ ...]   # asks the package index (network); REQ: more to resolve

Why pins: the Makefile, the README and CI install with `-c constraints.txt`, so a fresh clone gets the
versions the suite last passed with, not whatever optuna, SQLAlchemy, numpy or selenium released since.
Why not torch: GPU machines bring their own torch + torchvision (2.11 + 0.26), this CPU machine another
(2.14.1 + 0.29.1), so torch, torchvision and everything torch itself requires (its CUDA wheels, triton,
sympy, ...) stay as loose as pyproject.toml says. A pinned release that needs a newer Python than the
project's minimum gets a marker, so older Pythons resolve it freely instead of failing.
"""
from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOOSE = {"torch", "torchvision", "cifarbench"}  # and torch's closure, computed below
PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]


def resolve(more: list[str]) -> list[dict]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = ",".join(sorted(project.get("optional-dependencies", {})))
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                          "--report", "-", "-e", f".[{extras}]", *more], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["install"]


def torch_closure(meta: dict[str, dict]) -> set[str]:
    todo, seen = ["torch"], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in meta:
            continue
        seen.add(name)
        for r in map(Requirement, meta[name].get("requires_dist") or []):
            if r.marker is None or r.marker.evaluate({"extra": ""}):  # what torch needs, not its extras'
                todo.append(canonicalize_name(r.name))
    return seen


def marker(requires_python: str | None) -> str:
    spec = SpecifierSet(requires_python or "")
    ok = [v for v in PYTHONS if spec.contains(v)]
    return f'; python_version >= "{ok[0]}"' if ok and ok[0] != PYTHONS[0] else ""


def main() -> None:
    meta = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in resolve(sys.argv[1:])}
    # torch's CUDA wheels come in through extras or markers the closure may not follow: all of them stay loose
    loose = LOOSE | torch_closure(meta) | {n for n in meta if n.startswith(("nvidia-", "cuda-"))}
    lines = [f"# Written by .ci/constraints.py on {datetime.date.today()} (Python {platform.python_version()}); "
             "see that file for why.",
             "# Not here on purpose: " + ", ".join(sorted(n for n in loose if n in meta and not n.startswith(("nvidia-", "cuda-"))))
             + ", and torch's CUDA wheels."]
    lines += [f"{m['name']}=={m['version']}{marker(m.get('requires_python'))}"
              for n, m in sorted(meta.items()) if n not in loose]
    (ROOT / "constraints.txt").write_text("\n".join(lines) + "\n")
    print(f"constraints.txt: {len(lines) - 2} pins")


if __name__ == "__main__":
    main()
