"""The study and the sweep with the real engine, on generated `shapes` data with tiny runs.

Tiny: 300 training images at 16 px, 200 validation images, 1 epoch, ShuffleNetV2 x0.5; a run takes
about 2 s on one core. What is checked is the plumbing between the study and the engine, not accuracy.
"""
import os

import pytest

from cifarbench.config import read_json
from cifarbench.study import run_study
from cifarbench.study import sweep as sw

PG = os.environ.get("CIFARBENCH_TEST_POSTGRES")

TINY = """
name = "{name}"
dataset = "shapes"
seeds = [0, 1]
[defaults]
stem = "cifar"
resolution = 16
batch_size = 50
eval_batch_size = 200
val_size = 200
train_subset = 300
threads = 1
[sweep]
epochs = 1
[final]
epochs = 1
[[models]]
name = "shufflenet_v2_x0_5"
label = "ShuffleNetV2 x0.5"
paper_test_acc = 68.21
grid = [{grid}]
"""


def _toml(tmp_path, name, points):
    grid = ", ".join(f'{{ name = "{n}", opt = "{o}", lr = {lr} }}' for n, o, lr in points)
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(name=name, grid=grid))
    return path


@pytest.mark.slow
def test_tiny_study_with_the_engine(tmp_path):
    toml = _toml(tmp_path, "real", [("nesterov-lr0.1", "nesterov", 0.1), ("adam-lr1e-3", "adam", 0.001)])
    out = tmp_path / "study"
    res = run_study(toml, output=out, device="cpu")
    assert res["ok"], res
    m = res["models"]["shufflenet_v2_x0_5"]
    vals = {e["name"]: e["val_acc"] for e in m["sweep"]}
    assert m["winner"] == max(vals, key=vals.get)
    for e in m["sweep"]:
        r = read_json(out / e["run"] / "results.json")
        assert r["status"] == "finished" and r["test_acc"] is None  # the sweep never read the test split
        assert r["best_val_acc"] == e["val_acc"]
        assert read_json(out / e["run"] / "config.json")["eval_test"] is False
    for f in m["finals"]:
        r = read_json(out / f["run"] / "results.json")
        assert r["test_acc"] == f["test_acc"] is not None  # stage 3 stored it through evaluate_run
        assert r["seed"] == f["seed"]
    assert m["test"]["n"] == 2 and m["test"]["std"] >= 0
    assert res["data"]["rows"][-1]["class"] == "total"
    assert (out / "figures" / "data_samples.png").exists()
    assert res["stages"]["test"] == "done"
    if res["stages"]["report"] == "done":
        assert (out / "report.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgres" if PG else "sqlite"])
def test_three_engine_workers_share_a_grid(kind, tmp_path, capsys):
    """Issue 6: 3 worker processes complete a 6-point grid on shapes, each point exactly once.

    Through the CLI: `cifarbench worker` joins from another process while `cifarbench sweep --workers 2` runs.
    """
    import subprocess
    import sys
    import uuid

    import optuna

    from cifarbench.cli import main

    points = [(f"p{i}", opt, lr) for i, (opt, lr) in
              enumerate([("sgd", 0.1), ("sgd", 0.03), ("nesterov", 0.1), ("nesterov", 0.03), ("adam", 0.01), ("adam", 0.001)])]
    name = f"w{uuid.uuid4().hex[:8]}"
    toml = _toml(tmp_path, name, points)
    url = PG if kind == "postgres" else f"sqlite:///{tmp_path}/optuna.db"
    out = tmp_path / "study"
    spec = sw.load_spec(toml)
    sw.create_sweeps(spec, url, out)  # so the extra worker finds the study before `sweep` starts its own
    extra = subprocess.Popen([sys.executable, "-m", "cifarbench", "worker", "--storage", url, "--study", name,
                              "--device", "cpu", "--threads", "1"], stderr=subprocess.PIPE, text=True)
    try:
        code = main(["sweep", str(toml), "--storage", url, "--workers", "2", "-o", str(out), "--device", "cpu"])
    finally:
        _, err = extra.communicate(timeout=300)
    assert code == 0 and extra.returncode == 0, err
    assert "worker:" in err and "trial(s) run" in err
    table = capsys.readouterr().out
    assert table.count("complete") == 6
    entries = sw.sweep_entries(url, spec, "shufflenet_v2_x0_5", out)
    assert [e["name"] for e in entries] == [p[0] for p in points]
    assert all(e["state"] == "complete" and e["val_acc"] is not None for e in entries)
    for e in entries:
        r = read_json(out / e["run"] / "results.json")
        assert r["status"] == "finished" and r["epochs_done"] == 1 and r["test_acc"] is None
    trials = optuna.load_study(study_name=sw.study_name(spec, "shufflenet_v2_x0_5"), storage=sw.open_storage(url)).get_trials()
    assert len(trials) == 6 and sorted(t.params["config"] for t in trials) == list(range(6))


@pytest.mark.slow
def test_scaled_paper_preset_with_the_engine(tmp_path, monkeypatch):
    """`cifarbench study --preset paper --epochs-scale 0.05` end to end on the CPU: the protocol's shape (9 sweeps,
    3 finals, test, report) with the engine, made tiny by flags that the report lists as deviations."""
    import cifarbench.study.plan as plan
    from cifarbench.cli import main

    monkeypatch.setattr(plan, "_steps_per_image", lambda *a, **k: 1e-3)  # the 'meant for a GPU' warning's estimate
    out = tmp_path / "paper"
    tiny = ["resolution=16", "train_subset=128", "val_size=100", "eval_batch_size=100", "threads=1"]
    code = main(["-q", "study", "--preset", "paper", "--epochs-scale", "0.05", "--max-epochs", "1", "--dataset", "shapes",
                 "--device", "cpu", "-o", str(out), *[a for o in tiny for a in ("--override", o)]])
    assert code == 0
    state = read_json(out / "study.json")
    assert [len(state["models"][m]["sweep"]) for m in state["models"]] == [3, 3, 3]
    assert all(state["models"][m]["test"]["n"] == 1 for m in state["models"])
    configs = [read_json(p) for p in out.glob("*/*/*/config.json")]
    assert len(configs) == 12
    assert {(c["epochs"], c["dataset"], c["resolution"], c["stem"], c["sched"]) for c in configs} == \
        {(1, "shapes", 16, "imagenet", "plateau")}
    report = (out / "report.md").read_text()
    assert "**Deviations from the study file**" in report
    assert "- epochs scaled by 0.05 and capped at 1: sweep 30 -> 1, final 50 -> 1" in report
    assert "- dataset cifar10 -> shapes" in report and "resolution = 16 in every run (the study file: 224)" in report
    # seconds per epoch per model and stage, and the study file's 420 epochs priced at that speed
    assert "## Time per epoch" in report and "study file's 420 training epochs take about" in report
