"""Ablation of the accuracy features (issue 12): each feature on and off, same model, seeds and epochs.

Every arm is the quick preset's ShuffleNetV2 x0.5 final run (CIFAR stem, 32 px, batch 64, nesterov, one-cycle,
lr 0.1, label smoothing 0.1, 3 epochs on the 45,000 training images) plus one feature. Each finished run is
evaluated on the validation and test splits plainly and with both TTA modes, so the TTA rows need no runs of
their own. Selection-worthy figures are the validation ones; the test figures are reported, never used to
choose (a preset takes a feature only on its validation gain).

  python benchmarks/ablation.py --data-dir DATA --seeds 0 1 --out bench-out/ablation [--threads 1]
  python benchmarks/ablation.py --data-dir DATA --set model=resnet18 stem=cifar-s2 amp=true --arms baseline crop-pad-2

`--set KEY=VALUE ...` changes the base recipe (any TrainConfig field; VALUE is read as `--override` reads it),
so the same arms can be measured on another model or epoch count.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from cifarbench.config import TrainConfig, write_json
from cifarbench.engine import checkpoint, train
from cifarbench.engine import trainer as T
from cifarbench.engine.loader import DeviceLoader
from cifarbench.study.spec import parse_override_args

BASE = dict(model="shufflenet_v2_x0_5", stem="cifar", dataset="cifar10", epochs=3, batch_size=64, lr=0.1,
            opt="nesterov", sched="onecycle", label_smoothing=0.1, weight_decay=5e-4, channels_last=True)
ARMS = {
    "baseline": {},
    "model-ema": {"model_ema": True, "model_ema_decay": 0.998},
    "cutout-8": {"cutout": 8},
    "no-wd-norm-bias": {"wd_norm_bias": False},
    # lighter augmentation: these runs underfit (train accuracy stays below validation accuracy)
    "crop-pad-2": {"crop_pad": 2},
    "flip-only": {"augment": "flip"},
    "alternate-flip": {"flip": "alternate"},  # each image mirrored in every other epoch, not at random
    "label-smoothing-0.2": {"label_smoothing": 0.2},
    "batch-32": {"batch_size": 32, "lr": None},  # lr None: half the base lr (same lr per image)
    "no-dropout": {"model_kwargs": {"dropout": 0.0}},  # MobileNetV2's classifier dropout (0.2) off
    "zero-init-residual": {"model_kwargs": {"zero_init_residual": True}},  # ResNet: each block starts as identity
    # progressive resizing: 16 (or 24) px growing to 32 over the first 75 % of the steps (--prog-res)
    "prog-res-16": {"prog_res": 16},
    "prog-res-24": {"prog_res": 24},
    # issue 12's "anything else": Lookahead at timm's defaults (alpha 0.5, k 6), mixup and CutMix at CIFAR's usual alphas
    "lookahead": {"lookahead": True},
    "mixup-0.2": {"mixup": 0.2},
    "cutmix-1.0": {"cutmix": 1.0},
    "whiten-init": {"whiten_init": True},  # the first conv starts as patch-whitening filters (models/whiten.py)
}


def tta_figures(run: Path, cfg: TrainConfig, splits) -> dict:
    """Plain, flip and flip-translate accuracy of the run's best checkpoint on val and test."""
    model = T.build_model(cfg, splits.num_classes, splits.channels)
    model.load_state_dict(checkpoint.eval_state_dict(checkpoint.load(run / "best.pt")))
    model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
    out = {}
    for split in ("val", "test"):
        part = getattr(splits, split)
        loader = DeviceLoader(part.images, part.labels, 500, False, "cpu", splits.mean, splits.std,
                              channels_last=cfg.channels_last)
        for tta in ("flip", "flip-translate"):  # each pass also gives the plain figure
            r = T.evaluate(model, loader, torch.nn.CrossEntropyLoss(), splits.num_classes, amp=cfg.amp, tta=tta)
            out[f"{split}_none"], out[f"{split}_{tta}"] = round(r["acc"], 3), round(r["acc_tta"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-only", action="store_true",
                    help="record the runs' plain validation accuracy only (no TTA or test passes: a cheap screen)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="change the base recipe")
    ap.add_argument("--out", default="bench-out/ablation")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    splits = T.load_splits(TrainConfig(dataset="cifar10", data_dir=args.data_dir))
    base = {**BASE, **parse_override_args(args.set, flag="--set")}
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            change = dict(ARMS[arm])
            if change.get("lr", 0) is None:
                change["lr"] = base["lr"] * change["batch_size"] / base["batch_size"]
            cfg = TrainConfig(**{**base, **change}, seed=seed, threads=args.threads, data_dir=args.data_dir,
                              output=str(out / f"{arm}-seed{seed}"), resume="auto", eval_test=not args.val_only)
            t0 = time.perf_counter()
            res = train(cfg, splits=splits)
            row = {"arm": arm, "seed": seed, "train_time_s": res["train_time_s"],
                   "wall_s": round(time.perf_counter() - t0, 1),
                   **({"val_none": res["val_acc"]} if args.val_only else tta_figures(Path(cfg.output), cfg, splits))}
            rows.append(row)
            write_json(out / "ablation.json", rows)
            print(json.dumps(row), flush=True)
    summary = {}
    for arm in args.arms:
        mine = [r for r in rows if r["arm"] == arm]
        summary[arm] = {k: round(statistics.fmean(r[k] for r in mine), 2) for k in mine[0] if k[:3] in ("val", "tes")}
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
