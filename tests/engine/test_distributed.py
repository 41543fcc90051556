"""DDP on the CPU with gloo, pinned by its mechanism rather than by an end accuracy.

1. The update: 2 ranks × batch 16 end with the parameters of 1 process × batch 32, up to summation order.
   Each rank takes a disjoint slice of every global batch (the loader), DDP averages the gradients, and a
   model without BatchNorm or dropout has nothing else that depends on the rank (tests/engine/ddp_steps.py).
2. The report: what a DDP run reports for validation and test is what its checkpoint scores in one process
   (`cifarbench eval`), image for image. This holds because BatchNorm buffers are averaged across ranks
   before every evaluation and save (DistContext.average_buffers).
3. Learning: DDP and one process agree within 10 points at lr 0.05, a rate at which both reach 100% for
   seeds 0-3. (The earlier lr 0.2 was unstable, val loss 1e9 to 1e12 in mid-run: whether a run recovered
   by its last epoch depended on summation order, so on the CPU: seed 2 here gave 100 vs 75.)
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarbench.cli import main
from cifarbench.config import TrainConfig
from cifarbench.engine import train

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TOLERANCE = 10.0  # points of validation accuracy, DDP against one process
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CIFARBENCH_DATA=str(tmp_path / "data"))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(cmd, tmp_path, cwd=None):
    r = subprocess.run(cmd, env=_env(tmp_path), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


# ------------------------------------------------------------------ 1. the update
def test_two_ranks_at_batch_16_update_like_one_process_at_batch_32(tmp_path):
    steps = [sys.executable, str(HERE / "ddp_steps.py")]
    _run([*steps, str(tmp_path / "one.pt"), "-b", "32"], tmp_path)
    _run([*TORCHRUN, str(HERE / "ddp_steps.py"), str(tmp_path / "ddp.pt"), "-b", "16"], tmp_path)
    # the closest wrong answer: same steps and schedule, but only rank 0's half of every global batch (what a
    # run gets if a rank's gradient were lost, or both ranks took the same slice)
    _run([*steps, str(tmp_path / "half.pt"), "-b", "16", "--shard", "0/2"], tmp_path)
    one, ddp, half = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "ddp.pt", "half.pt"))

    assert one["steps"] == ddp["steps"] == half["steps"] == 8
    # images seen per epoch, summed over ranks: the whole split once (disjoint slices, none dropped)
    assert one["sums"][:, 2].tolist() == ddp["sums"][:, 2].tolist() == [256.0, 256.0]
    torch.testing.assert_close(ddp["sums"][:, 0], one["sums"][:, 0], rtol=1e-5, atol=0)  # summed losses
    for k, p in one["params"].items():
        # fp32 after 16 steps: summation order moves them by ~1e-7 here; a wrong batch by ~1e-2
        torch.testing.assert_close(ddp["params"][k], p, rtol=1e-5, atol=1e-5, msg=lambda m: f"{k}: {m}")
    wrong = max((half["params"][k] - p).abs().max().item() for k, p in one["params"].items())
    assert wrong > 1e-3, f"the negative control moved only {wrong}: the check above could not tell"


# ------------------------------------------------------------------ 2 and 3: real runs through the CLI
@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """An ImageFolder dataset whose class is the colour of a square on a noisy background (16 px)."""
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


def _eval(run, split, tmp_path):
    r = _run([sys.executable, "-m", "cifarbench", "eval", str(run), "--split", split, "--json"], tmp_path)
    return json.loads(r.stdout)


@pytest.mark.slow
def test_ddp_reports_what_its_checkpoint_scores_and_learns_like_one_process(tmp_path, colour_folder):
    # lr 0.05: single and DDP reach 100% val for seeds 0-3 (lr 0.2 flipped between 75 and 100).
    # --eval-batch-size 16: both ranks evaluate part of the 96 validation images (with the default 500,
    # rank 0 would take them all, and ranks holding different BatchNorm buffers could not show).
    args = ["--model", "shufflenet_v2_x0_5", "--stem", "cifar", "--dataset", f"folder:{colour_folder}",
            "--val-size", "96", "--eval-batch-size", "16", "--epochs", "8", "--lr", "0.05", "--threads", "1",
            "--seed", "0"]
    _run([sys.executable, "-m", "cifarbench", "train", *args, "-b", "32", "--output", str(tmp_path / "single")], tmp_path)
    _run([*TORCHRUN, "-m", "cifarbench", "train", *args, "-b", "16", "--output", str(tmp_path / "ddp")], tmp_path)
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["effective_batch_size"] == 32 == single["effective_batch_size"]
    assert ddp["sync_bn"] is False and not (tmp_path / "ddp" / "metrics.csv.tmp").exists()

    # 2. the figures DDP reported are those of the checkpoint it kept, evaluated by one process
    val, test = _eval(tmp_path / "ddp", "val", tmp_path), _eval(tmp_path / "ddp", "test", tmp_path)
    assert val["checkpoint"].endswith("best.pt") and val["n"] == 96 and test["n"] == 96
    assert ddp["val_acc"] == ddp["best_val_acc"] == val["acc"]
    assert ddp["test_acc"] == test["acc"]
    assert ddp["confusion"] == test["confusion"] and ddp["per_class_acc"] == test["per_class_acc"]
    # losses are continuous, so they also catch a buffer mismatch that flips no prediction (both are rounded
    # to 5 decimals; the two sums run over different batches)
    assert ddp["val_loss"] == pytest.approx(val["loss"], abs=2e-5)
    assert ddp["test_loss"] == pytest.approx(test["loss"], abs=2e-5)

    # 3. both learned, and agree
    assert single["best_val_acc"] > 60 and ddp["best_val_acc"] > 60, (single["best_val_acc"], ddp["best_val_acc"])
    assert abs(ddp["best_val_acc"] - single["best_val_acc"]) <= TOLERANCE, (ddp["best_val_acc"], single["best_val_acc"])


# ------------------------------------------------------------------ --sync-bn
def test_sync_bn_under_cpu_ddp_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """What each rank that torchrun starts sees: WORLD_SIZE 2 on the CPU. It stops before any rendezvous."""
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "run"
    code = main(["train", "--model", "shufflenet_v2_x0_5", "--dataset", "shapes", "--device", "cpu", "--sync-bn",
                 "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --sync-bn: torch.nn.SyncBatchNorm runs on CUDA devices only")
    assert not out.exists()


def test_sync_bn_is_recorded_in_config_and_results(tmp_path, tiny_splits):
    """One process: nothing to synchronise, but the run says what it was asked for."""
    cfg = TrainConfig(model="shufflenet_v2_x0_5", dataset="tiny", stem="cifar", epochs=1, batch_size=64,
                      eval_batch_size=64, threads=1, sync_bn=True, output=str(tmp_path / "run"))
    res = train(cfg, splits=tiny_splits)
    assert res["sync_bn"] is True
    assert json.loads((tmp_path / "run" / "results.json").read_text())["sync_bn"] is True
    assert json.loads((tmp_path / "run" / "config.json").read_text())["sync_bn"] is True
