"""DDP on the CPU with gloo: 2 processes × batch 32 against 1 process × batch 64.

Each global batch holds the same images and augmentations in both runs (the loader shards every global
batch), and DDP averages gradients, so the only difference is BatchNorm statistics, computed per process
over 32 images instead of over 64. Tolerance: 5 points of validation accuracy on 256 images.
"""
import json
import os
import subprocess
import sys

ARGS = ["--model", "shufflenet_v2_x0_5", "--stem", "cifar", "--dataset", "shapes", "--train-subset", "1024",
        "--val-size", "256", "--resolution", "16", "--epochs", "2", "--lr", "0.05", "--threads", "1",
        "--seed", "3"]
TOLERANCE = 5.0


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CIFARBENCH_DATA=str(tmp_path / "data"))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_ddp_matches_single_process_with_the_same_effective_batch(tmp_path):
    _run([sys.executable, "-m", "cifarbench", "train", *ARGS, "-b", "64", "--output", str(tmp_path / "single")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cifarbench",
          "train", *ARGS, "-b", "32", "--output", str(tmp_path / "ddp")], tmp_path)
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["effective_batch_size"] == 64 == single["effective_batch_size"]
    assert abs(ddp["best_val_acc"] - single["best_val_acc"]) <= TOLERANCE, (ddp["best_val_acc"], single["best_val_acc"])
    assert ddp["test_acc"] is not None
