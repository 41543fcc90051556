"""cifarbench: train, compare and report on image classifiers trained from scratch on small images.

The public API (imported lazily, so ``cifarbench --help`` stays fast)::

    from cifarbench import load_dataset, create_model, list_models, train, TrainConfig, run_study
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "load_dataset": "cifarbench.data",
    "list_datasets": "cifarbench.data",
    "create_model": "cifarbench.models",
    "list_models": "cifarbench.models",
    "train": "cifarbench.engine",
    "evaluate_run": "cifarbench.engine",
    "TrainConfig": "cifarbench.config",
    "CifarbenchError": "cifarbench.errors",
    "run_study": "cifarbench.study",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cifarbench' has no attribute {name!r}")
