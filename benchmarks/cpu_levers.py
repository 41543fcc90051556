"""What makes training faster on this machine? Training images/s of one model under several "levers",
measured interleaved (round 1: A B C ..., round 2: A B C ...) so that machine noise hits every lever alike.

A lever is a '+'-joined set of tokens:
  fp32     the eager fp32 baseline (no token needed)
  cl       channels_last memory format (model and batch)
  bf16     bf16 autocast
  compile  torch.compile (inductor); its compile time (first step) is reported too
  tN       N intra-op threads (default: torch's default, the number of cores)
  loop     the optimizer step as torch's per-parameter Python loop (its CPU default, and every figure
           measured before 2026-12-01) instead of the fused step the engine now uses
  torchfused  torch's own fused step (torch.optim.SGD(fused=True), the engine's step up to 2026-12-03) instead
           of the engine's FlatFusedSGD, which calls the same kernel on flat aliases (engine/optim.py)
  bN       batch size N (default --batch-size)
  mm       small-map convolutions as matmuls (cifarbench.engine.cpu_conv; in bf16 with bf16, else in fp32)
           with the AMX thresholds (output maps up to 64 pixels, the input gradient up to 16); without the
           token the lever runs oneDNN's convolutions everywhere
  mmN      the same up to N pixels, the input gradient too (mm4: what the engine uses on AVX-512 BF16
           without AMX, and in fp32 on AVX2 without AVX-512)
  nhwcshuffle  ShuffleNetV2 only: cifarbench's channel shuffle that keeps channels_last
           (cifarbench.models.layout; what create_model builds). Without this token the lever runs
           torchvision's own blocks, whose .contiguous() turns every block's output back into NCHW

Each figure: forward + backward + SGD step on a random batch (cifarbench.bench.make_train_step),
median over --repeats windows of about --window seconds each, after warm-up. Two rates per lever:
img/s (wall clock: what a user sees) and img/cpu-s (images per second of this process's CPU time).
On a machine shared with other jobs the second is the steadier one for single-thread levers; with
N threads it also counts OpenMP spin-waiting, so compare thread counts by wall clock on a quiet machine.

  python benchmarks/cpu_levers.py --model shufflenet_v2_x0_5 --stem cifar \\
      --levers fp32 cl bf16 bf16+cl t1 b128 b512 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time

import torch

from cifarbench.bench import make_train_step, random_batch, timed
from cifarbench.engine.env import device_name
from cifarbench.engine.cpu_conv import FOLD_MAX_PIXELS, MATMUL_MAX_PIXELS, use_matmul_convs
from cifarbench.models.layout import keep_channels_last



def parse_lever(spec: str, batch_size: int, threads: int) -> dict:
    lever = dict(name=spec, cl=False, bf16=False, compile=False, nhwcshuffle=False, loop=False, torchfused=False, mm=None, threads=threads,
                 batch_size=batch_size)
    for tok in spec.split("+"):
        if tok == "fp32":
            continue
        elif tok in ("cl", "bf16", "compile", "nhwcshuffle", "loop", "torchfused"):
            lever[tok] = True
        elif tok == "mm":
            lever["mm"] = (MATMUL_MAX_PIXELS, FOLD_MAX_PIXELS)
        elif tok[:2] == "mm" and tok[2:].isdigit():
            lever["mm"] = (int(tok[2:]), int(tok[2:]))
        elif tok[:1] == "t" and tok[1:].isdigit():
            lever["threads"] = int(tok[1:])
        elif tok[:1] == "b" and tok[1:].isdigit():
            lever["batch_size"] = int(tok[1:])
        else:
            raise SystemExit(f"error: lever token {tok!r} in {spec!r}: use fp32, cl, bf16, compile, nhwcshuffle, loop, torchfused, mm, mmN, tN or bN")
    return lever


def prepare(lever: dict, model_name: str, stem: str, resolution: int, window_s: float, warmup: int) -> dict:
    from cifarbench.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(lever["threads"])
    model = create_model(model_name, num_classes=10, stem=stem)
    # cifarbench's ShuffleNetV2 keeps channels_last through its shuffles; torchvision's does not
    keep_channels_last(model, enable=lever["nhwcshuffle"])
    if lever["cl"]:
        model = model.to(memory_format=torch.channels_last)
    if lever["mm"]:
        use_matmul_convs(model, *lever["mm"], fp32=not lever["bf16"])
    net = torch.compile(model) if lever["compile"] else model
    x, y = random_batch(lever["batch_size"], 3, resolution, torch.device("cpu"), lever["cl"])
    step = make_train_step(net, x, y, amp=lever["bf16"], loop=lever["loop"], torch_fused=lever["torchfused"])
    cpu = torch.device("cpu")
    first_s = timed(step, 1, cpu)  # with compile: the compilation
    if warmup > 1:
        timed(step, warmup - 1, cpu)
    probe = timed(step, 1, cpu)
    return dict(lever, step=step, first_s=first_s, steps=max(1, math.ceil(window_s / probe)), rates=[], cpu_rates=[])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shufflenet_v2_x0_5")
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("-b", "--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--levers", nargs="+", default=["fp32", "cl", "bf16", "bf16+cl"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=float, default=1.0, help="seconds per timed window")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.time()
    levers = [prepare(parse_lever(s, args.batch_size, args.threads), args.model, args.stem, args.resolution,
                      args.window, args.warmup) for s in args.levers]
    cpu = torch.device("cpu")
    for _ in range(args.repeats):
        for lv in levers:
            torch.set_num_threads(lv["threads"])
            c0 = time.process_time()
            wall = timed(lv["step"], lv["steps"], cpu)
            n = lv["batch_size"] * lv["steps"]
            lv["rates"].append(n / wall)
            lv["cpu_rates"].append(n / (time.process_time() - c0))
    base = statistics.median(levers[0]["rates"])
    rows = [{"model": args.model, "stem": args.stem, "lever": lv["name"], "threads": lv["threads"],
             "batch_size": lv["batch_size"], "img_s": round(statistics.median(lv["rates"]), 1),
             "vs_first": round(statistics.median(lv["rates"]) / base, 3),
             "img_per_cpu_s": round(statistics.median(lv["cpu_rates"]), 1),
             "all": [round(r, 1) for r in lv["rates"]], "first_step_s": round(lv["first_s"], 2)}
            for lv in levers]
    meta = {"machine": device_name(cpu), "cores": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
            "command": " ".join(["python"] + sys.argv), "wall_s": round(time.time() - t0, 1)}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        print(f"# {meta['command']}\n# {meta['machine']}, torch {meta['torch']}, {meta['date']}, "
              f"median of {args.repeats} interleaved windows, {meta['wall_s']} s")
        print(f"{'lever':<18}{'threads':>8}{'batch':>7}{'img/s':>9}{'ratio':>7}{'img/cpu-s':>10}  first step s  all")
        for r in rows:
            print(f"{r['lever']:<18}{r['threads']:>8}{r['batch_size']:>7}{r['img_s']:>9.1f}{r['vs_first']:>7.2f}"
                  f"{r['img_per_cpu_s']:>10.1f}  {r['first_step_s']:>12.2f}  {r['all']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
