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
from cifarbench.models import STEM_STRIDE

# CPU: 2-core AMD EPYC with AVX-512 BF16, torch 2.14.1, 2 threads, training step on random data, ratio to eager
# fp32 in the same command, median of 3 interleaved windows (benchmarks/cpu_levers.py; BENCHMARKS.md "CPU levers"
# has the commands and the whole matrix: 3 models x stems cifar / cifar-s2 x batch 64 / 256).
CPU_TABLE: dict[str, dict] = {
    # resnet18: bf16 + channels_last won in all 4 cells, 1.80x-2.52x (channels_last alone 1.08x-1.28x).
    "resnet": {"amp": True, "channels_last": True},
    # mobilenet_v2_x0_5: channels_last won everywhere (1.56x-1.94x); bf16 on top only pays with large
    # activations (CPU_BF16_FROM below): stem cifar at batch 128 / 256 3.05x / 2.36x, but at batch 64 1.43x
    # against channels_last's 1.56x, and with stem cifar-s2 0.96x / 1.12x against 1.64x / 1.79x.
    "mobilenet_v2": {"amp": True, "channels_last": True},
    # shufflenet_v2_x0_5: channels_last 1.28x-1.75x; bf16 lost in every cell (0.77x-0.93x, with channels_last
    # 0.83x-0.92x): its depthwise convs, shuffles and concats are memory-bound, so bf16 only adds casts.
    "shufflenet_v2": {"channels_last": True},
}
# Families whose bf16 pays only above a batch activation size: batch x (pixels after the stem), where the
# stem divides each side by its stride (imagenet 4, cifar 1, cifar-s2 2). For mobilenet_v2 the measured
# winners: channels_last alone at 16,384 (cifar-s2, b64) and 65,536 (cifar b64, cifar-s2 b256); bf16 +
# channels_last at 131,072 (cifar b128), 262,144 (cifar b256) and 200,704 (imagenet stem at 224 px, b64).
CPU_BF16_FROM: dict[str, int] = {"mobilenet_v2": 131_072}
# A family not in the table: channels_last, the one lever that never lost in these measurements.
CPU_DEFAULT: dict = {"channels_last": True}
# CPUs without native bf16 (no avx512_bf16 / amx_bf16) get no amp: emulated bf16 is slower than fp32.
# No compile on the CPU: for shufflenet_v2_x0_5 inductor took 88 s (cold cache) to compile the training
# step and then ran 1.07x faster than eager channels_last; that pays only after ~20 min of training.
# threads stay torch's default (all cores): on the idle machine two threads beat one at batch 64, with
# channels_last, for shufflenet_v2_x0_5 (612 vs 402 img/s) and mobilenet_v2_x0_5 cifar-s2 (780 vs 502). With
# the cores shared, two spinning OpenMP threads ran at 0.27x of one; that is the environment's business
# (OMP_WAIT_POLICY, or a study's one thread per job), not a config's.

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


def batch_pixels(batch_size: int, stem: str, resolution: int | None) -> int:
    """Pixels per batch after the stem: the activation size that decides whether bf16 pays on the CPU."""
    side = (resolution or 32) // STEM_STRIDE.get(stem, 1)  # None: the dataset's size, 32 for CIFAR (28 for
    return batch_size * side * side                        # Fashion-MNIST falls on the same side of the thresholds)


def fast_settings(model: str, device_type: str, cpu_bf16: bool | None = None, pixels: int | None = None) -> dict:
    """The levers ``--fast`` switches on for ``model`` on a device of ``device_type`` ("cpu", "cuda", "mps").

    ``pixels`` is :func:`batch_pixels` of the run; unknown (None), a family in ``CPU_BF16_FROM`` gets no bf16.
    """
    if device_type == "cuda":
        return dict(CUDA_TABLE.get(model_family(model), CUDA_DEFAULT))
    if device_type == "cpu":
        family = model_family(model)
        settings = dict(CPU_TABLE.get(family, CPU_DEFAULT))
        if cpu_bf16 is None:
            from cifarbench.engine.env import cpu_has_bf16

            cpu_bf16 = cpu_has_bf16()
        if not cpu_bf16 or (family in CPU_BF16_FROM and (pixels or 0) < CPU_BF16_FROM[family]):
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
    settings = fast_settings(cfg.model, _device_type(cfg.device),
                             pixels=batch_pixels(cfg.batch_size, cfg.stem, cfg.resolution))
    changes = {k: v for k, v in settings.items() if v and not getattr(cfg, k)}
    if changes:
        log.info("--fast: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return cfg.replace(**changes)
