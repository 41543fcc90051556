"""Per-convolution timing: oneDNN's kernels against engine/cpu_conv.py's matmul formulation.

For every distinct dense convolution of a model at batch B and the given resolution (shapes found by running
the model once), times the three halves of its training cost, one thread, channels_last, in bf16 (the default)
or fp32 (--dtype fp32: the CPUs without native bf16, where the study trains ResNet18 in fp32):
  fwd        conv2d forward                         | matmul: im2col + one GEMM
  bwd_data   gradient of the input                  | matmul: GEMM + fold of the taps (used up to 4x4 maps)
  bwd_w      gradient of the weight                 | matmul: im2col + one GEMM
Each figure: median over --repeats of the mean of --iters calls, after 3 warm-up calls; GFLOP/s counts
2 x MACs of the convolution. This is the measurement behind cpu_conv's thresholds (MATMUL_MAX_PIXELS,
FOLD_MAX_PIXELS); a whole training step is cpu_levers.py's job (token mm).

  python benchmarks/conv_kernels.py --model resnet18 --stem cifar-s2 [--dtype fp32]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarbench.engine.cpu_conv import MatmulConv, _columns, _fold, _as_matrix
from cifarbench.engine.env import device_name
from cifarbench.models import create_model


def shapes(model: nn.Module, batch: int, resolution: int) -> list[tuple]:
    found = []

    def hook(m, inp, out):
        if m.groups == 1:
            found.append((inp[0].shape[1], m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0],
                          inp[0].shape[2], out.shape[2]))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(batch, 3, resolution, resolution))
    for h in hooks:
        h.remove()
    return sorted(set(found), key=lambda s: (-s[6], s[0], s[1], s[3]))


def timed_ms(fn, iters: int, repeats: int) -> float:
    for _ in range(3):
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        runs.append((time.perf_counter() - t) / iters * 1e3)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--stem", default="cifar-s2")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("-b", "--batch-size", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dt, cl = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype], torch.channels_last
    print(f"# {device_name(torch.device('cpu'))}, torch {torch.__version__}, 1 thread, {args.dtype}, channels_last, "
          f"batch {args.batch_size}, {args.model} stem {args.stem} at {args.resolution} px; ms per call, median of "
          f"{args.repeats} x {args.iters}; x = oneDNN / matmul")
    print(f"{'in -> out, k/s, map':28s} {'fwd':>16s} {'bwd_data':>16s} {'bwd_w':>16s} {'GFLOP/s bwd_w':>14s}")
    total = [0.0, 0.0]
    for c, o, k, s, p, h, ho in shapes(create_model(args.model, stem=args.stem), args.batch_size, args.resolution):
        x = torch.randn(args.batch_size, c, h, h, dtype=dt).contiguous(memory_format=cl)
        w = torch.randn(o, c, k, k, dtype=dt).contiguous(memory_format=cl)
        g = torch.randn(args.batch_size, o, ho, ho, dtype=dt).contiguous(memory_format=cl)
        conf = ([s, s], [p, p], [1, 1], False, [0, 0], 1)
        n = args.batch_size * ho * ho
        onednn = [timed_ms(lambda: F.conv2d(x, w, None, s, p), args.iters, args.repeats),
                  timed_ms(lambda: torch.ops.aten.convolution_backward(g, x, w, None, *conf, [True, False, False]),
                           args.iters, args.repeats),
                  timed_ms(lambda: torch.ops.aten.convolution_backward(g, x, w, None, *conf, [False, True, False]),
                           args.iters, args.repeats)]
        g2 = g.permute(0, 2, 3, 1).reshape(n, o)
        matmul = [timed_ms(lambda: MatmulConv.forward(_Ctx(), x, w, s, p, False), args.iters, args.repeats),
                  timed_ms(lambda: _fold(g2 @ _as_matrix(w), x.shape, k, s, p, args.batch_size, ho, ho),
                           args.iters, args.repeats),
                  timed_ms(lambda: g2.t() @ _columns(x, k, s, p)[0], args.iters, args.repeats)]
        gflop = 2 * n * o * c * k * k / 1e9
        cells = " ".join(f"{a:6.2f}/{b:6.2f} {a / b:4.1f}x" for a, b in zip(onednn, matmul))
        print(f"{c:4d} -> {o:4d}, {k}/{s}, {h:2d}->{ho:2d}px  {cells}  {gflop / onednn[2] * 1e3:5.0f}/{gflop / matmul[2] * 1e3:5.0f}")
        total[0] += sum(onednn)
        total[1] += sum(matmul)
    print(f"# sum over distinct shapes (each once): oneDNN {total[0]:.1f} ms, matmul {total[1]:.1f} ms")


class _Ctx:  # MatmulConv.forward outside autograd: a stand-in for the context it saves into
    def save_for_backward(self, *t):
        pass


if __name__ == "__main__":
    main()
