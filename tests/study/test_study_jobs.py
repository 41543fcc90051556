"""Slots for --jobs: CPU threads split between jobs, or one GPU per job."""
import torch

from cifarbench.config import TrainConfig
from cifarbench.study.jobs import Slot, apply_slot, device_slots


def test_cpu_threads_are_split(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert device_slots(1) == [Slot()]
    assert device_slots(4) == [Slot(threads=4)] * 4
    assert device_slots(3, "cpu") == [Slot(device="cpu", threads=5)] * 3
    assert device_slots(32) == [Slot(threads=1)] * 32  # never zero threads


def test_one_gpu_per_job(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert device_slots(4) == [Slot(device="cuda:0"), Slot(device="cuda:1"), Slot(device="cuda:0"), Slot(device="cuda:1")]
    assert device_slots(2, "cuda:1") == [Slot(device="cuda:1", threads=8)] * 2  # one named GPU: shared
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_slots(2) == [Slot(), Slot()]  # one GPU: the jobs share it


def test_apply_slot_keeps_unset_fields():
    cfg = TrainConfig(device="auto", threads=None)
    assert apply_slot(cfg, Slot()) == cfg
    assert (apply_slot(cfg, Slot(device="cuda:1", threads=3)).device, apply_slot(cfg, Slot(threads=3)).threads) == ("cuda:1", 3)


def test_stopping_early_cancels_the_queued_runs(tmp_path):
    # A Ctrl-C (or an interrupted run) makes the study stop reading results; the runs still queued must not
    # start. `with ProcessPoolExecutor` waited for all of them, so an interrupted study went on training.
    from studyfakes import mark_and_sleep

    from cifarbench.study.jobs import run_side_by_side

    items = [(i, TrainConfig(model="resnet18", output=str(tmp_path / f"run{i}"))) for i in range(8)]
    runs = run_side_by_side(mark_and_sleep, items, [Slot(threads=1), Slot(threads=1)])
    next(runs)  # the first result arrives...
    runs.close()  # ...and the caller stops (what an exception in the caller's loop does)
    started = sorted(p.parent.name for p in tmp_path.glob("run*/started"))
    assert started == ["run0", "run1"]  # one per slot; before, 6 of the 8 ran
