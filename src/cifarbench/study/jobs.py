"""Running several training runs side by side: one slot per job, one process per slot.

A slot is a device and a thread count. On a CPU the cores are split between the jobs (two runs that
each use every core fight over them and run slower than one after the other); on a machine with
several GPUs each job owns one GPU (round-robin when there are more jobs than GPUs). On a machine with
one GPU, N jobs are N processes on that GPU, with the CPU cores split between them.

Why several runs on one GPU: small models are launch-bound there (ShuffleNetV2 x0.5 at batch 256 keeps an
H200 about 1 TFLOP/s busy: BENCHMARKS.md, "GPU"), so a second run fills the time the first spends launching
kernels. Why processes and not CUDA streams in one process: each run keeps its own CUDA context, so a run
that runs out of memory, diverges or is killed takes no other run with it; each has its own torch state,
its own signal handling (the engine checkpoints on SIGINT/SIGTERM) and its own Python thread launching
kernels, which streams in one process would share under the GIL. The price is a context per process
(~0.5 GiB, counted by ``memory.py``, which refuses a packing that cannot fit) and time-sliced rather than
concurrent kernels: without NVIDIA MPS (not available on the machines this project is measured on) kernels
of different processes do not overlap, they only fill each other's gaps between launches.
The "spawn" start method: fork after torch (or CUDA) has started is unsafe.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from cifarbench.config import TrainConfig
from cifarbench.cpus import usable_cpus


@dataclass(frozen=True)
class Slot:
    device: str | None = None   # None: keep the run's own device setting
    threads: int | None = None  # None: keep the run's own thread setting


def device_slots(jobs: int, device: str | None = None) -> list[Slot]:
    """One slot per job: cuda:i on a multi-GPU machine, else the same device with the CPU cores split."""
    jobs = max(1, int(jobs))
    if jobs == 1:
        return [Slot(device=device)]
    if device in (None, "auto", "cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n > 1:
            return [Slot(device=f"cuda:{i % n}") for i in range(jobs)]
    # One GPU (the jobs share it, and their CPU work, the MAC count and checkpoint writes, shares the cores)
    # or the CPU: the cores are split.
    threads = max(1, usable_cpus() // jobs)
    return [Slot(device=device, threads=threads) for _ in range(jobs)]


def cpu_jobs(jobs: int, device: str | None = None) -> int:
    """``jobs``, but on a CPU no more runs side by side than usable cores (``taskset``, cpusets: cpus.py).

    Two single-thread runs time-sharing one core do the same work as one after the other, plus the switching
    and two working sets in one cache, with twice the memory, and each runs at half the speed a budget was
    calibrated at (study/budget.py). So under ``taskset -c 0`` a ``jobs = 2`` study runs one job at a time.
    """
    if jobs <= 1:
        return jobs
    from cifarbench.engine.env import resolve_device

    if resolve_device(device or "auto").type != "cpu" or usable_cpus() >= jobs:
        return jobs
    from cifarbench import log

    log.info(f"jobs {jobs} -> {usable_cpus()}: this process may use {usable_cpus()} CPU core(s) (its affinity mask)")
    return usable_cpus()


def apply_slot(cfg: TrainConfig, slot: Slot | None) -> TrainConfig:
    if slot is None:
        return cfg
    changes: dict[str, Any] = {}
    if slot.device is not None:
        changes["device"] = slot.device
    if slot.threads is not None:
        changes["threads"] = slot.threads
    return cfg.replace(**changes) if changes else cfg


def spawn_context():
    return mp.get_context("spawn")


# --- a process pool whose every process keeps one slot for its whole life
_slot: Slot | None = None


def _init_slot(queue) -> None:
    global _slot
    _slot = queue.get()


def _run_in_slot(fn: Callable[[TrainConfig], Any], cfg: TrainConfig) -> Any:
    return fn(apply_slot(cfg, _slot))


def run_side_by_side(fn: Callable[[TrainConfig], Any], items: Iterable[tuple[Any, TrainConfig]],
                     slots: list[Slot]) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Yield (key, result, error) for each (key, cfg) as the runs finish, len(slots) at a time.

    With one slot the runs go in this process, one after the other (no pickling, exceptions such as
    an interrupt propagate at once). ``fn`` must be a module-level function for more than one slot.
    ``items`` is read lazily, the next one only when a slot is free and the caller has taken the results
    so far: a generator can decide a run's config from the runs that finished before it (budget.replan).
    """
    items = iter(items)
    if len(slots) <= 1:
        for key, cfg in items:
            try:
                result = fn(apply_slot(cfg, slots[0] if slots else None))
            except Exception as e:  # the caller decides; KeyboardInterrupt goes straight up
                yield key, None, e
                continue
            yield key, result, None
        return
    ctx = spawn_context()
    queue = ctx.Queue()
    for s in slots:
        queue.put(s)
    pool = ProcessPoolExecutor(max_workers=len(slots), mp_context=ctx, initializer=_init_slot, initargs=(queue,))
    # One run in flight per slot, the next submitted only once the caller has taken a result: on Ctrl-C,
    # or when the caller stops on an interrupted run, no queued run may start. (Submitting everything up
    # front, with `with ProcessPoolExecutor`, let an interrupted study go on training the next models:
    # the pool hands queued work to its processes ahead of time and waits for all of it on exit.)
    todo = iter(items)
    running: dict = {}

    def submit_next() -> None:
        for key, cfg in todo:
            running[pool.submit(_run_in_slot, fn, cfg)] = key
            return

    try:
        for _ in slots:
            submit_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                key = running.pop(fut)
                err = fut.exception()
                yield key, (None if err else fut.result()), err
                submit_next()
    finally:
        # the runs in flight finish their step: Ctrl-C reaches the whole process group, and each run
        # checkpoints and stops on it
        pool.shutdown(wait=True, cancel_futures=True)
