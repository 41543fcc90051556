"""Ablation of the accuracy features (issue 12): each feature on and off, same model, seeds and epochs.

Every arm is the quick preset's ShuffleNetV2 x0.5 final run (CIFAR stem, 32 px, batch 64, nesterov, one-cycle,
lr 0.1, label smoothing 0.1, 3 epochs on the 45,000 training images) plus one feature. Each finished run is
evaluated on the validation and test splits plainly and with both TTA modes, so the TTA rows need no runs of
their own. Selection-worthy figures are the validation ones; the test figures are reported, never used to
choose (a preset takes a feature only on its validation gain).

  python benchmarks/ablation.py --data-dir DATA --seeds 0 1 --out bench-out/ablation [--threads 1]
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

BASE = dict(model="shufflenet_v2_x0_5", stem="cifar", dataset="cifar10", epochs=3, batch_size=64, lr=0.1,
            opt="nesterov", sched="onecycle", label_smoothing=0.1, weight_decay=5e-4, channels_last=True)
ARMS = {
    "baseline": {},
    "model-ema": {"model_ema": True, "model_ema_decay": 0.998},
    "cutout-8": {"cutout": 8},
    "no-wd-norm-bias": {"wd_norm_bias": False},
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
        for tta in ("none", "flip", "flip-translate"):
            acc = T.evaluate(model, loader, torch.nn.CrossEntropyLoss(), splits.num_classes, amp=False, tta=tta)["acc"]
            out[f"{split}_{tta}"] = round(acc, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench-out/ablation")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    splits = T.load_splits(TrainConfig(dataset="cifar10", data_dir=args.data_dir))
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            cfg = TrainConfig(**BASE, **ARMS[arm], seed=seed, threads=args.threads, data_dir=args.data_dir,
                              output=str(out / f"{arm}-seed{seed}"), resume="auto")
            t0 = time.perf_counter()
            res = train(cfg, splits=splits)
            row = {"arm": arm, "seed": seed, "train_time_s": res["train_time_s"],
                   "wall_s": round(time.perf_counter() - t0, 1), **tta_figures(Path(cfg.output), cfg, splits)}
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
