"""DDP on the CPU with gloo: 2 processes × batch 16 against 1 process × batch 32.

Each global batch holds the same images and augmentations in both runs (the loader shards every global
batch) and DDP averages gradients, so the only difference is BatchNorm statistics, computed per process
over 16 images instead of over 32. Tolerance: 10 points of validation accuracy on 96 images, with both runs
required to learn (well above the 25% of chance), so that agreement is not two coin flips.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

TOLERANCE = 10.0
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """An ImageFolder dataset whose class is the colour of a square on a noisy background."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("test", 24)):
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)
                y, x = rng.integers(0, 8, 2)
                img[y:y + 8, x:x + 8] = rgb
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


def _train(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CIFARBENCH_DATA=str(tmp_path / "data"))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_ddp_matches_single_process_with_the_same_effective_batch(tmp_path, colour_folder):
    args = ["--model", "shufflenet_v2_x0_5", "--stem", "cifar", "--dataset", f"folder:{colour_folder}",
            "--val-size", "96", "--epochs", "8", "--lr", "0.2", "--threads", "1", "--seed", "3"]
    _train([sys.executable, "-m", "cifarbench", "train", *args, "-b", "32", "--output", str(tmp_path / "single")], tmp_path)
    _train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
            "cifarbench", "train", *args, "-b", "16", "--output", str(tmp_path / "ddp")], tmp_path)
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["effective_batch_size"] == 32 == single["effective_batch_size"]
    assert single["best_val_acc"] > 60 and ddp["best_val_acc"] > 60, (single["best_val_acc"], ddp["best_val_acc"])
    assert abs(ddp["best_val_acc"] - single["best_val_acc"]) <= TOLERANCE, (ddp["best_val_acc"], single["best_val_acc"])
    assert ddp["test_acc"] is not None
    assert not (tmp_path / "ddp" / "metrics.csv.tmp").exists()
