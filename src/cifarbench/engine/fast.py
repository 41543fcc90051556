"""`--fast`: the training settings measured fastest on this kind of device, per model family.

Every entry of the tables below cites the measurement that justified it (BENCHMARKS.md, section
"Fast path"; commands in benchmarks/cpu_levers.py and benchmarks/fast_path.py). The fast path only
switches levers *on*: a setting the config already asks for (``--amp``, ``--channels-last``,
``--compile``, ``--threads``) is never switched off. It changes nothing that alters what is computed
beyond bf16 rounding: batch size, learning rate and schedule stay the recipe's, so the accuracy of
a ``--fast`` run matches the plain run's (benchmarks/fast_path.py shows it).
"""
from __future__ import annotations

from cifarbench import log
from cifarbench.config import TrainConfig

# CPU (x86 with AVX-512 BF16; 2-core AMD EPYC, torch 2.14.1), training images/s at 32 px, batch 256,
# eager fp32 -> lever, median of 3 interleaved windows (benchmarks/cpu_levers.py):
CPU_TABLE: dict[str, dict] = {
    # resnet18 stem cifar: bf16 autocast 35 -> 81 img/s (2.3x); channels_last adds nothing measurable.
    "resnet": {"amp": True, "channels_last": True},
    # mobilenet_v2_x0_5 stem cifar: bf16 autocast 105 -> 227 img/s (2.2x).
    "mobilenet_v2": {"amp": True, "channels_last": True},
    # shufflenet_v2_x0_5 stem cifar: bf16 is *slower* (583 -> 517 img/s: depthwise convs and channel
    # shuffles gain nothing from bf16 matmuls and pay the casts); channels_last is the lever.
    "shufflenet_v2": {"channels_last": True},
}
# A family not in the table: channels_last is the one lever that never lost in our measurements.
CPU_DEFAULT: dict = {"channels_last": True}
# CPUs without native bf16 (no avx512_bf16 / amx_bf16): bf16 autocast is emulated and slower.
# torch.compile is not in any CPU entry: on 2 cores inductor takes minutes to compile a forward and
# backward graph, longer than a whole short run, for a gain we could not show.

# CUDA (bf16 tensor cores): bf16 autocast and channels_last are the standard wins for convnets on
# Ampere/Hopper. compile is left off: its 1-2 minute compile time is a large share of a 60 s run;
# benchmarks/gpu.sh measures it (bench --compile) so the choice can be revisited with numbers.
CUDA_DEFAULT: dict = {"amp": True, "channels_last": True}


def model_family(name: str) -> str:
    """The registry's family of a model name (``resnet``, ``mobilenet_v2``, ``shufflenet_v2``, ...)."""
    from cifarbench.models.registry import model_family as family

    return family(name)


def fast_settings(model: str, device_type: str, cpu_bf16: bool | None = None) -> dict:
    """The levers ``--fast`` switches on for ``model`` on a device of ``device_type`` ("cpu", "cuda", "mps")."""
    if device_type == "cuda":
        return dict(CUDA_DEFAULT)
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
