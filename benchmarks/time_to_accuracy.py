"""(c) Time and (d) compute to the study's test accuracy, for one model and one training recipe.

Trains with cifarbench.engine.train (every `cifarbench train` flag works here, -c TOML too) and, after
each epoch, evaluates the epoch's checkpoint (last.pt) on the TEST split. The test split is read only
to time this benchmark: nothing is chosen with it (not the epoch, not the recipe, not the stopping
point of a real run; the recipe comes in through the flags, fixed in advance). Figures, at epoch
granularity:

  train_s   seconds of training (the sum of the engine's epoch times) until test accuracy first
            exceeds --target;
  test_acc_flip_tta  also recorded per epoch, for information: the mirror-averaged accuracy; the
            timed figure is always the plain test accuracy
  wall_s    wall clock from the start of training (model build, compile, validation, checkpoints
            included; data loading and this script's own test evaluations excluded) to that point;
  pflops    training compute to that point: 3 x forward MACs x 2 FLOPs per MAC x images seen / 1e15;
  study     the study's compute for the same model: 50 epochs x 45,000 images x 3 x MACs at 224 px with
            the ImageNet stem x 2 / 1e15 (final run only; with its 3 x 30-epoch sweep: x 140/50).

Targets default to the study's test accuracies (71.27 / 66.91 / 68.21). The run stops at the first
epoch above --target (--no-stop trains all epochs).

  python benchmarks/time_to_accuracy.py --model shufflenet_v2_x0_5 --stem cifar --dataset cifar10 \\
      --data-dir data --epochs 5 --fast
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cifarbench.cli import add_train_args, train_config_from_args

STUDY_ACC = {"resnet18": 71.27, "mobilenet_v2_x0_5": 66.91, "shufflenet_v2_x0_5": 68.21}
STUDY_EPOCHS, STUDY_SWEEP_EPOCHS, STUDY_TRAIN_IMAGES = 50, 3 * 30, 45_000


def study_pflops(model: str, num_classes: int = 10) -> dict:
    """The study's training compute for `model`: ImageNet stem at 224 px (its model summary's input)."""
    from cifarbench.models import create_model
    from cifarbench.models.profile import count_macs

    macs = count_macs(create_model(model, num_classes=num_classes, stem="imagenet"), (1, 3, 224, 224))
    final = 3 * macs * 2 * STUDY_EPOCHS * STUDY_TRAIN_IMAGES / 1e15
    return {"study_macs_per_image_224": macs, "study_pflops_final": round(final, 4),
            "study_pflops_with_sweep": round(final * (STUDY_EPOCHS + STUDY_SWEEP_EPOCHS) / STUDY_EPOCHS, 4)}


class TestTimer:
    """The on_epoch callback: test accuracy of each epoch's checkpoint, and the time to --target."""

    def __init__(self, cfg, splits, target: float, stop: bool, t_start: float):
        from cifarbench.engine.env import resolve_device
        from cifarbench.engine.loader import DeviceLoader

        self.cfg, self.splits, self.target, self.stop, self.t_start = cfg, splits, target, stop, t_start
        self.device = resolve_device(cfg.device)
        self.loader = DeviceLoader(splits.test.images, splits.test.labels, cfg.eval_batch_size, False, self.device,
                                   splits.mean, splits.std, cfg.resolution, channels_last=cfg.channels_last)
        self.model = None
        self.overhead_s = 0.0  # time spent here, taken off the wall clock
        self.train_s = 0.0
        self.epochs: list[dict] = []
        self.reached: dict | None = None

    def __call__(self, epoch: int, row: dict) -> bool:
        t0 = time.perf_counter()
        self.train_s += row["epoch_time"]
        wall = t0 - self.t_start - self.overhead_s
        # fork_rng: building the evaluation model draws from the global RNG, which the run's dropout
        # also uses; the run must not change because it is being watched.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            acc, acc_flip = self._test_acc()
        rec = {"epoch": epoch, "val_acc": row["val_acc"], "test_acc": round(acc, 3),
               "test_acc_flip_tta": round(acc_flip, 3),
               "train_s": round(self.train_s, 2), "wall_s": round(wall, 2)}
        self.epochs.append(rec)
        from cifarbench import log

        log.info(f"time_to_accuracy: epoch {epoch} test {acc:.2f}% (flip TTA {acc_flip:.2f}%, target {self.target}) "
                 f"train {self.train_s:.1f}s wall {wall:.1f}s")
        if self.reached is None and acc > self.target:
            self.reached = rec
        self.overhead_s += time.perf_counter() - t0
        return self.stop and self.reached is not None

    def _test_acc(self) -> tuple[float, float]:
        """Plain test accuracy (the one timed) and, for information only, with flip test-time augmentation."""
        from cifarbench.engine import checkpoint
        from cifarbench.engine.trainer import build_model

        if self.model is None:
            self.model = build_model(self.cfg, self.splits.num_classes, self.splits.channels).to(self.device)
            if self.cfg.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
        state = checkpoint.load(Path(self.cfg.output) / "last.pt", map_location=self.device)["model"]
        self.model.load_state_dict(state)
        # one pass for both: the plain logits, and flip TTA (the logits of each image and its mirror image
        # averaged, the way airbench reports)
        self.model.eval()
        correct = correct_flip = 0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp)
        with torch.no_grad(), autocast:
            for x, y in self.loader:
                out = self.model(x).float()
                correct += int((out.argmax(1) == y).sum())
                out_flip = out + self.model(x.flip(3)).float()
                correct_flip += int((out_flip.argmax(1) == y).sum())
        n = len(self.splits.test)
        return 100.0 * correct / n, 100.0 * correct_flip / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_args(ap)
    ap.add_argument("--target", type=float, default=None, help="test accuracy %% to reach (default: the study's)")
    ap.add_argument("--no-stop", action="store_true", help="train every epoch, even after the target is reached")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    target, no_stop, json_path = args.target, args.no_stop, args.json
    del args.target, args.no_stop, args.json
    cfg = train_config_from_args(args)
    if target is None:
        if cfg.model not in STUDY_ACC:
            raise SystemExit(f"error: no study figure for {cfg.model}; pass --target")
        target = STUDY_ACC[cfg.model]
    if cfg.output is None:
        cfg = cfg.replace(output=f"bench-out/tta-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    # The engine's own final test evaluation is not needed: this script evaluates every epoch itself.
    cfg = cfg.replace(eval_test=False).validate()

    from cifarbench.engine import Interrupted, train
    from cifarbench.engine.trainer import load_splits

    t_load = time.perf_counter()
    splits = load_splits(cfg)
    load_s = time.perf_counter() - t_load
    t_start = time.perf_counter()
    timer = TestTimer(cfg, splits, target, not no_stop, t_start)
    try:
        res = train(cfg, splits=splits, on_epoch=timer)
    except (Interrupted, KeyboardInterrupt) as e:
        # e.g. gpu.sh's time limit: keep the epochs measured so far
        from cifarbench.models import create_model
        from cifarbench.models.profile import count_macs

        model = create_model(cfg.model, num_classes=splits.num_classes, in_chans=splits.channels, stem=cfg.stem)
        res = {"status": f"interrupted ({type(e).__name__})", "env": None,
               "macs_per_image": count_macs(model, (1, splits.channels, cfg.resolution or splits.image_size,
                                                    cfg.resolution or splits.image_size))}

    macs = res["macs_per_image"]
    images_per_epoch = (len(splits.train) // cfg.batch_size) * cfg.batch_size  # the loader drops the last batch
    out = {"model": cfg.model, "stem": cfg.stem, "dataset": cfg.dataset, "target": target,
           "config": cfg.to_dict(), "env": res.get("env"), "status": res.get("status"),
           "data_load_s": round(load_s, 2), "macs_per_image": macs, "epochs": timer.epochs,
           "reached": timer.reached is not None, "command": " ".join(["python"] + sys.argv)}
    if timer.reached:
        e = timer.reached["epoch"]
        out.update(epoch=e, test_acc=timer.reached["test_acc"], train_s=timer.reached["train_s"],
                   wall_s=timer.reached["wall_s"], train_min=round(timer.reached["train_s"] / 60, 2),
                   wall_min=round(timer.reached["wall_s"] / 60, 2),
                   pflops=3 * macs * 2 * images_per_epoch * e / 1e15)
    else:
        best = max(timer.epochs, key=lambda r: r["test_acc"]) if timer.epochs else None
        out.update(best_test_acc=best and best["test_acc"])
    out.update(study_pflops(cfg.model, len(splits.classes)))
    if timer.reached:
        out["compute_ratio_vs_study_final"] = round(out["study_pflops_final"] / out["pflops"], 1)
        out["pflops"] = round(out["pflops"], 6)

    if out["reached"]:
        print(f"{cfg.model}: test {out['test_acc']:.2f}% > {target} after epoch {out['epoch']}: "
              f"{out['train_min']:.2f} min training, {out['wall_min']:.2f} min wall; "
              f"{out['pflops']:.4f} PFLOPs vs the study's {out['study_pflops_final']:.3f} "
              f"({out['compute_ratio_vs_study_final']}x less)")
    else:
        print(f"{cfg.model}: target {target}% not reached in {len(timer.epochs)} epochs "
              f"(best test {out.get('best_test_acc')}%)")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0 if out["reached"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
