"""The sweep on Optuna: exactly once with several worker processes, dead workers, pruning, search spaces.

Storages: SQLite and a journal file always; PostgreSQL when $CIFARBENCH_TEST_POSTGRES holds a URL
(``bash .ci/postgres.sh start`` prints one; .ci/run sets it).
"""
import os
import signal
import time
import uuid

import pytest

import studyfakes
from cifarbench.cli import main
from cifarbench.study import load_spec
from cifarbench.study import sweep as sw
from cifarbench.study.jobs import Slot, spawn_context

PG = os.environ.get("CIFARBENCH_TEST_POSTGRES")
NO_PG = "no PostgreSQL server: set CIFARBENCH_TEST_POSTGRES to its URL, e.g. $(bash .ci/postgres.sh start)"
STORAGES = ["sqlite", "journal",
            pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.skipif(not PG, reason=NO_PG)])]

GRID6 = """
name = "{name}"
dataset = "shapes"
seeds = [0]
[sweep]
epochs = 2
heartbeat_interval = 1
grace_period = 4
{extra}
[final]
epochs = 1
[[models]]
name = "resnet18"
grid = [
  {{ name = "p0", opt = "sgd", lr = 0.1 }}, {{ name = "p1", opt = "sgd", lr = 0.01 }},
  {{ name = "p2", opt = "momentum", lr = 0.1 }}, {{ name = "p3", opt = "momentum", lr = 0.01 }},
  {{ name = "p4", opt = "adam", lr = 0.01 }}, {{ name = "p5", opt = "adam", lr = 0.001 }},
]
"""


def _setup(kind, tmp_path, study_toml, extra=""):
    # A unique study name: a PostgreSQL database outlives the test
    name = f"t{uuid.uuid4().hex[:8]}"
    url = {"sqlite": f"sqlite:///{tmp_path}/optuna.db", "journal": f"journal:{tmp_path}/optuna.log", "postgres": PG}[kind]
    return study_toml(text=GRID6.format(name=name, extra=extra)), url, tmp_path / "study"


def _trials(url, spec):
    import optuna

    return optuna.load_study(study_name=sw.study_name(spec, "resnet18"), storage=sw.open_storage(url)).get_trials()


@pytest.mark.parametrize("kind", STORAGES)
def test_three_workers_run_each_grid_point_exactly_once(kind, tmp_path, study_toml, fakelog, monkeypatch):
    toml, url, out = _setup(kind, tmp_path, study_toml)
    monkeypatch.setenv("STUDYFAKES_SLEEP", "0.3")  # trials overlap, so the workers race for the queue
    results = sw.run_sweep(str(toml), storage=url, workers=3, output=str(out), train_fn=studyfakes.train, poll=0.2)

    trains = [e for e in studyfakes.read_events(fakelog) if e["event"] == "train"]
    assert sorted(os.path.basename(e["run"]) for e in trains) == ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert len({e["pid"] for e in trains}) >= 2, "the workers did not share the grid"
    trials = _trials(url, load_spec(toml))
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.params["config"] for t in trials) == list(range(6))
    entries = results["resnet18"]
    assert [e["name"] for e in entries] == ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert all(e["state"] == "complete" for e in entries)
    assert [e["val_acc"] for e in entries] == [55.0, 50.0, 70.0, 65.0, 60.0, 55.0]
    assert all(t.user_attrs["run"] == f"sweep/resnet18/{t.user_attrs['config']}" for t in trials)
    assert all(t.value == t.user_attrs["val_acc"] for t in trials)
    assert sw.select_winner(entries)["name"] == "p2"


@pytest.mark.parametrize("kind", STORAGES)
def test_racing_claims_never_share_a_trial(kind, tmp_path, study_toml):
    """4 processes claim 24 queued trials as fast as they can, starting at the same instant.

    Without the claim lock, SQLite hands some trials to two processes (measured: 50 claims of 40 trials).
    """
    toml, url, out = _setup(kind, tmp_path, study_toml)
    points = ", ".join(f'{{ name = "q{i}", lr = {0.01 * (i + 1):.2f} }}' for i in range(24))
    toml.write_text(toml.read_text().split("grid = [")[0] + f"grid = [{points}]\n")
    names = sw.create_sweeps(load_spec(toml), url, out)
    ctx = spawn_context()
    queue, barrier = ctx.Queue(), ctx.Barrier(4)  # all start claiming once all have opened the storage
    procs = [ctx.Process(target=studyfakes.claim_all, args=(url, names[0], barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    claims = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert sum(1 for got in claims if got) >= 2, "one process claimed everything: no race took place"
    numbers = [n for got in claims for n in got]
    assert sorted(numbers) == list(range(24))


@pytest.mark.parametrize("kind, seen_by", [("sqlite", "pid"), ("sqlite", "heartbeat"), ("journal", "heartbeat"),
                                            pytest.param("postgres", "heartbeat", marks=STORAGES[2].marks)])
def test_a_killed_worker_loses_no_trial(kind, seen_by, tmp_path, study_toml, fakelog, capfd):
    """A worker killed mid-trial: its trial is failed and re-queued, by its missing heartbeat (a worker
    anywhere) or at once because its PID is gone (a worker on this machine)."""
    toml, url, out = _setup(kind, tmp_path, study_toml)
    spec = load_spec(toml)
    names = sw.create_sweeps(spec, url, out)
    target = sw._worker_process if seen_by == "pid" else studyfakes.anonymous_worker
    victim = spawn_context().Process(target=target,
                                     args=(url, names, str(out), None, Slot(), studyfakes.slow_train, 0.2))
    victim.start()
    try:
        deadline = time.time() + 60
        while not any(e["pid"] == victim.pid for e in studyfakes.read_events(fakelog)):
            assert time.time() < deadline and victim.is_alive(), "the victim never started a trial"
            time.sleep(0.1)
    finally:
        os.kill(victim.pid, signal.SIGKILL)  # mid-trial: it sleeps 30 s in its first epoch
        victim.join()
    running = [t for t in _trials(url, spec) if t.state.name == "RUNNING"]
    assert len(running) == 1  # the dead worker's trial, as the storage sees it
    dead = running[0]

    codes = sw.start_workers(url, names, 2, output=str(out), train_fn=studyfakes.train, poll=0.2)
    assert codes == [0, 0]
    trials = _trials(url, spec)
    by_state = {}
    for t in trials:
        by_state.setdefault(t.state.name, []).append(t)
    assert [t.number for t in by_state["FAIL"]] == [dead.number]
    assert len(by_state["COMPLETE"]) == 6 and sorted(t.params["config"] for t in by_state["COMPLETE"]) == list(range(6))
    retry = [t for t in by_state["COMPLETE"] if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].params["config"] == dead.params["config"]
    entries = sw.sweep_entries(url, spec, "resnet18", out)
    assert all(e["state"] == "complete" and e["val_acc"] is not None for e in entries)
    trains = [e for e in studyfakes.read_events(fakelog) if e["event"] == "train"]
    assert len(trains) == 7  # 6 points + the dead one's retry
    if seen_by == "pid":
        assert f"trial {dead.number}: its worker (pid {victim.pid}) on this machine has exited" in capfd.readouterr().err


def test_pruned_trials_show_as_pruned(tmp_path, study_toml, fakelog):
    extra = "pruner = \"median\"\npruner_startup_trials = 2\npruner_warmup_epochs = 0\nepochs = 4"
    toml, url, out = _setup("sqlite", tmp_path, study_toml)
    toml.write_text(toml.read_text().replace("epochs = 2\n", "", 1).replace("[final]", extra + "\n[final]"))
    results = sw.run_sweep(str(toml), storage=url, workers=1, output=str(out), train_fn=studyfakes.train)
    states = {e["name"]: e["state"] for e in results["resnet18"]}
    # p0 (55) and p1 (50) set the median; p1-like curves below it are stopped early
    assert states["p0"] == "complete" and states["p2"] == "complete"
    assert "pruned" in states.values()
    pruned = [e for e in results["resnet18"] if e["state"] == "pruned"]
    assert all(e["status"] == "pruned" and e["val_acc"] is not None for e in pruned)
    for e in pruned:
        assert len((out / e["run"] / "metrics.csv").read_text().splitlines()) < 1 + 4


def test_search_space_uses_the_default_sampler(tmp_path, study_toml, fakelog):
    toml = study_toml(text="""
        name = "tpe"
        dataset = "shapes"
        seeds = [0]
        [sweep]
        epochs = 1
        sampler = "tpe"
        n_trials = 4
        [final]
        epochs = 1
        [[models]]
        name = "resnet18"
        space = { lr = { low = 1e-3, high = 1.0, log = true }, opt = ["momentum", "adam"] }
        """)
    url = f"sqlite:///{tmp_path}/o.db"
    results = sw.run_sweep(str(toml), storage=url, output=str(tmp_path / "s"), train_fn=studyfakes.train)
    entries = results["resnet18"]
    assert [e["name"] for e in entries] == ["trial000", "trial001", "trial002", "trial003"]
    assert all(e["state"] == "complete" and 1e-3 <= e["params"]["lr"] <= 1.0 for e in entries)
    assert {e["params"]["opt"] for e in entries} <= {"momentum", "adam"}
    # rerunning does not exceed the budget
    sw.run_sweep(str(toml), storage=url, output=str(tmp_path / "s"), train_fn=studyfakes.train)
    assert len(studyfakes.read_events(fakelog)) == 4


def test_worker_cli_errors(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/o.db"
    assert main(["worker", "--storage", url, "--study", "nope"]) == 2
    assert "--study 'nope': no such study" in capsys.readouterr().err
    assert main(["worker", "--storage", "nonsense", "--study", "x"]) == 2
    assert "--storage 'nonsense'" in capsys.readouterr().err
