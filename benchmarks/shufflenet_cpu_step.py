"""What else might speed up shufflenet_v2_x0_5's CPU training step at the recipe's batch 64 (issue 5, (b))?

Three experiments on the bare training step (cifarbench.bench.make_train_step, random data, stem cifar,
channels_last with cifarbench's layout-keeping blocks, which is what `--fast` trains):

  profile  torch.profiler over 20 steps of the engine's own loop (DeviceLoader + train_one_epoch on the
           real CIFAR-10), ops by self CPU time: where the step's time goes.
  stack    the blocks' concatenation + channel shuffle (two copies) against one torch.stack in NHWC (one
           copy). Checks that outputs and gradients are identical, then times both, interleaved.
  malloc   glibc's default allocator against one kept from returning freed activations to the kernel
           (mallopt: mmap threshold 32 MiB, trim threshold 1 GiB): images/s, page faults and system time
           per step, in alternating child processes (mallopt is process-wide and one-way).

  python benchmarks/shufflenet_cpu_step.py profile --data-dir data
  python benchmarks/shufflenet_cpu_step.py stack
  python benchmarks/shufflenet_cpu_step.py malloc --pairs 3 --seconds 8
"""
from __future__ import annotations

import argparse
import ctypes
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torchvision.models.shufflenetv2 import InvertedResidual

from cifarbench.bench import make_train_step, random_batch
from cifarbench.models import create_model
from cifarbench.models.layout import ShuffleBlock

MODEL = "shufflenet_v2_x0_5"


def build(block_cls=ShuffleBlock) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=10, stem="cifar").to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, InvertedResidual):
            m.__class__ = block_cls
    return model


def interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cat((a, b), 1) followed by a 2-group channel shuffle, as one stack in NHWC (channels_last inputs)."""
    n, c, h, w = a.shape
    y = torch.stack((a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)), dim=4)
    return y.view(n, h, w, 2 * c).permute(0, 3, 1, 2)


class StackBlock(InvertedResidual):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            return interleave(x1, self.branch2(x2))
        return interleave(self.branch1(x), self.branch2(x))


def rate(step, batch: int, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def cmd_stack(args) -> None:
    x, y = random_batch(args.batch_size, 3, 32, torch.device("cpu"), channels_last=True)
    a, b = build(ShuffleBlock), build(StackBlock)
    out_a, out_b = a(x), b(x)
    torch.nn.functional.cross_entropy(out_a, y).backward()
    torch.nn.functional.cross_entropy(out_b, y).backward()
    same = torch.equal(out_a, out_b) and all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))
    steps = {"cat+shuffle": make_train_step(a, x, y), "stack": make_train_step(b, x, y)}
    rates = {k: [] for k in steps}
    for s in steps.values():
        s(), s()  # warm-up
    for _ in range(args.repeats):
        for k, s in steps.items():
            rates[k].append(rate(s, args.batch_size, 15))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"identical outputs and gradients: {same}")
    print(f"img/s, median of {args.repeats} interleaved windows of 15 steps: cat+shuffle {med['cat+shuffle']:.1f}, "
          f"stack {med['stack']:.1f}, ratio {med['stack'] / med['cat+shuffle']:.3f}")


def _malloc_child(mode: str, batch: int, seconds: float) -> None:
    if mode == "tuned":
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        if libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) != 1 or libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1:
            raise SystemExit("error: mallopt refused the thresholds")
    x, y = random_batch(batch, 3, 32, torch.device("cpu"), channels_last=True)
    step = make_train_step(build(), x, y)
    for _ in range(3):
        step()
    r0, t, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        step()
        n += 1
    dt, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    print(f"{mode:<8} {n * batch / dt:8.1f} img/s  page faults/step {(r1.ru_minflt - r0.ru_minflt) / n:7.0f}  "
          f"system ms/step {(r1.ru_stime - r0.ru_stime) / n * 1000:5.1f}", flush=True)


def cmd_malloc(args) -> None:
    for _ in range(args.pairs):
        for mode in ("default", "tuned"):
            subprocess.run([sys.executable, __file__, "malloc-child", mode, str(args.batch_size), str(args.seconds)],
                           check=True)


def cmd_profile(args) -> None:
    import torch.profiler as tp

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pipeline_overhead import engine_runner

    from cifarbench.config import TrainConfig
    from cifarbench.engine.fast import apply_fast
    from cifarbench.engine.trainer import load_splits

    cfg = apply_fast(TrainConfig(model=MODEL, stem="cifar", batch_size=args.batch_size, device="cpu",
                                 dataset="cifar10", data_dir=args.data_dir))
    run = engine_runner(cfg, load_splits(cfg), 20, torch.device("cpu"))
    run()  # warm-up
    with tp.profile(activities=[tp.ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    if sys.argv[1:2] == ["malloc-child"]:
        return _malloc_child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=["profile", "stack", "malloc"])
    ap.add_argument("-b", "--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 (profile only)")
    ap.add_argument("--repeats", type=int, default=5, help="stack: interleaved windows")
    ap.add_argument("--pairs", type=int, default=3, help="malloc: default/tuned process pairs")
    ap.add_argument("--seconds", type=float, default=8.0, help="malloc: timed seconds per process")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the malloc children inherit it
    {"profile": cmd_profile, "stack": cmd_stack, "malloc": cmd_malloc}[args.experiment](args)


if __name__ == "__main__":
    main()
