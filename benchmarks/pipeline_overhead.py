"""(a) Pipeline overhead: cifarbench's epoch loop against a bare model-step loop, same model, batch and threads.

  A  engine: DeviceLoader (real in-memory images, shuffle + crop + flip + normalise, batched) feeding
     cifarbench.engine.train_one_epoch (autocast, loss, backward, optimizer, per-step LR schedule,
     metric sums, non-finite check);
  B  bare:   forward + backward + optimizer step on one fixed random batch, nothing else.

Both use the same optimizer, schedule and loss built from one TrainConfig. Measurements are
interleaved (A B A B A B) so machine noise hits both; each is --steps steps after a warm-up, and
the figures are medians over --repeats. Target: A / B >= 0.90.

  python benchmarks/pipeline_overhead.py                                    # shapes data, 2 models
  python benchmarks/pipeline_overhead.py --dataset cifar10 --data-dir data --repeats 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn

from cifarbench.bench import random_batch, timed
from cifarbench.config import TrainConfig
from cifarbench.engine import train_one_epoch
from cifarbench.engine.env import device_name, resolve_device
from cifarbench.engine.loader import DeviceLoader
from cifarbench.engine.optim import build_optimizer, build_scheduler


def build(cfg: TrainConfig, channels: int, device: torch.device):
    from cifarbench.models import create_model

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=10, in_chans=channels, stem=cfg.stem).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def engine_runner(cfg: TrainConfig, splits, steps: int, device: torch.device):
    """One call = `steps` steps of train_one_epoch over a fresh slice of the real training images."""
    model = build(cfg, splits.channels, device)
    n = steps * cfg.batch_size
    if len(splits.train) < n:
        raise SystemExit(f"error: {len(splits.train)} training images < steps x batch = {n}; lower --steps")
    loader = DeviceLoader(splits.train.images[:n], splits.train.labels[:n], cfg.batch_size, True, device,
                          splits.mean, splits.std, cfg.resolution, cfg.augment, cfg.seed,
                          channels_last=cfg.channels_last)
    opt = build_optimizer(cfg, model.parameters())
    sched = build_scheduler(cfg, opt, steps * 1000)  # a long schedule: the LR must stay sane over many calls
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    epoch = [0]

    def run():
        loader.set_epoch(epoch[0])  # a new permutation and new augmentations each call, as in training
        epoch[0] += 1
        train_one_epoch(model, loader, opt, sched, crit, amp=cfg.amp)

    return run


def bare_runner(cfg: TrainConfig, channels: int, resolution: int, steps: int, device: torch.device):
    model = build(cfg, channels, device)
    x, y = random_batch(cfg.batch_size, channels, resolution, device, cfg.channels_last)
    opt = build_optimizer(cfg, model.parameters())
    sched = build_scheduler(cfg, opt, steps * 1000)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else None
    model.train()

    def step():
        if autocast is not None:
            with autocast:
                loss = crit(model(x), y)
        else:
            loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    def run():
        for _ in range(steps):
            step()

    return run


def measure(model: str, splits, args, device: torch.device) -> dict:
    cfg = TrainConfig(model=model, stem=args.stem, batch_size=args.batch_size, amp=args.amp,
                      channels_last=args.channels_last, dataset=args.dataset).validate()
    resolution = splits.image_size
    runners = {"engine": engine_runner(cfg, splits, args.steps, device),
               "bare": bare_runner(cfg, splits.channels, resolution, args.steps, device)}
    for run in runners.values():  # warm-up: allocator, oneDNN primitives, first-call costs
        run()
    rates = {k: [] for k in runners}
    for _ in range(args.repeats):
        for k, run in runners.items():  # interleaved: A B A B ...
            rates[k].append(args.steps * cfg.batch_size / timed(run, 1, device))
    eng, bare = statistics.median(rates["engine"]), statistics.median(rates["bare"])
    return {"model": model, "stem": args.stem, "batch_size": args.batch_size, "amp": args.amp,
            "channels_last": args.channels_last, "threads": torch.get_num_threads(), "steps": args.steps,
            "engine_img_s": round(eng, 1), "bare_img_s": round(bare, 1), "ratio": round(eng / bare, 3),
            "engine_all": [round(r, 1) for r in rates["engine"]], "bare_all": [round(r, 1) for r in rates["bare"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "shufflenet_v2_x0_5"])
    ap.add_argument("--dataset", default="shapes")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("-b", "--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    from cifarbench.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    splits = load_dataset(args.dataset, data_dir=args.data_dir)
    t0 = time.time()
    rows = [measure(m, splits, args, device) for m in args.models]
    meta = {"command": " ".join(["python"] + sys.argv), "machine": device_name(device), "device": str(device),
            "torch": torch.__version__, "dataset": args.dataset, "date": time.strftime("%Y-%m-%d"),
            "wall_s": round(time.time() - t0, 1)}
    print(f"# {meta['command']}\n# {meta['machine']}, torch {meta['torch']}, {meta['date']}, {args.dataset}, "
          f"median of {args.repeats} interleaved repeats of {args.steps} steps")
    print(f"{'model':<22}{'threads':>8}{'batch':>7}{'engine img/s':>14}{'bare img/s':>12}{'ratio':>8}")
    for r in rows:
        print(f"{r['model']:<22}{r['threads']:>8}{r['batch_size']:>7}{r['engine_img_s']:>14.1f}"
              f"{r['bare_img_s']:>12.1f}{r['ratio']:>8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
