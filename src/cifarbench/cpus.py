"""How many CPU cores this process may use: the one count every thread split starts from.

``os.cpu_count()`` counts the machine's cores, not the ones this process is allowed on: under
``taskset -c 0`` (or a container's cpuset) it still says 2 on a 2-core box, and a split computed from it
puts 2 threads, or 2 runs, on the one core. torch's own default thread count already follows the
affinity mask; anything that splits threads by hand must too.
"""
from __future__ import annotations

import os


def usable_cpus() -> int:
    """Cores in this process's CPU affinity mask (Linux), else every core (macOS and Windows have no such call)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
