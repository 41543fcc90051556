"""`--fast`: the training settings measured fastest on this kind of device, per model family.

Every entry of the tables below cites the measurement that justified it (BENCHMARKS.md, section
"Fast path"; commands in benchmarks/cpu_levers.py and benchmarks/fast_path.py). The fast path only
switches levers *on*: a setting the config already asks for (``--amp``, ``--channels-last``,
``--compile``, ``--threads``) is never switched off. It changes nothing that alters what is computed
beyond bf16 rounding: batch size, learning rate and schedule stay the recipe's, so a ``--fast`` run
should reach the plain run's accuracy (benchmarks/fast_path.py compares the two, same seed).
"""
from __future__ import annotations

from cifarbench import log
from cifarbench.config import TrainConfig

# CPU: 2-core AMD EPYC with AVX-512 BF16, torch 2.14.1, 32 px, batch 256, training step on random data,
# ratio to eager fp32 in the same command, median of 3 interleaved windows, 1 thread (benchmarks/cpu_levers.py;
# BENCHMARKS.md "Fast path" has the commands and the raw numbers):
CPU_TABLE: dict[str, dict] = {
    # resnet18 stem cifar-s2: bf16 2.16x, bf16 + channels_last 2.27x (stem cifar, lead: bf16 35 -> 81 img/s).
    "resnet": {"amp": True, "channels_last": True},
    # mobilenet_v2_x0_5 stem cifar: channels_last 1.75x, bf16 2.06x, bf16 + channels_last 2.50x.
    "mobilenet_v2": {"amp": True, "channels_last": True},
    # shufflenet_v2_x0_5 stem cifar: channels_last 1.45-1.55x (1.22x at 2 threads); bf16 0.82x at 2 threads
    # (lead: 583 -> 517 img/s) and bf16 + channels_last below channels_last alone: its depthwise convs,
    # shuffles and concats are memory-bound, so bf16 only adds casts.
    "shufflenet_v2": {"channels_last": True},
}
# A family not in the table: channels_last, the one lever that never lost in these measurements.
CPU_DEFAULT: dict = {"channels_last": True}
# CPUs without native bf16 (no avx512_bf16 / amx_bf16) get no amp: emulated bf16 is slower than fp32.
# No compile on the CPU: for shufflenet_v2_x0_5 inductor took 88 s (cold cache) to compile the training
# step and then ran 1.07x faster than eager channels_last; that pays only after ~20 min of training.
# threads stay torch's default: with the cores shared, two spinning OpenMP threads ran at 0.27x of one,
# but on an idle machine two should win; that is the environment's business (OMP_WAIT_POLICY), not a config's.

# CUDA: one H200, torch 2.11, 32 px, batch 256, `cifarbench bench` training images/s, median of 5
# (benchmarks/gpu.sh; BENCHMARKS.md "GPU"). fp32 / bf16 / channels_last / bf16 + channels_last:
CUDA_TABLE: dict[str, dict] = {
    # resnet18 stem cifar: 20.1k / - / - / 24.8k img/s (1.23x); + compile 23.3k (no gain at this batch)
    "resnet": {"amp": True, "channels_last": True},
    # mobilenet_v2_x0_5: 14.8k / 10.9k / 11.8k / 10.8k. Its depthwise convolutions are slower in bf16 and
    # in channels_last on this GPU, so fp32 eager stays.
    "mobilenet_v2": {},
    # shufflenet_v2_x0_5: 12.5k / 12.3k / 8.9k / 8.7k: fp32 eager again.
    "shufflenet_v2": {},
}
# Other families: bf16 + channels_last, the standard tensor-core win for dense convolutions (unmeasured here).
CUDA_DEFAULT: dict = {"amp": True, "channels_last": True}


def model_family(name: str) -> str:
    """The registry's family of a model name (``resnet``, ``mobilenet_v2``, ``shufflenet_v2``, ...)."""
    from cifarbench.models.registry import model_family as family

    return family(name)


def fast_settings(model: str, device_type: str, cpu_bf16: bool | None = None) -> dict:
    """The levers ``--fast`` switches on for ``model`` on a device of ``device_type`` ("cpu", "cuda", "mps")."""
    if device_type == "cuda":
        return dict(CUDA_TABLE.get(model_family(model), CUDA_DEFAULT))
    if device_type == "cpu":
        settings = dict(CPU_TABLE.get(model_family(model), CPU_DEFAULT))
        if cpu_bf16 is None:
            from cifarbench.engine.env import cpu_has_bf16

            cpu_bf16 = cpu_has_bf16()
        if not cpu_bf16:
            settings.pop("amp", None)
        return settings
    return {}  # mps and others: nothing measured yet, so nothing changed


def _device_type(device: str) -> str:
    if device == "auto":
        from cifarbench.engine.env import resolve_device

        return resolve_device("auto").type
    return device.split(":")[0]


def apply_fast(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the fast levers for its model and device switched on (see the tables above)."""
    settings = fast_settings(cfg.model, _device_type(cfg.device))
    changes = {k: v for k, v in settings.items() if v and not getattr(cfg, k)}
    if changes:
        log.info("--fast: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return cfg.replace(**changes)
