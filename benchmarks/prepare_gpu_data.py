"""Pack CIFAR-10 into ./gpu-data/ so it can travel to a GPU machine that has no network.

A lent GPU machine receives the working tree plus the paths named in `carry`, 64 MiB in all, so
the 177 MB cifar-10-batches-py folder cannot travel as it is. What travels instead is the 18 MB
JPEG archive the development copy is built from, with its rebuild script:

    gpu-data/cifar10-jpeg.tar.xz   the source images (from ../shared/datasets beside the repository)
    gpu-data/cifar10.py            rebuilds cifar-10-batches-py/ from it (about 20-30 s)

benchmarks/gpu.sh runs the rebuild (into bench-out/cifar10/, so gpu-data/ stays small enough to carry)
before anything is timed; every benchmark then reads the same pixels as a development copy built with
`python3 ../shared/datasets/cifar10.py DIR` (the rebuild is deterministic).
Where nothing limits the transfer, --folder copies an existing cifar-10-batches-py/ instead.

    python benchmarks/prepare_gpu_data.py                      # from ../shared/datasets
    python benchmarks/prepare_gpu_data.py --source DIR         # from DIR
    python benchmarks/prepare_gpu_data.py --folder DATA/cifar-10-batches-py
then name gpu-data in the device tool's `carry` (it is in .gitignore).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CARRY_LIMIT = 64 * 2**20
# Defaults relative to the repository, not to one machine: the shared folder sits beside the checkout.
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
FILES = ("cifar10-jpeg.tar.xz", "cifar10.py")


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(SHARED), help="folder holding cifar10-jpeg.tar.xz and cifar10.py "
                    "(default: ../shared/datasets beside the repository)")
    ap.add_argument("--folder", default=None, help="copy this cifar-10-batches-py/ folder instead (no size limit check)")
    ap.add_argument("--dest", default=str(REPO / "gpu-data"), help="default: gpu-data/ in the repository")
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)

    if args.folder:
        src = Path(args.folder)
        if not (src / "data_batch_1").is_file() or not (src / "test_batch").is_file():
            sys.exit(f"error: {src}: not a cifar-10-batches-py folder (no data_batch_1 / test_batch)")
        shutil.copytree(src, dest / "cifar-10-batches-py", dirs_exist_ok=True)
    else:
        src = Path(args.source)
        missing = [f for f in FILES if not (src / f).is_file()]
        if missing:
            sys.exit(f"error: {src}: missing {', '.join(missing)}")
        for f in FILES:
            shutil.copyfile(src / f, dest / f)  # not copy2: the source files are read-only
    total = size(dest)
    print(f"{dest}: {total / 2**20:.1f} MiB")
    if total > CARRY_LIMIT:
        print(f"warning: {dest} is over the device tool's 64 MiB carry limit; use the JPEG archive instead",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
