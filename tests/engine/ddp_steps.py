"""A few training steps through the engine's own parts, as one process or as one rank under torchrun.

    python ddp_steps.py OUT -b 32                                        # one process
    python -m torch.distributed.run --nproc-per-node 2 ddp_steps.py OUT -b 16   # two ranks
    python ddp_steps.py OUT -b 16 --shard 0/2                             # one process, rank 0's slices only

Used by tests/engine/test_distributed.py. What runs is what `train()` runs for a step: `DeviceLoader`
sharded by (rank, world_size), `build_optimizer` + `build_scheduler`, `train_one_epoch`, DDP on gloo. The
model has no BatchNorm (its statistics are per rank by design) and no dropout (its masks are per rank), so
N ranks × batch B and one process × batch N·B must end with the same parameters, up to summation order.
Rank 0 saves the parameters and the summed epoch metrics to OUT.
"""
import argparse
import gc

import torch
import torch.nn as nn

from cifarbench.config import TrainConfig
from cifarbench.engine import distributed
from cifarbench.engine.loader import DeviceLoader
from cifarbench.engine.optim import build_optimizer, build_scheduler, param_groups
from cifarbench.engine.trainer import train_one_epoch

EPOCHS = 2


def data(n: int = 256, seed: int = 1):
    """4 classes, 12×12 RGB: the class is the colour of a square on noise (like tests/conftest.py)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 60, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)
    images[:, :, 3:9, 3:9] = colours[labels].view(n, 3, 1, 1)
    return images, labels


def net() -> nn.Module:
    """Deterministic normalisation: none at all. Same init on every rank (DDP also broadcasts rank 0's)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("-b", type=int, required=True)
    p.add_argument("--shard", default=None, help="R/W: without DDP, take rank R of W's slices (a negative control)")
    args = p.parse_args()
    torch.set_num_threads(1)
    ctx = distributed.from_env()
    device = torch.device("cpu")
    distributed.init(ctx, device)
    rank, world = (int(v) for v in args.shard.split("/")) if args.shard else (ctx.rank, ctx.world_size)

    images, labels = data()
    mean, std = (images.float() / 255).mean((0, 2, 3)).tolist(), (images.float() / 255).std((0, 2, 3)).tolist()
    # crop-flip on: the augmentation draws must follow each image to whichever rank takes it
    loader = DeviceLoader(images, labels, args.b, True, device, mean, std, augment="crop-flip", seed=3,
                          rank=rank, world_size=world)
    cfg = TrainConfig(opt="nesterov", lr=0.05, momentum=0.9, weight_decay=5e-4, sched="cosine", epochs=EPOCHS)
    model = net()
    optimizer = build_optimizer(cfg, param_groups(model, cfg))
    scheduler = build_scheduler(cfg, optimizer, len(loader))
    train_model = nn.parallel.DistributedDataParallel(model) if ctx.enabled else model
    sums = []
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        r = train_one_epoch(train_model, loader, optimizer, scheduler, nn.CrossEntropyLoss(), amp=False)
        assert r["stopped"] is None, r
        sums.append(ctx.all_reduce_sum(r["sums"].clone()))
    if ctx.is_main:
        torch.save({"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "sums": torch.stack(sums), "steps": len(loader)}, args.out)
    # Drop DDP, and with it its reducer's hold on the process group, before the group is destroyed: the engine
    # does the same by returning from _run. Destroyed under a live DDP, gloo's threads outlive the group and
    # can abort the process at exit ("terminate called without an active exception", seen twice under load).
    del train_model
    gc.collect()
    ctx.barrier()
    distributed.shutdown(ctx)


if __name__ == "__main__":
    main()
