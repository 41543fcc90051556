"""The library's only way to talk to the user: short lines on stderr, plus a progress bar.

Why stderr: stdout stays clean for tables, CSV and JSON that users pipe elsewhere.
"""
from __future__ import annotations

import os
import sys
import time

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def info(msg: str) -> None:
    if not _quiet:
        print(msg, file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class Progress:
    """A one-line progress bar on a terminal; silent otherwise (the caller prints one line per epoch)."""

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, images_per_step: int = 0):
        self.total, self.desc, self.images_per_step = total, desc, images_per_step
        self.enabled = (is_tty() if enabled is None else enabled) and not _quiet
        self.n = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.2 and self.n < self.total:
            return  # redraw at most 5 times a second
        self._last = now
        width = 24
        filled = int(width * self.n / max(self.total, 1))
        if self.images_per_step:
            postfix["img/s"] = f"{self.n * self.images_per_step / max(now - self.t0, 1e-9):.0f}"
        extra = " ".join(f"{k}={v}" for k, v in postfix.items() if v != "")
        line = f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total} {extra}"
        sys.stderr.write(line[:160])
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def clock(seconds: float) -> str:
    """A wall time as 27:43, or 1:02:03 past an hour (budgets, the report's time tables)."""
    sign, s = ("-" if seconds < 0 else ""), round(abs(seconds))
    h, rest = divmod(s, 3600)
    return sign + (f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}")
