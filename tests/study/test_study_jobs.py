"""Slots for --jobs: CPU threads split between jobs, one GPU per job, or N jobs on one GPU if they fit."""
import pytest
import torch

from cifarbench.config import TrainConfig
from cifarbench.errors import CifarbenchError
from cifarbench.study import memory
from cifarbench.study.jobs import Slot, apply_slot, device_slots


def test_cpu_threads_are_split(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))  # the usable cores (cpus.py)
    assert device_slots(1) == [Slot()]
    assert device_slots(4) == [Slot(threads=4)] * 4
    assert device_slots(3, "cpu") == [Slot(device="cpu", threads=5)] * 3
    assert device_slots(32) == [Slot(threads=1)] * 32  # never zero threads


def test_one_gpu_per_job(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert device_slots(4) == [Slot(device="cuda:0"), Slot(device="cuda:1"), Slot(device="cuda:0"), Slot(device="cuda:1")]
    assert device_slots(2, "cuda:1") == [Slot(device="cuda:1", threads=8)] * 2  # one named GPU: shared
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_slots(2) == [Slot(threads=8)] * 2  # one GPU: the jobs share it, and the CPU cores
    assert device_slots(4, "cuda") == [Slot(device="cuda", threads=4)] * 4


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


def test_items_are_read_only_when_a_slot_is_free(tmp_path):
    """budget.replan decides a model's config from the runs finished before it: the next item is pulled only
    after the caller has taken the results so far (one slot: every earlier one; two slots: all but one)."""
    from studyfakes import mark_and_sleep

    from cifarbench.study.jobs import run_side_by_side

    for slots in ([Slot(threads=1)], [Slot(threads=1), Slot(threads=1)]):
        taken, seen = [], []

        def items():
            for i in range(4):
                seen.append(list(taken))
                yield i, TrainConfig(model="resnet18", output=str(tmp_path / f"{len(slots)}-run{i}"))

        for key, _, err in run_side_by_side(mark_and_sleep, items(), slots):
            assert err is None
            taken.append(key)
        n = len(slots)
        assert [len(s) for s in seen] == [max(0, i - n + 1) for i in range(4)]


# ---------------------------------------------------------------- several runs on one GPU: the memory check
GIB = 2**30


def test_memory_check_accepts_n_runs_and_refuses_n_plus_one():
    cfg = TrainConfig(model="resnet18", dataset="shapes", stem="cifar", batch_size=64)
    per_run = memory.run_memory(cfg, "cuda").total
    asked = []

    def probe(device):
        asked.append(device)
        return 3 * per_run + 1  # room for 3 runs, not 4

    got = memory.check_packing([cfg], [Slot(device="cuda:0")] * 3, probe=probe)
    assert got["cuda:0"]["runs"] == 3 and got["cuda:0"]["need_bytes"] == 3 * per_run and asked == ["cuda:0"]
    with pytest.raises(CifarbenchError, match=r"^--jobs 4: 4 runs of resnet18 need ~[\d.]+ GiB on cuda:0, which has "
                                              r"[\d.]+ GiB free; use --jobs 3 or fewer$"):
        memory.check_packing([cfg], [Slot(device="cuda:0")] * 4, probe=probe)
    # each process is counted with the largest run it may draw; two GPUs take twice as many
    small = cfg.replace(model="shufflenet_v2_x0_5")
    with pytest.raises(CifarbenchError, match="runs of resnet18 .* use --workers 6 or fewer"):
        memory.check_packing([small, cfg], [Slot(device=f"cuda:{i % 2}") for i in range(8)], "--workers", probe)
    assert memory.check_packing([cfg], [Slot(device="cuda:0")], probe=lambda d: 0) is None  # one run: nothing packed
    with pytest.raises(CifarbenchError, match="one run alone needs more than is free"):
        memory.check_packing([cfg], [Slot(device="cuda:0")] * 2, probe=lambda d: per_run // 2)


def test_run_memory_counts_data_state_activations_and_overhead():
    from cifarbench.models.profile import summarize

    cfg = TrainConfig(model="shufflenet_v2_x0_5", dataset="shapes", stem="cifar", batch_size=32, eval_batch_size=8,
                      opt="sgd", resolution=16)
    m = memory.run_memory(cfg, "cuda")
    assert m.data == (12000 + 2000) * 3 * 32 * 32  # shapes: train file + test, uint8 at the native 32 px
    params = 352_042
    assert m.state == params * 4 * 2  # weights + grads; plain SGD keeps no buffer
    assert memory.run_memory(cfg.replace(opt="nesterov"), "cuda").state == params * 4 * 3
    assert memory.run_memory(cfg.replace(opt="adam", model_ema=True), "cuda").state == params * 4 * 5
    assert memory.run_memory(cfg.replace(lookahead=True), "cuda").state == params * 4 * 3  # its slow weights
    assert memory.run_memory(cfg.replace(amp=True), "cuda").state == params * 4 * 2.5
    # activations are bytes for the whole batch: the per-image profile times batch_size, at the run's resolution
    batch4 = summarize("shufflenet_v2_x0_5", input_size=16, stem="cifar", batch_size=4)["backward_activation_bytes"]
    assert m.activations == pytest.approx(32 / 4 * batch4, rel=0.05)
    assert memory.run_memory(cfg.replace(batch_size=64), "cuda").activations == 2 * m.activations
    assert (m.overhead, memory.run_memory(cfg, "cpu").overhead) == (memory.CUDA_CONTEXT, memory.CPU_PROCESS)
    assert m.total == int(m.overhead + memory.SAFETY * (m.data + m.state + m.activations))


def test_cpu_free_memory_is_memavailable():
    free = memory.free_memory("cpu")
    assert free is None or 0 < free < 2**50
    assert memory.free_memory("mps") is None  # not checked


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine with one CUDA device as the parent process sees it (the fake engine never touches CUDA),
    with a mocked free-memory probe that records what it was asked."""
    import cifarbench.study.study as study_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    monkeypatch.setattr(study_mod, "_environment", lambda device, jobs: {"device": "cuda", "jobs": jobs})
    monkeypatch.setattr(study_mod, "_data_overview", lambda *a: None)
    monkeypatch.setattr(study_mod, "_stage_report", lambda state: [])
    free = {"bytes": 140 * GIB, "asked": []}

    def probe(device):
        free["asked"].append(device)
        return free["bytes"]

    monkeypatch.setattr(memory, "free_memory", probe)
    return free


def test_study_jobs_put_n_processes_on_the_one_gpu(one_gpu, study_toml, fakelog, tmp_path):
    import studyfakes

    from cifarbench.study import run_study

    out = tmp_path / "study"
    res = run_study(study_toml(), output=out, jobs=2, device="cuda", train_fn=studyfakes.train,
                    evaluate_fn=studyfakes.evaluate, poll=0.2)
    assert res["ok"] and one_gpu["asked"] == ["cuda:0"] and res["memory"]["cuda:0"]["runs"] == 2
    trains = [e for e in studyfakes.read_events(fakelog) if e["event"] == "train"]
    assert len(trains) == 9 and {(e["device"], e["threads"]) for e in trains} == {("cuda", 2)}
    assert len({e["pid"] for e in trains}) >= 2  # processes, each on the one GPU
    one_gpu["bytes"] = 2 * res["memory"]["cuda:0"]["per_run_bytes"] - 1  # one byte short of two runs
    with pytest.raises(CifarbenchError, match=r"--jobs 2: 2 runs of resnet18 need .* on cuda:0.*use --jobs 1 or fewer"):
        run_study(study_toml(), output=tmp_path / "refused", jobs=2, device="cuda", dry_run=True)
    assert not (tmp_path / "refused").exists()


def test_sweep_workers_put_n_processes_on_the_one_gpu(one_gpu, study_toml, fakelog, tmp_path, monkeypatch):
    import studyfakes

    from cifarbench.study.sweep import run_sweep

    # each fake epoch takes 0.5 s, so the first worker cannot drain all 5 trials before the second has started
    # (under a loaded CI machine it once did, and the test saw one pid)
    monkeypatch.setenv("STUDYFAKES_SLEEP", "0.5")

    results = run_sweep(str(study_toml()), workers=2, output=str(tmp_path / "s"), device="cuda",
                        train_fn=studyfakes.train, poll=0.2)
    assert all(e["state"] == "complete" for entries in results.values() for e in entries)
    trains = [e for e in studyfakes.read_events(fakelog) if e["event"] == "train"]
    assert len(trains) == 5 and {(e["device"], e["threads"]) for e in trains} == {("cuda", 2)}
    assert len({e["pid"] for e in trains}) == 2 and one_gpu["asked"] == ["cuda:0"]
    one_gpu["bytes"] = GIB // 4
    with pytest.raises(CifarbenchError, match=r"^--workers 2: 2 runs of resnet18 need .* on cuda:0"):
        run_sweep(str(study_toml()), workers=2, output=str(tmp_path / "s2"), device="cuda", train_fn=studyfakes.train)
