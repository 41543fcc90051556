"""N `cifarbench train` runs side by side on one device: aggregate training images/s against one run (issue 13).

Small models are launch-bound on a big GPU (ShuffleNetV2 x0.5 at batch 256 kept an H200 about 1 TFLOP/s busy),
so a second process can use the time the first spends launching kernels. For each N this launches N identical
runs (seeds 0..N-1) at once, as `cifarbench study --jobs N` places them on one GPU, and reads back:

- per run: results.json `images_per_sec` (its median training epoch) and the epoch times from metrics.csv;
- aggregate: the sum of the runs' images/s (steady state, if their epochs overlapped: compare the epoch
  times), and the wall-clock rate, every image of every run over the time from launch to the last exit
  (start-up included, so below the steady state);
- memory: what cifarbench.study.memory estimates for N runs, and what was used: free memory before the launch
  minus the lowest free memory seen while they ran (polled every 0.2 s: torch.cuda.mem_get_info on CUDA,
  MemAvailable on the CPU), to check the estimate against the device.

    python benchmarks/packing.py --device cuda --data-dir gpu-data/data --counts 1 2 4 8 --json $OUT/packing.json
    python benchmarks/packing.py --dry    # the same path on the CPU: shapes, tiny runs, N = 1 and 2
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shufflenet_v2_x0_5")
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--epochs", type=int, default=3, help="3: the median epoch is a middle one, when all runs train")
    ap.add_argument("--train-subset", type=int, default=20000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("-b", "--batch-size", type=int, default=256)
    ap.add_argument("--extra", default="", help="more train flags for every run, e.g. '--fast' or '--compile reduce-overhead'")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per N; then SIGINT, and SIGKILL 20 s later")
    ap.add_argument("--output", default="bench-out/packing")
    ap.add_argument("--json", default=None)
    ap.add_argument("--dry", action="store_true", help="CPU, shapes, N = 1 2, one tiny epoch: checks this script")
    args = ap.parse_args(argv)
    if args.dry:
        args.device, args.dataset, args.counts, args.epochs = "cpu", "shapes", [1, 2], 1
        args.train_subset, args.val_size, args.batch_size, args.timeout = 256, 100, 64, 240
    return args


def train_config(args, seed: int, threads: int, out: Path):
    from cifarbench.config import TrainConfig

    return TrainConfig(model=args.model, stem=args.stem, dataset=args.dataset, data_dir=args.data_dir,
                       device=args.device, epochs=args.epochs, train_subset=args.train_subset, val_size=args.val_size,
                       batch_size=args.batch_size, seed=seed, threads=threads, output=str(out))


def command(cfg, extra: str) -> list[str]:
    return [sys.executable, "-m", "cifarbench", "-q", "train", "--model", cfg.model, "--stem", cfg.stem,
            "--dataset", cfg.dataset, *(["--data-dir", cfg.data_dir] if cfg.data_dir else []), "--device", cfg.device,
            "--epochs", str(cfg.epochs), "--train-subset", str(cfg.train_subset), "--val-size", str(cfg.val_size),
            "-b", str(cfg.batch_size), "--seed", str(cfg.seed), "--threads", str(cfg.threads),
            "--output", cfg.output, *extra.split()]


class FreeMemory:
    """The lowest free memory of a device while it runs, polled in a thread."""

    def __init__(self, device: str):
        from cifarbench.study.memory import free_memory

        self.probe = lambda: free_memory(device)
        self.before = self.lowest = self.probe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.wait(0.2):
            free = self.probe()
            if free is not None and (self.lowest is None or free < self.lowest):
                self.lowest = free

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def used(self) -> int | None:
        return None if self.before is None or self.lowest is None else self.before - self.lowest


def epoch_times(run: Path) -> list[float]:
    try:
        with open(run / "metrics.csv", newline="") as f:
            return [round(float(r["epoch_time"]), 3) for r in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return []


def run_n(args, n: int, root: Path) -> dict:
    from cifarbench.config import read_json
    from cifarbench.errors import CifarbenchError
    from cifarbench.study.jobs import Slot
    from cifarbench.study.memory import check_packing, gib, run_memory

    threads = max(1, (os.cpu_count() or 1) // n)
    cfgs = [train_config(args, i, threads, root / f"n{n}" / f"run{i}") for i in range(n)]
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    out = {"n": n, "threads_per_run": threads, "estimate_per_run_bytes": run_memory(cfgs[0], kind).total}
    try:
        check_packing(cfgs[:1], [Slot(device=args.device)] * n, flag="N")
    except CifarbenchError as e:  # refused: recorded, not run
        return {**out, "refused": str(e)}
    device = "cuda:0" if args.device == "cuda" else args.device
    logs = [Path(c.output).with_suffix(".log") for c in cfgs]
    Path(cfgs[0].output).parent.mkdir(parents=True, exist_ok=True)
    with FreeMemory(device) as mem:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(command(c, args.extra), stdout=subprocess.DEVNULL, stderr=open(log, "w"))
                 for c, log in zip(cfgs, logs)]
        while time.perf_counter() - t0 < args.timeout and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        late = [p for p in procs if p.poll() is None]
        for p in late:
            p.send_signal(signal.SIGINT)  # once: the engine finishes its step, checkpoints and stops
        for p in late:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        wall = time.perf_counter() - t0
    errors = [f"run{i} rc={p.returncode}: {(log.read_text().strip().splitlines() or [''])[-1]}"
              for i, (p, log) in enumerate(zip(procs, logs)) if p.returncode]
    runs = []
    for c in cfgs:
        try:
            res = read_json(Path(c.output) / "results.json")
        except CifarbenchError:
            res = {}
        runs.append({"status": res.get("status"), "images_per_sec": res.get("images_per_sec"),
                     "train_time_s": res.get("train_time_s"), "epoch_times": epoch_times(Path(c.output))})
    done = [r for r in runs if r["status"] == "finished" and r["images_per_sec"]]
    images = len(done) * args.epochs * args.train_subset
    out.update(runs=runs, errors=errors, wall_s=round(wall, 1),
               sum_images_per_sec=round(sum(r["images_per_sec"] for r in done), 1) if len(done) == n else None,
               wall_images_per_sec=round(images / wall, 1) if len(done) == n else None,
               estimate_bytes=n * out["estimate_per_run_bytes"], used_bytes=mem.used)
    print(f"N={n}: {out['sum_images_per_sec']} img/s summed ({out['wall_images_per_sec']} over the wall clock, "
          f"{wall:.0f} s); memory used {gib(mem.used or 0)}, estimated {gib(out['estimate_bytes'])}"
          + (f"; errors: {errors}" if errors else ""), flush=True)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    root = Path(args.output) / time.strftime("%Y%m%d-%H%M%S")
    results = [run_n(args, n, root) for n in args.counts]
    base = next((r["sum_images_per_sec"] for r in results if r["n"] == 1 and r.get("sum_images_per_sec")), None)
    for r in results:
        r["speedup"] = round(r["sum_images_per_sec"] / base, 2) if base and r.get("sum_images_per_sec") else None
    summary = {"model": args.model, "stem": args.stem, "dataset": args.dataset, "device": args.device,
               "batch_size": args.batch_size, "epochs": args.epochs, "train_subset": args.train_subset,
               "extra": args.extra, "results": results}
    print(json.dumps([{k: r.get(k) for k in ("n", "sum_images_per_sec", "speedup", "wall_s")} for r in results]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(r.get("sum_images_per_sec") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
