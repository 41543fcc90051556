"""The optimizer step alone: the engine's FlatFusedSGD against torch.optim.SGD(fused=True), per model.

Each model is built with its small-image stem, in channels_last (as the engine trains it), every parameter given
a random gradient; Nesterov SGD with weight decay, the engine's recipe. The two optimizers alternate over
--rounds rounds of --steps steps each, after 3 warm-up steps; the figure is the median ms per step. The
whole training step is cpu_levers.py's business (its `torchfused` token); this shows where the time goes.

  python benchmarks/optimizer_step.py --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from cifarbench.engine.optim import FlatFusedSGD
from cifarbench.models import create_model

MODELS = ("resnet18", "mobilenet_v2_x0_5", "shufflenet_v2_x0_5")


def timed_steps(model: torch.nn.Module, cls, steps: int) -> float:
    opt = cls(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)
    for _ in range(3):
        opt.step()
    t = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--stem", default="cifar-s2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {args.threads} thread(s), stem {args.stem}, channels_last, median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'model':22} {'FlatFusedSGD ms':>16} {'torch fused ms':>15} {'ratio':>6}")
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, stem=args.stem).to(memory_format=torch.channels_last)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(timed_steps(model, FlatFusedSGD, args.steps))
            theirs.append(timed_steps(model, torch.optim.SGD, args.steps))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{name:22} {a:16.2f} {b:15.2f} {b / a:5.2f}x")


if __name__ == "__main__":
    main()
