"""Exact resume, shown the hard way: a real `cifarbench train` process is killed, then resumed.

On the CPU with the same seed and threads, the resumed run must end with weights identical (torch.equal on
every tensor) to an uninterrupted one. Both kinds of stop are covered: SIGKILL (no chance to save: resume
from the last epoch boundary) and SIGTERM (graceful: finish the step, write last.pt mid-epoch, exit non-zero).
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ARGS = ["--model", "shufflenet_v2_x0_5", "--stem", "cifar", "--dataset", "shapes", "--train-subset", "768",
        "--val-size", "256", "--resolution", "16", "-b", "32", "--epochs", "3", "--lr", "0.05",
        "--threads", "1", "--seed", "7"]


def _cmd(out, *extra):
    return [sys.executable, "-m", "cifarbench", "train", *ARGS, "--output", str(out), *extra]


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CIFARBENCH_DATA=str(tmp_path / "data"))
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd, env):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _wait_for_epochs(out, n, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = out / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().strip().splitlines()) > n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for an epoch")


def _weights(out, key="model"):
    return torch.load(out / "last.pt", weights_only=True)[key]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    r = _run(_cmd(tmp / "run"), _env(tmp))
    assert r.returncode == 0, r.stderr
    return _weights(tmp / "run")


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ after resume: {different[:5]}"


def test_sigkill_after_an_epoch_then_resume_gives_identical_weights(tmp_path, reference):
    out, env = tmp_path / "run", _env(tmp_path)
    proc = subprocess.Popen(_cmd(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(out, 1, proc)
    proc.kill()
    proc.wait()
    r = _run(_cmd(out, "--resume", "auto"), env)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    _assert_identical(_weights(out), reference)


def test_sigterm_finishes_the_step_saves_and_exits_nonzero_then_resumes_exactly(tmp_path, reference):
    out, env = tmp_path / "run", _env(tmp_path)
    proc = subprocess.Popen(_cmd(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(out, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Resume with: cifarbench train --resume auto --output" in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] >= 1
    r = _run(_cmd(out, "--resume", "auto"), env)
    assert r.returncode == 0, r.stderr
    _assert_identical(_weights(out), reference)


def _sigterm(proc):
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err


def _sigkill_inside_epoch_2(proc):
    time.sleep(0.5)  # into the second epoch: the kill loses a partial epoch, which the resume must replay
    proc.kill()
    proc.wait()


def _reference_then_stop_and_resume(tmp_path, extra, stop=_sigterm):
    """An uninterrupted run (tmp_path/reference), then the same run (tmp_path/run) stopped by ``stop`` once its
    first epoch is done, then resumed; returns the stopped run's last.pt and the resume's process result."""
    env = _env(tmp_path)
    r = _run(_cmd(tmp_path / "reference", *extra), env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out, *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(out, 1, proc)
    stop(proc)
    stopped = torch.load(out / "last.pt", weights_only=True)
    r = _run(_cmd(out, *extra, "--resume", "auto"), env)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    return stopped, r


# The accuracy features add state (the EMA weights and its update count) and randomness (cutout's draws):
# both must survive a kill exactly.
FEATURES = ["--model-ema", "--model-ema-decay", "0.9", "--tta", "flip", "--cutout", "8"]


def test_sigkill_mid_epoch_with_ema_tta_and_cutout_resumes_to_identical_weights_and_ema(tmp_path):
    stopped, _ = _reference_then_stop_and_resume(tmp_path, FEATURES, stop=_sigkill_inside_epoch_2)
    assert stopped["model_ema_updates"] == 24  # 768 / 32 per epoch
    out = tmp_path / "run"
    _assert_identical(_weights(out), _weights(tmp_path / "reference"))
    _assert_identical(_weights(out, "model_ema"), _weights(tmp_path / "reference", "model_ema"))
    # the EMA really is an average, not a copy of the weights
    assert any(not torch.equal(a, b) for a, b in zip(_weights(out).values(), _weights(out, "model_ema").values()))


def test_sigterm_mid_epoch_with_prog_res_resumes_at_the_same_sizes_to_identical_weights(tmp_path):
    # progressive resizing picks each step's size from (epoch, step): a run stopped inside its second epoch,
    # in the middle of the 8 -> 16 px ramp, must resume at the sizes the uninterrupted run used
    stopped, resumed = _reference_then_stop_and_resume(tmp_path, ["--prog-res", "8"])
    assert stopped["step"] > 0  # stopped inside an epoch
    assert "progressive resizing 8 -> 16 px" in resumed.stderr
    _assert_identical(_weights(tmp_path / "run"), _weights(tmp_path / "reference"))


def test_sigterm_mid_epoch_with_lookahead_mixup_and_cutmix_resumes_to_identical_weights(tmp_path):
    # Lookahead adds state (the slow weights, the step count: k=5 does not divide the 24 steps of an epoch, so
    # the stop falls between its updates); mixup / CutMix add randomness drawn from (seed, epoch)
    extra = ["--lookahead", "--lookahead-k", "5", "--mixup", "0.4", "--cutmix", "1.0"]
    ckpt, _ = _reference_then_stop_and_resume(tmp_path, extra)
    assert ckpt["step"] > 0 and ckpt["lookahead"]["steps"] == 24 * ckpt["epoch"] + ckpt["step"]
    out = tmp_path / "run"
    _assert_identical(_weights(out), _weights(tmp_path / "reference"))
    slow, ref_slow = _weights(out, "lookahead")["slow"], _weights(tmp_path / "reference", "lookahead")["slow"]
    assert all(torch.equal(a, b) for a, b in zip(slow, ref_slow))


def test_sigkill_inside_the_partial_last_pass_of_a_fractional_run_resumes_to_identical_weights(tmp_path):
    # --epochs 2.5: the third pass stops after 12 of its 24 steps; killed inside the second pass, the resume
    # must replay it and end the third at the same step, with the schedule at zero there
    extra = ["--epochs", "2.5"]
    _reference_then_stop_and_resume(tmp_path, extra, stop=_sigkill_inside_epoch_2)
    out, ref = tmp_path / "run", tmp_path / "reference"
    _assert_identical(_weights(out), _weights(ref))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["scheduler"]["last_epoch"] == 24 * 2 + 12
