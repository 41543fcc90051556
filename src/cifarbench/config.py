"""Run configuration: one dataclass, TOML defaults, and validation with clear messages.

A ``TrainConfig`` is the whole truth about a run: it is written to ``config.json`` in
the run folder and stored inside every checkpoint, so a run can be resumed or
re-evaluated from its folder alone.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from cifarbench.errors import CifarbenchError
from cifarbench.models import STEMS  # the one definition, torch-free

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("plateau", "cosine", "onecycle", "step", "none")
FLIPS = ("random", "alternate")  # --flip
DEVICES = ("auto", "cpu", "cuda", "mps")
TTA_MODES = ("none", "flip", "flip-translate")
# forward passes per image that --tta adds to a plain evaluation (its first view is the plain forward, shared)
TTA_VIEWS = {"none": 0, "flip": 1, "flip-translate": 5}
LOGGERS = ("none", "tensorboard")
# torch.compile's modes. "reduce-overhead" adds CUDA graphs: the lever for small models whose GPU step is
# bound by kernel launches (BENCHMARKS.md, "GPU"); on the CPU it compiles like "default".
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def run_steps(epochs: float, steps_per_epoch: int) -> int:
    """Training steps of a run of ``epochs`` epochs (a float: 2.4 is two whole passes over the training images
    and 40 % of a third): round(epochs x steps_per_epoch), at least 1. The one definition, for the engine's
    loop and schedules and for the study's budget."""
    return max(1, round(epochs * steps_per_epoch))


def epoch_passes(epochs: float, steps_per_epoch: int) -> int:
    """Passes over the training images (each ends with a validation pass): the last may be partial."""
    return -(-run_steps(epochs, steps_per_epoch) // max(1, steps_per_epoch))


def compile_mode(value: bool | str) -> str | None:
    """torch.compile's ``mode`` for a ``compile`` setting (True or a mode name); None means its default."""
    if value is True or value == "default":
        return None
    if value not in COMPILE_MODES:
        raise CifarbenchError(f"--compile {value!r}: choose one of {', '.join(COMPILE_MODES)}")
    return value


@dataclass
class TrainConfig:
    # model and data
    model: str = "resnet18"
    dataset: str = "shapes"
    data_dir: str | None = None
    stem: str = "cifar"
    # keyword arguments for the torchvision builder (timm's --model-kwargs), e.g. {"dropout": 0.0} for
    # mobilenet_v2 or {"zero_init_residual": True} for resnet*: recorded like any other architecture change
    model_kwargs: dict = field(default_factory=dict)
    resolution: int | None = None  # None: the dataset's native size; 224 reproduces the study
    # batch 64 and lr 0.1: few-epoch CPU runs gain more from 4x the steps than they lose in speed
    # (ShuffleNetV2 x0.5 cifar stem on CIFAR-10: 70.8% val after a 3-epoch run at batch 64; a batch-256
    # run stood at 60.9% after the same 3 epochs. BENCHMARKS.md, "Recipe exploration")
    batch_size: int = 64
    eval_batch_size: int = 500
    # a float trains a fraction of a last pass (2.4: two passes and 40 % of the steps of a third), as airbench's
    # fractional epochs do; the study's time budget uses it to spend its time in steps finer than an epoch
    epochs: int | float = 5
    val_size: int | None = None  # None: the dataset's default (5,000 for CIFAR-10)
    train_subset: int | None = None  # stratified subset of the training split, for quick runs
    augment: str = "crop-flip"  # crop-flip | flip | none
    crop_pad: int = 4  # crop-flip: random crop of the image zero-padded by this many px per side (4: the CIFAR standard)
    # random: each image mirrored with probability 1/2 in every epoch; alternate: at random in the first epoch,
    # then each image mirrored exactly in the epochs it was not in the one before (a short run sees both views)
    flip: str = "random"
    cutout: int = 0  # side in pixels of a square set to the mean colour, one per training image (0: off)
    # mixup / CutMix (timm's --mixup, --cutmix): Beta(alpha, alpha) mixing of each batch with itself reversed
    # (0: off); with both on, each batch uses CutMix with probability mixup_switch_prob (engine/mix.py)
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_switch_prob: float = 0.5
    # progressive resizing: training starts at prog_res px and grows linearly to the run's resolution at
    # fraction prog_res_end of its training steps (0: off; evaluation is always at the run's resolution)
    prog_res: int = 0
    prog_res_end: float = 0.75
    # optimizer
    opt: str = "nesterov"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    wd_norm_bias: bool = True  # False: no weight decay on norm weights and biases (1-d parameters)
    # the first conv starts as +/- patch-whitening filters of the training images (models/whiten.py; an init
    # only: the layer keeps its shape and stays trainable)
    whiten_init: bool = False
    # Lookahead around the optimizer (timm's --opt lookahead_*): every lookahead_k steps the slow weights move
    # lookahead_alpha of the way to the fast ones, which restart there (engine/lookahead.py)
    lookahead: bool = False
    lookahead_alpha: float = 0.5
    lookahead_k: int = 6
    # weight EMA: evaluation, selection and best.pt's eval weights use the average (timm's --model-ema)
    model_ema: bool = False
    model_ema_decay: float = 0.999  # warmed up: min(decay, (1 + step) / (10 + step))
    tta: str = "none"  # none | flip | flip-translate: extra accuracies at the end, beside the plain ones
    # schedule
    sched: str = "onecycle"
    patience: int = 3
    factor: float = 0.1
    warmup_epochs: float = 0.0
    step_size: int = 30
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool | str = False  # True, or one of COMPILE_MODES
    sync_bn: bool = False  # DDP: torch.nn.SyncBatchNorm (CUDA only); else BN buffers are averaged across ranks
    log: str = "none"  # none | tensorboard: event files in the run folder
    threads: int | None = None
    output: str | None = None
    resume: str | None = None  # None, "auto" or a checkpoint path
    eval_test: bool = True  # False in a study's sweep and final stages: the test split is not read
    keep_best: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CifarbenchError(f"{source}: unknown option(s) {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrainConfig":
        """Refuse impossible settings before any work starts. Data-dependent checks live in the engine."""
        def bad(msg):
            raise CifarbenchError(msg)

        if self.opt not in OPTIMIZERS:
            bad(f"--opt {self.opt!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.sched not in SCHEDULES:
            bad(f"--sched {self.sched!r}: choose one of {', '.join(SCHEDULES)}")
        if not isinstance(self.model_kwargs, dict) or not all(isinstance(k, str) for k in self.model_kwargs):
            bad(f"--model-kwargs {self.model_kwargs!r}: give KEY=VALUE pairs")
        if self.stem not in STEMS:
            bad(f"--stem {self.stem!r}: choose one of {', '.join(STEMS)}")
        if self.device not in DEVICES and not self.device.startswith(("cuda:", "cpu")):
            bad(f"--device {self.device!r}: choose one of {', '.join(DEVICES)} (or cuda:N)")
        if self.augment not in ("crop-flip", "flip", "none"):
            bad(f"augment {self.augment!r}: choose crop-flip, flip or none")
        if self.flip not in FLIPS:
            bad(f"--flip {self.flip!r}: choose {' or '.join(FLIPS)}")
        if not 0 <= self.crop_pad <= 16:
            bad(f"--crop-pad {self.crop_pad}: must be in [0, 16]")
        if self.prog_res and self.prog_res < 8:
            bad(f"--prog-res {self.prog_res}: must be 0 (off) or at least 8 pixels")
        if not 0 < self.prog_res_end <= 1:
            bad(f"--prog-res-end {self.prog_res_end}: must be in (0, 1]")
        if self.cutout < 0:
            bad(f"--cutout {self.cutout}: must not be negative")
        if self.mixup < 0 or self.cutmix < 0:
            bad(f"--mixup {self.mixup} / --cutmix {self.cutmix}: Beta alphas must not be negative (0: off)")
        if not 0 <= self.mixup_switch_prob <= 1:
            bad(f"--mixup-switch-prob {self.mixup_switch_prob}: must be in [0, 1]")
        if not 0 < self.lookahead_alpha <= 1:
            bad(f"--lookahead-alpha {self.lookahead_alpha}: must be in (0, 1]")
        if self.lookahead_k < 1:
            bad(f"--lookahead-k {self.lookahead_k}: must be at least 1")
        if not 0 < self.model_ema_decay < 1:
            bad(f"--model-ema-decay {self.model_ema_decay}: must be in (0, 1)")
        if self.tta not in TTA_MODES:
            bad(f"--tta {self.tta!r}: choose one of {', '.join(TTA_MODES)}")
        if self.log not in LOGGERS:
            bad(f"--log {self.log!r}: choose one of {', '.join(LOGGERS)}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float)) or not self.epochs >= 1 \
                or self.epochs == float("inf"):
            bad(f"--epochs {self.epochs}: must be a number, at least 1")
        if isinstance(self.epochs, float) and self.epochs.is_integer():
            self.epochs = int(self.epochs)  # 3.0 is 3: config.json and the logs say so
        if self.batch_size < 1 or self.eval_batch_size < 1:
            bad(f"--batch-size {self.batch_size}: must be at least 1")
        if self.resolution is not None and self.resolution < 8:
            bad(f"--resolution {self.resolution}: must be at least 8 pixels")
        if not (self.lr > 0 and self.lr < float("inf")):
            bad(f"--lr {self.lr}: must be a positive finite number")
        if self.weight_decay < 0:
            bad(f"--weight-decay {self.weight_decay}: must not be negative")
        if not 0 <= self.momentum < 1:
            bad(f"--momentum {self.momentum}: must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            bad(f"--label-smoothing {self.label_smoothing}: must be in [0, 1)")
        if not 0 < self.factor < 1:
            bad(f"--factor {self.factor}: must be in (0, 1)")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            bad(f"--warmup-epochs {self.warmup_epochs}: must be in [0, epochs={self.epochs})")
        if self.threads is not None and self.threads < 1:
            bad(f"--threads {self.threads}: must be at least 1")
        if self.compile:
            compile_mode(self.compile)
        if self.val_size is not None and self.val_size < 0:
            bad(f"--val-size {self.val_size}: must not be negative")
        if self.train_subset is not None and self.train_subset < 1:
            bad(f"train_subset {self.train_subset}: must be at least 1")
        return self


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise CifarbenchError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise CifarbenchError(f"{path}: not valid TOML ({e})") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    tmp.replace(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CifarbenchError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise CifarbenchError(f"{path}: not valid JSON ({e})") from None
