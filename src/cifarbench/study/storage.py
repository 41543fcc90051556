"""Optuna storages for sweeps: opening a URL, the SQLite claim lock, retrying a busy database.

URLs: ``sqlite:///PATH`` (the default, STUDY/optuna.db), ``postgresql://...``, ``mysql://...``
(SQLAlchemy URLs, Optuna's RDBStorage) or ``journal:PATH`` (Optuna's JournalStorage on a file, for a
shared filesystem).
"""
from __future__ import annotations

import contextlib
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from cifarbench.errors import CifarbenchError


def optuna_module():
    try:
        import optuna
    except ImportError:
        # a core dependency since the study needs it: missing only from a broken or --no-deps install
        raise CifarbenchError("sweeps need Optuna, a dependency of cifarbench that is missing here: "
                              "pip install 'optuna>=3.6'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log says what happens, once
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")
    return optuna


def default_storage(study_dir: str | Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'optuna.db'}"


def retry_callback(max_retry: int | None):
    s = optuna_module().storages
    cls = getattr(s, "RetryHeartbeatStaleTrialCallback", None) or s.RetryFailedTrialCallback  # renamed in 4.9
    return cls(max_retry=max_retry)


_storages: dict[tuple, Any] = {}


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int | None = 3):
    """The Optuna storage object for a URL; with a heartbeat when ``heartbeat_interval`` is set.

    Opened once per process and settings: an RDBStorage checks its schema on every open (~0.4 s).
    """
    key = (url, heartbeat_interval, grace_period, max_retry)
    if key not in _storages:
        _storages[key] = _open_storage(url, heartbeat_interval, grace_period, max_retry)
    return _storages[key]


def _open_storage(url: str, heartbeat_interval, grace_period, max_retry):
    optuna = optuna_module()
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        if path.startswith("//"):
            path = path[2:]
        journal = getattr(optuna.storages, "journal", None)
        backend_cls = getattr(journal, "JournalFileBackend", None) if journal else None
        backend = backend_cls(path) if backend_cls else optuna.storages.JournalFileStorage(path)  # optuna < 4
        return optuna.storages.JournalStorage(backend)
    if "://" not in url:
        raise CifarbenchError(f"--storage {url!r}: expected sqlite:///PATH, postgresql://..., mysql://... or journal:PATH")
    url = _with_driver(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        # A worker opens the storage plainly first (to read the sweep's settings): the tables exist by then.
        kwargs = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                      skip_table_creation=True, skip_compatibility_check=True)
    try:
        if heartbeat_interval:
            try:
                return optuna.storages.RDBStorage(url, **kwargs, heartbeat_stale_trial_callback=retry_callback(max_retry))
            except TypeError:  # optuna < 4.9 names it failed_trial_callback
                return optuna.storages.RDBStorage(url, **kwargs, failed_trial_callback=retry_callback(max_retry))
        return optuna.storages.RDBStorage(url)
    except ImportError as e:
        raise CifarbenchError(f"--storage {url.split('://')[0]}://...: database driver missing ({e})") from None
    except Exception as e:  # SQLAlchemy connection/URL errors, in one line
        raise CifarbenchError(f"--storage {redact(url)}: cannot open ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _with_driver(url: str) -> str:
    """Name the installed database driver in a bare postgresql:// or mysql:// URL.

    SQLAlchemy's default driver differs between versions (psycopg2 in 2.0, psycopg 3 in 2.1), so a bare
    URL may ask for a driver that is not installed although another one is.
    """
    import importlib.util

    scheme, rest = url.split("://", 1)
    choices = {"postgresql": ("psycopg2", "psycopg"), "postgres": ("psycopg2", "psycopg"),
               "mysql": ("MySQLdb", "pymysql")}.get(scheme)
    if not choices:
        return url
    for module in choices:
        if importlib.util.find_spec(module) is not None:
            dialect = "postgresql" if scheme.startswith("postgres") else "mysql"
            return f"{dialect}+{module.lower() if module != 'MySQLdb' else 'mysqldb'}://{rest}"
    return url  # let SQLAlchemy name the missing driver


def redact(url: str) -> str:
    """The URL without a password, for error messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


@contextlib.contextmanager
def claim_lock(url: str):
    """An exclusive file lock around claims on SQLite (see the module docstring); nothing elsewhere."""
    if not url.startswith("sqlite:///") or ":memory:" in url:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: one worker per SQLite file is the safe use there
        yield
        return
    with open(url[len("sqlite:///"):] + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def retrying(fn: Callable, *args, tries: int = 8, **kwargs):
    """Call a storage operation again when the database is momentarily busy (SQLite under several writers)."""
    optuna = optuna_module()
    for i in range(tries):
        try:
            return fn(*args, **kwargs)
        except optuna.exceptions.StorageInternalError:
            if i == tries - 1:
                raise
            time.sleep(random.uniform(0.05, 0.3) * (i + 1))
