"""Data-parallel training with PyTorch's own engine: torchrun sets the environment, we read it.

Rank 0 alone writes files and prints; metrics are summed across ranks with all_reduce.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is True on any rank (used so all ranks stop at the same step)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running mean/var) over ranks, as timm's distribute_bn does.

        Why: each rank updates its BN statistics on its own slice of every batch, and DDP broadcasts rank 0's
        buffers only at the start of each forward, so after the last step the ranks disagree. Evaluating each
        shard with its own buffers, then saving rank 0's, would report an accuracy that the checkpoint does not
        have. After averaging, every rank holds the same buffers, which are the ones saved.
        """
        if not self.enabled:
            return
        for b in model.buffers():
            if b.is_floating_point():
                dist.all_reduce(b, op=dist.ReduceOp.SUM)
                b.div_(self.world_size)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def from_env() -> DistContext:
    """Read torchrun's variables; one process when they are absent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(ctx: DistContext, device: torch.device) -> None:
    if ctx.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        # free what still holds the group (a DDP reducer in a reference cycle) while the interpreter is alive:
        # gloo work destroyed during interpreter shutdown aborts the process
        gc.collect()
        dist.destroy_process_group()
