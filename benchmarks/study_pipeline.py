"""(b) cifarbench's training pipeline against one written the way the study's code works.

  study      torchvision.datasets.CIFAR10 (the same cifar-10-batches-py folder), PIL transforms
             (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), DataLoader(batch,
             shuffle=True, num_workers=W), a plain loop: .to(device), forward, loss, backward, SGD step,
             running loss and accuracy with .item() every step. W = 2 and W = 0 are both measured.
  cifarbench DeviceLoader (uint8 split in memory, batched augmentation) + engine.train_one_epoch, the
             default recipe's optimizer and schedule, eager fp32;
  fast       the same with `--fast` (engine/fast.py: the measured-fastest levers for this device).

Same model (stem cifar, 32 px), batch and threads for all. Each figure is images/s over --steps
steps, median of --repeats; pipelines are interleaved in every repeat so machine noise hits all of
them. DataLoader workers prefetch while other pipelines run, so before each timed window the study
pipeline first trains untimed on the batches its workers already hold (W x prefetch_factor): the
window then sees the steady state of the middle of an epoch, not a head start.

  python benchmarks/study_pipeline.py --data-dir data
  python benchmarks/study_pipeline.py --data-dir gpu-data --device cuda --steps 50   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_overhead import build, engine_runner  # noqa: E402  (the engine side, shared with (a))

from cifarbench.bench import timed  # noqa: E402
from cifarbench.config import TrainConfig  # noqa: E402
from cifarbench.engine.env import device_name, resolve_device  # noqa: E402
from cifarbench.engine.fast import apply_fast  # noqa: E402

PREFETCH = 2  # DataLoader's default prefetch_factor


def study_dataset(root: str):
    import torchvision
    import torchvision.transforms as T

    base = torchvision.datasets.CIFAR10

    class CIFAR10(base):
        # The dev copy of CIFAR-10 is rebuilt from JPEGs, so its MD5s differ from the official files and
        # torchvision would refuse it; same files and layout, so only the MD5 checks are switched off
        # (torchvision's check_integrity accepts any existing file when the MD5 is None).
        train_list = [[name, None] for name, _ in base.train_list]
        test_list = [[name, None] for name, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    return CIFAR10(root, train=True, download=False, transform=tf)


def study_runner(model_name: str, stem: str, dataset, batch_size: int, workers: int, steps: int,
                 device: torch.device):
    from torch.utils.data import DataLoader

    model = build(TrainConfig(model=model_name, stem=stem), 3, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-6)
    crit = nn.CrossEntropyLoss()
    dl = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                    persistent_workers=workers > 0)
    state = {"it": iter(dl), "loss": 0.0, "correct": 0}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:  # next epoch
            state["it"] = iter(dl)
            return next(state["it"])

    def step():
        model.train()
        x, y = next_batch()
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss = crit(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["loss"] += loss.item()
        state["correct"] += (out.argmax(1) == y).sum().item()

    def run():
        for _ in range(steps):
            step()

    def drain():
        for _ in range(workers * PREFETCH):
            step()

    return run, drain


def measure(model: str, args, splits, dataset, device: torch.device) -> dict:
    base = TrainConfig(model=model, stem=args.stem, batch_size=args.batch_size, dataset="cifar10",
                       device=str(device)).validate()
    fast = apply_fast(base)
    runners, drains = {}, {}
    for w in args.workers:
        runners[f"study_w{w}"], drains[f"study_w{w}"] = study_runner(model, args.stem, dataset, args.batch_size,
                                                                     w, args.steps, device)
    runners["cifarbench"] = engine_runner(base, splits, args.steps, device)
    runners["fast"] = engine_runner(fast, splits, args.steps, device)
    for k, run in runners.items():  # warm-up (starts the workers, builds kernels)
        run()
    rates = {k: [] for k in runners}
    for _ in range(args.repeats):
        for k, run in runners.items():
            if k in drains:
                drains[k]()
            rates[k].append(args.steps * args.batch_size / timed(run, 1, device))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ref = max(med[f"study_w{w}"] for w in args.workers)  # the better of the study's configurations
    row = {"model": model, "stem": args.stem, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
           "device": str(device), "fast": {k: v for k, v in fast.to_dict().items() if v != base.to_dict()[k]}}
    row.update({f"{k}_img_s": round(v, 1) for k, v in med.items()})
    row["ratio_cifarbench"] = round(med["cifarbench"] / ref, 2)
    row["ratio_fast"] = round(med["fast"] / ref, 2)
    row["all"] = {k: [round(r, 1) for r in v] for k, v in rates.items()}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2_x0_5", "shufflenet_v2_x0_5"])
    ap.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py/")
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("-b", "--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 0], help="DataLoader num_workers to measure")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    from cifarbench.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    splits = load_dataset("cifar10", data_dir=args.data_dir, download=False)
    dataset = study_dataset(args.data_dir)
    t0 = time.time()
    rows = [measure(m, args, splits, dataset, device) for m in args.models]
    meta = {"command": " ".join(["python"] + sys.argv), "machine": device_name(device), "device": str(device),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "steps": args.steps,
            "repeats": args.repeats, "wall_s": round(time.time() - t0, 1)}
    print(f"# {meta['command']}\n# {meta['machine']}, torch {meta['torch']}, {meta['date']}, "
          f"images/s over {args.steps} steps, median of {args.repeats} interleaved repeats")
    names = [f"study_w{w}" for w in args.workers] + ["cifarbench", "fast"]
    print(f"{'model':<22}" + "".join(f"{n:>14}" for n in names) + f"{'x (plain)':>11}{'x (fast)':>10}  fast =")
    for r in rows:
        print(f"{r['model']:<22}" + "".join(f"{r[n + '_img_s']:>14.1f}" for n in names)
              + f"{r['ratio_cifarbench']:>11.2f}{r['ratio_fast']:>10.2f}  {r['fast']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
