"""Will N runs side by side fit on their device? Checked before any run starts (``--jobs``, ``--workers``).

Several runs on one GPU are several processes (``jobs.py``), and each holds all of its own memory, so the
packing fits when N x (one run's memory) fits in what the device has free. One run's memory is estimated
from what the project can compute without training:

- data: the dataset's uint8 images, train + val + test at their native size (the engine keeps a split on the
  device and resizes batch by batch; counting test too is the upper bound, a study's runs leave it on disk);
- state: parameters x 4 bytes x (weights + gradients + the optimizer's buffers (SGD 0, momentum 1, Adam 2)
  + 1 for a weight EMA (``model_ema``) + 1/2 for the bf16 weight copies autocast keeps under ``amp``);
- activations: ``models.profile.summarize``'s ``backward_activation_bytes`` (measured bytes autograd saves
  in one forward, per image at the run's resolution, fp32, the input included) x ``batch_size``; or, if
  larger, an evaluation batch: 2 x the largest layer output x ``eval_batch_size`` (no_grad frees the rest);
- overhead per process: ``CUDA_CONTEXT`` on a GPU (the context, cuDNN and cuBLAS handles and workspaces:
  0.5 GiB is the usual figure, not yet measured in this project; benchmarks/packing.py measures the memory
  N runs really use beside this estimate);
  ``CPU_PROCESS`` on the CPU (measured on the development machine, torch 2.14: importing torch and
  torchvision peaks at 0.8 GiB resident, a whole tiny ShuffleNetV2 run on ``shapes`` at 1.2 GiB);

total = overhead + ``SAFETY`` x (data + state + activations); the factor covers what the sum leaves out:
the peak of backward (gradients of the current layer and its temporaries), the caching allocator's
fragmentation, BatchNorm's statistics, cuDNN's autotuning workspaces, CUDA-graph pools.
Free memory is ``torch.cuda.mem_get_info`` on CUDA (after this process's own context) and MemAvailable from
/proc/meminfo on the CPU; other devices (MPS) are not checked. The probe is an argument, so tests mock it.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from cifarbench import log
from cifarbench.config import TrainConfig
from cifarbench.errors import CifarbenchError
from cifarbench.study.jobs import Slot
from cifarbench.study.spec import StudySpec, params_of

GIB = 2**30
CUDA_CONTEXT = GIB // 2
CPU_PROCESS = GIB
SAFETY = 1.5
# Test images per dataset, beside plan.DATASETS' training files (unknown datasets: CIFAR-10's shape).
TEST_IMAGES = {"cifar10": 10000, "cifar100": 10000, "fashion-mnist": 10000, "mnist": 10000, "shapes": 2000}
OPTIMIZER_BUFFERS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}

FreeProbe = Callable[[str], "int | None"]


@dataclass(frozen=True)
class RunMemory:
    model: str
    data: int
    state: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return int(self.overhead + SAFETY * (self.data + self.state + self.activations))

    def describe(self) -> str:
        return (f"data {gib(self.data)}, weights + grads + optimizer {gib(self.state)}, activations "
                f"{gib(self.activations)}, x{SAFETY:g}, + {gib(self.overhead)} per process")


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / GIB:.2f} GiB"


@functools.lru_cache(maxsize=64)
def _profile(model: str, stem: str, resolution: int, channels: int, classes: int) -> tuple[int, int, int]:
    """(params, saved-for-backward bytes per image, largest layer output in elements per image)."""
    from cifarbench.models.profile import summarize

    s = summarize(model, input_size=resolution, stem=stem, num_classes=classes, in_chans=channels, batch_size=1)
    largest = 0
    for layer in s["layers"]:
        n = 1
        for d in layer["output_shape"] or [0]:
            n *= d
        largest = max(largest, n)
    return s["params"], s["backward_activation_bytes"], max(largest, channels * resolution * resolution)


def run_memory(cfg: TrainConfig, device_type: str) -> RunMemory:
    """The estimate of one run's memory on a device of ``device_type`` (see the module docstring)."""
    from cifarbench.study.plan import DATASETS

    name = cfg.dataset.split(":")[0]
    n_train, native, channels, classes = DATASETS.get(name, (50000, 32, 3, 10))
    data = (n_train + TEST_IMAGES.get(name, 10000)) * channels * native * native
    resolution = cfg.resolution or native
    params, saved, largest = _profile(cfg.model, cfg.stem, resolution, channels, classes)
    copies = (2 + OPTIMIZER_BUFFERS.get(cfg.opt, 2) + (1 if cfg.model_ema else 0) + (1 if cfg.lookahead else 0)
              + (0.5 if cfg.amp else 0))
    activations = max(saved * cfg.batch_size, 2 * largest * 4 * cfg.eval_batch_size)
    overhead = CUDA_CONTEXT if device_type == "cuda" else CPU_PROCESS
    return RunMemory(cfg.model, data, int(params * 4 * copies), activations, overhead)


# ---------------------------------------------------------------- free memory
def mem_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes; None where there is no such file (macOS, Windows)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_memory(device: str) -> int | None:
    """Free bytes on ``device`` ("cuda:N" or "cpu"); None for a device this check does not know."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    if device.startswith("cpu"):
        return mem_available()
    return None


def device_of(slot: Slot, cfg: TrainConfig) -> str:
    """The device a run in ``slot`` lands on, as "cuda:N", "cpu" or "mps" (what the engine resolves)."""
    name = slot.device or cfg.device
    if name in (None, "auto"):
        from cifarbench.engine.env import resolve_device

        name = str(resolve_device("auto"))
    return "cuda:0" if name == "cuda" else name


# ---------------------------------------------------------------- the check
def study_configs(spec: StudySpec, stages: tuple[str, ...] = ("sweep", "final")) -> list[TrainConfig]:
    """Every run config ``stages`` of a study may train: each grid point in each stage (a final takes a
    winner's point, not known before the sweep)."""
    return [spec.run_config(m, stage, params) for m in spec.models
            for params in ([params_of(p) for p in m.grid] or [{}]) for stage in stages]


def check_packing(cfgs: list[TrainConfig], slots: list[Slot], flag: str = "--jobs",
                  probe: FreeProbe | None = None) -> dict[str, Any] | None:
    """Refuse (CifarbenchError) ``len(slots)`` runs side by side when they cannot fit on their devices.

    ``cfgs``: every run the processes may take; each process is counted with the largest of them, since any
    process may draw any run. Returns what was checked (for study.json), or None with one slot.
    """
    if len(slots) <= 1 or not cfgs:
        return None
    probe = probe or free_memory
    per_device: Counter = Counter(device_of(s, cfgs[0]) for s in slots)
    checked = {}
    for device, count in per_device.items():
        kind = device.split(":")[0]
        if kind not in ("cuda", "cpu"):
            continue
        worst = max((run_memory(c, kind) for c in cfgs), key=lambda r: r.total)
        free = probe(device)
        if free is None:
            continue
        need = count * worst.total
        checked[device] = {"runs": count, "per_run_bytes": worst.total, "need_bytes": need, "free_bytes": free,
                           "largest_run": worst.model, "estimate": worst.describe()}
        if need > free:
            fits = free // worst.total
            # the slots go round-robin over the devices: each takes as many as fit on this one
            hint = (f"use {flag} {fits * len(per_device)} or fewer" if fits >= 1 else
                    f"one run alone needs more than is free ({worst.describe()})")
            raise CifarbenchError(f"{flag} {len(slots)}: {count} runs of {worst.model} need ~{gib(need)} on {device}, "
                                  f"which has {gib(free)} free; {hint}")
        log.info(f"memory: {count} runs side by side on {device} need ~{gib(need)} of {gib(free)} free "
                 f"(per run, {worst.model}: {worst.describe()})")
    return checked

