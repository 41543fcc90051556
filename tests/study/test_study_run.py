"""The study's stages with a fake engine: selection on validation, test split untouched, resume, --jobs."""
from pathlib import Path

import pytest

import studyfakes
from cifarbench.config import read_json
from cifarbench.engine import Interrupted
from cifarbench.errors import CifarbenchError
from cifarbench.study import mean_std, run_study


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    """The report is another module's job; here a stub records that stage 4 called it."""
    calls = []

    def render_report(study_dir):
        calls.append(Path(study_dir))
        return [Path(study_dir) / "report.md"]

    import cifarbench.report as report

    monkeypatch.setattr(report, "render_report", render_report, raising=False)
    return calls


@pytest.fixture(autouse=True)
def small_data(monkeypatch, tiny_splits):
    """The data overview reads the study's dataset; here a tiny generated one stands in for shapes."""
    import cifarbench.data

    loads = []

    def load_dataset(name, data_dir=None, val_size=None, seed=0, download=True):
        loads.append((name, val_size, seed))
        return tiny_splits

    monkeypatch.setattr(cifarbench.data, "load_dataset", load_dataset)
    return loads


def _run(toml, out, **kw):
    return run_study(toml, output=out, train_fn=studyfakes.train, evaluate_fn=studyfakes.evaluate, **kw)


def test_mean_std_is_sample_std():
    assert mean_std([]) == (None, None)
    assert mean_std([70.0]) == (70.0, 0.0)
    m, s = mean_std([70.0, 72.0, 74.0])
    assert m == 72.0 and s == pytest.approx(2.0)  # n - 1 in the denominator (population std would be 1.63)


def test_study_selects_on_validation_and_tests_last(study_toml, fakelog, tmp_path, no_report, small_data):
    out = tmp_path / "study"
    res = _run(study_toml(), out)
    assert res["ok"] and res["stages"] == {"sweep": "done", "final": "done", "test": "done", "report": "done"}
    assert no_report == [out.resolve()]
    events = studyfakes.read_events(fakelog)
    trains = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    # 5 sweep runs + 2 models x 2 seeds; every run trained once, the test split only read by stage 3 on finals
    assert len(trains) == 9 and len({e["run"] for e in trains}) == 9
    assert len(evals) == 4 and all("/final/" in e["run"] and e["split"] == "test" for e in evals)
    assert max(e["t"] for e in trains) < min(e["t"] for e in evals)
    for cfg_path in out.glob("*/*/*/config.json"):
        assert read_json(cfg_path)["eval_test"] is False, cfg_path

    r18 = res["models"]["resnet18"]
    vals = {e["name"]: e["val_acc"] for e in r18["sweep"]}
    assert vals == {"sgd": 55.0, "mom": 65.0, "adam": 55.0}
    # the fake's test accuracy ranks configs the other way round: the winner is the best on validation
    assert r18["winner"] == "mom" and [e["name"] for e in r18["sweep"] if e["winner"]] == ["mom"]
    assert all(e["state"] == "complete" and e["run"] == f"sweep/resnet18/{e['name']}" for e in r18["sweep"])
    assert [(f["seed"], f["run"], f["state"]) for f in r18["finals"]] == [
        (0, "final/resnet18/seed0", "complete"), (1, "final/resnet18/seed1", "complete")]
    finals_cfg = read_json(out / "final/resnet18/seed1/config.json")
    assert (finals_cfg["opt"], finals_cfg["lr"], finals_cfg["epochs"], finals_cfg["seed"]) == ("momentum", 0.01, 2, 1)
    tests = [f["test_acc"] for f in r18["finals"]]
    assert r18["test"]["n"] == 2 and r18["test"]["mean"] == pytest.approx(sum(tests) / 2)
    assert r18["test"]["std"] == pytest.approx(mean_std(tests)[1]) and r18["test"]["std"] > 0
    assert r18["test"]["val_mean"] == pytest.approx(65.35)  # seeds 0 and 1: 65.0 and 65.7
    assert r18["label"] == "ResNet18" and r18["paper_test_acc"] == 71.27

    assert small_data == [("shapes", None, 0)]
    assert res["data"]["rows"][-1] == {"class": "total", "train": 256, "val": 64, "test": 64}
    assert res["data"]["files"] == ["figures/data_distribution.png", "figures/data_samples.png"]
    assert all((out / f).stat().st_size > 1000 for f in res["data"]["files"])
    saved = read_json(out / "study.json")
    assert saved["models"] == res["models"] and saved["config"]["name"] == "tiny"
    assert {"python", "torch", "torchvision", "device", "device_name", "threads", "hostname", "date"} <= set(saved["env"])
    assert (out / "study.toml").read_text() == study_toml().read_text()
    assert (out / "optuna.db").exists()


def test_rerun_of_a_finished_study_trains_nothing(study_toml, fakelog, tmp_path):
    out = tmp_path / "study"
    _run(study_toml(), out)
    n = len(studyfakes.read_events(fakelog))
    res = _run(study_toml(), out)
    assert res["ok"]
    assert studyfakes.read_events(fakelog)[n:] == []  # no train, no skip, no eval: everything was known


def test_interrupted_study_resumes_without_redoing_finished_runs(study_toml, fakelog, tmp_path, monkeypatch):
    out = tmp_path / "study"
    # The first attempt of the 'adam' sweep point of resnet18 is interrupted after its first epoch.
    monkeypatch.setenv("STUDYFAKES_INTERRUPT", "sweep/resnet18/adam")
    with pytest.raises(Interrupted):
        _run(study_toml(), out)
    state = read_json(out / "study.json")
    assert state["stages"]["sweep"] == "running"
    assert {e["name"]: e["state"] for e in state["models"]["resnet18"]["sweep"]} == {
        "sgd": "complete", "mom": "complete", "adam": "pending"}  # failed and re-queued at once
    first = studyfakes.read_events(fakelog)

    res = _run(study_toml(), out)
    assert res["ok"]
    again = studyfakes.read_events(fakelog)[len(first):]
    trained_twice = {e["run"] for e in first if e["event"] == "train"} & {e["run"] for e in again if e["event"] == "train"}
    assert trained_twice == {str(out.resolve() / "sweep/resnet18/adam")}
    resumed = [e for e in again if e["run"].endswith("sweep/resnet18/adam")]
    assert resumed[0]["start"] == 1  # continued from its checkpoint, not from scratch
    assert not any(e["event"] == "skip" for e in again)  # finished runs were not even handed to train
    assert len(out.joinpath("sweep/resnet18/adam/metrics.csv").read_text().splitlines()) == 1 + 3


def test_interrupted_final_resumes(study_toml, fakelog, tmp_path, monkeypatch):
    out = tmp_path / "study"
    monkeypatch.setenv("STUDYFAKES_INTERRUPT", "final/shufflenet_v2_x0_5/seed0")
    with pytest.raises(Interrupted, match="interrupted in its final stage.*rerun the same command"):
        _run(study_toml(), out)
    assert read_json(out / "study.json")["stages"] == {"sweep": "done", "final": "running", "test": "pending",
                                                       "report": "pending"}
    n = len(studyfakes.read_events(fakelog))
    assert _run(study_toml(), out)["ok"]
    again = [e for e in studyfakes.read_events(fakelog)[n:] if e["event"] == "train"]
    assert [(Path(e["run"]).relative_to(out.resolve()).as_posix(), e["start"]) for e in again] == [
        ("final/shufflenet_v2_x0_5/seed0", 1), ("final/shufflenet_v2_x0_5/seed1", 0)]


def test_a_changed_config_does_not_reuse_the_folder(study_toml, fakelog, tmp_path):
    out = tmp_path / "study"
    _run(study_toml(), out)
    changed = study_toml(name="changed.toml")
    changed.write_text(changed.read_text().replace("epochs = 2", "epochs = 3"))
    with pytest.raises(CifarbenchError, match="different config"):
        _run(changed, out)


def test_report_failure_keeps_the_results(study_toml, fakelog, tmp_path, monkeypatch):
    import cifarbench.report as report

    def broken(study_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report, "render_report", broken, raising=False)
    res = _run(study_toml(), tmp_path / "study")
    assert res["ok"] and res["stages"]["report"] == "pending" and res["stages"]["test"] == "done"


def test_jobs_split_the_cpu_threads(study_toml, fakelog, tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))  # seen by the parent, which assigns the slots
    res = _run(study_toml(), tmp_path / "study", jobs=2, poll=0.2)
    assert res["ok"] and res["env"]["jobs"] == 2 and res["env"]["threads_per_job"] == 2
    trains = [e for e in studyfakes.read_events(fakelog) if e["event"] == "train"]
    assert len(trains) == 9 and len({e["run"] for e in trains}) == 9
    assert {e["threads"] for e in trains} == {2}
    assert len({e["pid"] for e in trains}) >= 2  # really side by side, in other processes


def test_dry_run_prints_nothing_to_run(study_toml, tmp_path, monkeypatch):
    import cifarbench.study.plan as plan

    monkeypatch.setattr(plan, "_steps_per_image", lambda *a, **k: 1e-3)
    res = run_study(study_toml(), output=tmp_path / "study", dry_run=True)
    assert res["dry_run"] and len(res["plan"]["sweep"]) == 5 and len(res["plan"]["final"]) == 2
    assert not (tmp_path / "study").exists()
    assert res["estimate"]["seconds"] > 0


def test_a_sweep_where_every_run_fails_stops_with_the_first_error(study_toml, fakelog, tmp_path):
    def broken(cfg, splits=None, on_epoch=None):
        raise CifarbenchError(f"--stem {cfg.stem!r}: not built for this model")

    with pytest.raises(CifarbenchError, match=r"no sweep run of resnet18, shufflenet_v2_x0_5 finished "
                                              r"\(first error: CifarbenchError: --stem 'cifar'"):
        run_study(study_toml(), output=tmp_path / "study", train_fn=broken, evaluate_fn=studyfakes.evaluate)
    state = read_json(tmp_path / "study" / "study.json")
    assert {e["state"] for e in state["models"]["resnet18"]["sweep"]} == {"failed"}
    # the failed points are queued again by the next run, which then succeeds
    res = _run(study_toml(), tmp_path / "study")
    assert res["ok"] and {e["state"] for e in res["models"]["resnet18"]["sweep"]} == {"complete"}


def test_scaled_paper_preset_runs_its_shape_with_scaled_epochs(fakelog, tmp_path, monkeypatch):
    """`cifarbench study --preset paper --epochs-scale 0.05`: the study's 9 sweeps and 3 finals, each with the scaled
    epochs in its config.json, recorded as a deviation; a rerun with another scale is refused, the same one resumes."""
    import cifarbench.study.plan as plan

    monkeypatch.setattr(plan, "_steps_per_image", lambda *a, **k: 1e-3)  # the 'meant for a GPU' estimate, at 224 px
    out = tmp_path / "paper"
    res = _run("paper", out, override={"epochs_scale": 0.05, "dataset": "shapes"})
    assert res["ok"] and res["deviations"] == ["dataset cifar10 -> shapes", "epochs scaled by 0.05: sweep 30 -> 2, final 50 -> 3"]
    assert res["epochs"]["shufflenet_v2_x0_5"] == {"sweep": [30, 2], "final": [50, 3]}
    runs = {p.parent.relative_to(out).parts[0]: [] for p in out.glob("*/*/*/config.json")}
    for p in out.glob("*/*/*/config.json"):
        runs[p.parent.relative_to(out).parts[0]].append(read_json(p))
    assert len(runs["sweep"]) == 9 and len(runs["final"]) == 3
    assert {(c["epochs"], c["dataset"], c["resolution"]) for c in runs["sweep"]} == {(2, "shapes", 224)}
    assert {(c["epochs"], c["dataset"], c["resolution"]) for c in runs["final"]} == {(3, "shapes", 224)}
    assert read_json(out / "study.json")["config"]["override"] == {"epochs_scale": 0.05, "dataset": "shapes"}
    with pytest.raises(CifarbenchError, match=r"run with --epochs-scale 0.05 --dataset shapes, now --epochs-scale 0.1 "
                                              r"--dataset shapes; rerun with the same flags"):
        _run("paper", out, override={"epochs_scale": 0.1, "dataset": "shapes"})
    with pytest.raises(CifarbenchError, match=r"run with --epochs-scale 0.05 --dataset shapes, now no deviation flags"):
        _run("paper", out)
    before = len(studyfakes.read_events(fakelog))
    assert _run("paper", out, override={"epochs_scale": 0.05, "dataset": "shapes"})["ok"]
    assert not [e for e in studyfakes.read_events(fakelog)[before:] if e["event"] == "train"]  # resumed: nothing to do


@pytest.mark.parametrize("bf16", [False, True])
def test_amp_is_dropped_where_the_cpu_has_no_bf16(study_toml, fakelog, tmp_path, monkeypatch, bf16):
    """A study file's amp = true on a CPU without bf16 (the engine would refuse every such run): its runs train in
    fp32, config.json says so and study.json lists it as a deviation; with bf16 the runs keep amp."""
    import cifarbench.engine.env as env

    monkeypatch.setattr(env, "cpu_has_bf16", lambda: bf16)
    toml = study_toml()
    toml.write_text(toml.read_text().replace('stem = "cifar"', 'stem = "cifar"\namp = true'))
    res = _run(toml, tmp_path / "study", device="cpu")
    assert res["ok"]
    amps = {read_json(p)["amp"] for p in (tmp_path / "study").rglob("config.json")}
    assert amps == {bf16}
    assert any(d.startswith("amp = false") for d in res["deviations"]) is (not bf16)
    if not bf16:  # a resume on the same machine makes the same choice and finds the same config
        assert _run(toml, tmp_path / "study", device="cpu")["ok"]
