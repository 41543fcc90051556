"""The fast path's speed and accuracy: the same runs (model, data, recipe, seed) with and without `--fast`.

For each seed, trains the plain config and the `--fast` config (engine/fast.py) one after the other
and reports validation accuracy after the same epochs and the engine's training images/s (median
epoch). Equal accuracy within seed noise is the requirement; the speed-up is the point.

  python benchmarks/fast_path.py --model shufflenet_v2_x0_5 --dataset cifar10 --data-dir data \\
      --train-subset 5000 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from cifarbench.config import TrainConfig
from cifarbench.engine import train
from cifarbench.engine.fast import apply_fast


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shufflenet_v2_x0_5")
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("--dataset", default="shapes")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-subset", type=int, default=4000)
    ap.add_argument("--val-size", type=int, default=None, help="default: the dataset's")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("-b", "--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=None, help="default: TrainConfig's")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    base = TrainConfig(model=args.model, stem=args.stem, dataset=args.dataset, data_dir=args.data_dir,
                       train_subset=args.train_subset, val_size=args.val_size, epochs=args.epochs, batch_size=args.batch_size,
                       device=args.device, threads=args.threads, eval_test=False, keep_best=False)
    if args.lr is not None:
        base = base.replace(lr=args.lr)
    fast = apply_fast(base)
    changed = {k: v for k, v in fast.to_dict().items() if v != base.to_dict()[k]}
    runs = {"plain": [], "fast": []}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, cfg in (("plain", base), ("fast", fast)):
                res = train(cfg.replace(seed=seed, output=f"{tmp}/{name}-{seed}").validate())
                runs[name].append({"seed": seed, "val_acc": res["val_acc"], "best_val_acc": res["best_val_acc"],
                                   "images_per_sec": res["images_per_sec"], "train_time_s": res["train_time_s"]})
    summary = {k: {"val_acc_mean": round(statistics.mean(r["val_acc"] for r in v), 2),
                   "img_s_median": round(statistics.median(r["images_per_sec"] for r in v), 1)}
               for k, v in runs.items()}
    speedup = summary["fast"]["img_s_median"] / summary["plain"]["img_s_median"]
    print(f"# {' '.join(['python'] + sys.argv)}  ({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s)")
    print(f"# --fast changes: {changed or 'nothing on this device'}")
    print(f"{'setting':<8}{'val acc %':>11}{'img/s':>9}   per seed")
    for k, v in runs.items():
        print(f"{k:<8}{summary[k]['val_acc_mean']:>11.2f}{summary[k]['img_s_median']:>9.1f}   "
              + "  ".join(f"seed {r['seed']}: {r['val_acc']:.2f}% {r['images_per_sec']:.0f} img/s" for r in v))
    print(f"speed-up {speedup:.2f}x, accuracy difference {summary['fast']['val_acc_mean'] - summary['plain']['val_acc_mean']:+.2f} points")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"changes": changed, "runs": runs, "summary": summary, "speedup": round(speedup, 3)}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
