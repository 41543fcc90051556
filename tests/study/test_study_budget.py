"""study/budget.py: --budget values, the allocation rule, calibration once, resume, the report, and taskset.

The rule's tests compute the expected epochs by hand from the module docstring's formula; the fake-engine
studies fix the study's clock (StudyState.wall_s) and the rule's constants so their epochs are exact too.
"""
import os
from pathlib import Path

import pytest
import torch

import studyfakes
from cifarbench.cli import main
from cifarbench.config import read_json, write_json
from cifarbench.engine import Interrupted
from cifarbench.errors import CifarbenchError
from cifarbench.study import budget as bg
from cifarbench.study import load_spec, run_study
from cifarbench.study.budget import ModelCost, allocate, parse_budget, schedule_s
from cifarbench.study.study import StudyState

BUDGETED = """
name = "budgeted"
dataset = "shapes"
seeds = [0, 1]
{top}
[defaults]
batch_size = 32
stem = "cifar"

[sweep]
epochs = 3

[final]
epochs = 30

[[models]]
name = "resnet18"
budget_share = 3
grid = [
  {{ name = "sgd", opt = "sgd", lr = 0.1 }},
  {{ name = "mom", opt = "momentum", lr = 0.01 }},
]

[[models]]
name = "shufflenet_v2_x0_5"
budget_share = 1
grid = [{{ name = "sgd", opt = "sgd", lr = 0.1 }}]
"""


@pytest.fixture
def toml(tmp_path):
    def make(top: str = "", text: str | None = None):
        path = tmp_path / "budgeted.toml"
        path.write_text(text if text is not None else BUDGETED.format(top=top))
        return path

    return make


# ---------------------------------------------------------------- the value
@pytest.mark.parametrize("value, seconds", [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("1800", 1800),
                                            (1800, 1800), ("1h", 3600), ("2m30s", 150), ("0.5h", 1800)])
def test_budget_forms(value, seconds):
    assert parse_budget(value) == seconds


@pytest.mark.parametrize("value, why", [("soon", "not a duration"), ("30x", "not a duration"), ("30 minutes", "not a duration"),
                                        ("1h-3m", "not a duration"), ("0", "more than 0"), ("-5m", "not a duration")])
def test_a_bad_budget_flag_is_one_line_naming_it(value, why, toml, capsys, tmp_path):
    assert main(["study", str(toml()), f"--budget={value}", "--dry-run", "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --budget {value!r}: ") and why in err[0]


def test_bad_budget_values_in_the_study_file(toml):
    with pytest.raises(CifarbenchError, match=r"budgeted.toml: budget 'soon': not a duration"):
        load_spec(toml(top='budget = "soon"'))
    with pytest.raises(CifarbenchError, match=r"models\[resnet18\].budget_share: 0 must be a positive number"):
        load_spec(toml(text=BUDGETED.format(top="").replace("budget_share = 3", "budget_share = 0")))
    spec = load_spec(toml(top='budget = "1h30m"'))
    assert spec.budget == 5400 and [m.budget_share for m in spec.models] == [3, 1]
    assert load_spec("quick").budget == 28 * 60 + 30  # the README's main job has one


# ---------------------------------------------------------------- the rule
def test_time_is_split_by_share_after_elapsed_and_reserve_and_validation_counts():
    # A epoch: (1000 + 300 / 3) / 100 img/s = 11 s; B: 5.5 s. T = 200 - 50 - 40 = 110, 55 s each.
    a = ModelCost.from_speed("A", 100, 1000, 300)
    b = ModelCost.from_speed("B", 200, 1000, 300)
    assert a.epoch_s == pytest.approx(11.0)
    got = allocate(200, 50, 40, [a, b], seeds=1, lanes=1)
    assert got["epochs"] == {"A": 5, "B": 10} and got["final_s"] == 110 and got["fits"]
    # 30 s more elapsed: 40 s each -> floors 3 and 7 (71.5 s); the 8.5 s left buy B one more epoch, not A
    assert allocate(200, 80, 40, [a, b], seeds=1, lanes=1)["epochs"] == {"A": 3, "B": 8}
    # shares 3 : 1 of T = 110: 82.5 s -> 7 epochs (77 s), 27.5 s -> 5 (27.5 s); the 5.5 s left fit one more of B
    a.share = 3
    assert allocate(200, 50, 40, [a, b], seeds=1, lanes=1)["epochs"] == {"A": 7, "B": 6}


def test_seeds_and_runs_side_by_side():
    m = lambda **kw: [ModelCost("M", 10.0, **kw)]  # noqa: E731
    assert allocate(100, 0, 0, m(), seeds=2, lanes=1)["epochs"] == {"M": 5}   # 2 runs of 50 s in a row
    assert allocate(100, 0, 0, m(), seeds=2, lanes=2)["epochs"] == {"M": 10}  # side by side: 100 s each
    # 3 seeds on 2 lanes: 200 run-s / 3 would be 6 epochs, but 60 + 60 then 60 takes 120 s; 5 fits exactly
    got = allocate(100, 0, 0, m(), seeds=3, lanes=2)
    assert got["epochs"] == {"M": 5} and got["predicted_final_s"] == 100
    assert allocate(100, 0, 0, m(overhead_s=5.0), seeds=2, lanes=1)["epochs"] == {"M": 4}  # (50 - 5) / 10


def test_caps_pass_their_time_on_and_the_minimum_holds():
    capped, free = ModelCost("A", 10.0, cap=2), ModelCost("B", 10.0)
    assert allocate(100, 0, 0, [capped, free], seeds=1, lanes=1)["epochs"] == {"A": 2, "B": 8}
    late = allocate(100, 150, 0, [ModelCost("A", 10.0), ModelCost("B", 10.0, min_epochs=3)], seeds=1, lanes=1)
    assert late["epochs"] == {"A": 1, "B": 3} and not late["fits"]  # past the budget: the minimum epochs,
    assert late["fraction"] == {"A": bg.MIN_FRACTION, "B": bg.MIN_FRACTION}  # on the fewest images
    assert late["predicted_final_s"] == pytest.approx(4 * 10.0 * bg.MIN_FRACTION)


def test_when_even_one_epoch_overruns_each_epoch_trains_on_part_of_the_images():
    # one epoch: 90 s of training and 10 s of validation; T = 55 s: half the training images
    m = ModelCost("M", 100.0, train_s=90.0)
    got = allocate(55, 0, 0, [m], seeds=1, lanes=1)
    assert got["epochs"] == {"M": 1} and got["fraction"]["M"] == pytest.approx(0.5) and got["fits"]
    # two models, equal shares of T = 60: A (100 s an epoch) is cut to its 30 s, B (10 s) keeps whole epochs and
    # gets back the time A's cut frees: 3 of them (before the cut, A's overrun had taken B down to 1)
    a, b = ModelCost("A", 100.0, train_s=90.0), ModelCost("B", 10.0, train_s=9.0)
    got = allocate(60, 0, 0, [a, b], seeds=1, lanes=1)
    assert got["epochs"] == {"A": 1, "B": 3} and got["fraction"]["A"] == pytest.approx(20 / 90) and got["fraction"]["B"] == 1.0
    assert got["predicted_final_s"] == pytest.approx(60) and got["fits"]
    # T = 100: A is cut to its 50 s, B's 40 s epoch fits once but not twice; the 10 s left grow A's subset
    got = allocate(100, 0, 0, [a, ModelCost("B", 40.0, train_s=36.0)], seeds=1, lanes=1)
    assert got["epochs"] == {"A": 1, "B": 1} and got["fraction"]["A"] == pytest.approx(50 / 90, rel=1e-3)
    assert got["predicted_final_s"] == pytest.approx(100, rel=1e-3) and got["fits"]
    # 3 seeds on 2 lanes: the share cut (66.7 s a run) does not fit the lanes (two runs in a row on one of them),
    # so the common factor takes each run to 50 s: 10 s + 90 s x 4/9
    got = allocate(100, 0, 0, [m], seeds=3, lanes=2)
    assert got["fraction"]["M"] == pytest.approx(4 / 9, abs=1e-3) and got["fits"]
    # never below MIN_FRACTION: then the plan says it does not fit
    got = allocate(20, 0, 0, [ModelCost("M", 100.0, overhead_s=10.0, train_s=90.0)], seeds=2, lanes=1)
    assert got["fraction"]["M"] == bg.MIN_FRACTION and not got["fits"]


def test_schedule_is_first_free_lane_in_order():
    assert schedule_s([3, 1, 1, 1], 2) == 3
    assert schedule_s([1, 1, 3], 2) == 4  # the order of the study's runs matters, as in run_side_by_side
    assert schedule_s([2, 2, 2], 1) == 6


# ---------------------------------------------------------------- a study with the fake engine
@pytest.fixture
def fake_study(monkeypatch, tiny_splits, fakelog):
    """Fakes for the engine, the data, the report and the calibration; the clock stops at 10 s; small constants.

    Returns the calibration calls."""
    import cifarbench.data
    import cifarbench.report as report
    import cifarbench.study.plan as plan

    monkeypatch.setattr(cifarbench.data, "load_dataset", lambda *a, **k: tiny_splits)
    monkeypatch.setattr(report, "render_report", lambda d: [], raising=False)
    calls = []

    def steps_per_image(model, stem, resolution, *a, threads=None, **k):
        calls.append((model, stem, resolution, threads))
        return 1 / 500

    monkeypatch.setattr(plan, "_steps_per_image", steps_per_image)
    monkeypatch.setattr(StudyState, "wall_s", _wall_s)
    monkeypatch.setattr(bg, "RUN_OVERHEAD_S", 0.5)
    monkeypatch.setattr(bg, "TEST_RUN_S", 0.5)
    monkeypatch.setattr(bg, "RESERVE_S", 1.0)
    return calls


def _wall_s(state) -> float:
    """The study's clock: 10 s when the finals are planned, then each finished final adds the time the plan
    predicted for it (so a re-plan at the speed the plan used keeps the plan: budget.replan)."""
    a = (state.data.get("budget") or {}).get("allocation") or {}
    predicted = {r["model"]: r["predicted_run_s"] for r in a.get("models", [])}
    return 10.0 + sum(predicted.get(name, 0.0) for name, m in state.data["models"].items()
                      for e in m.get("finals") or [] if e.get("state") == "complete")


def _run(toml, out, **kw):
    return run_study(toml, output=out, train_fn=studyfakes.train, evaluate_fn=studyfakes.evaluate, device="cpu", **kw)


# By hand: tiny_splits has 256 train / 64 val / 64 test images; the fake sweep runs report 1000 img/s and no
# overhead, so an epoch costs (256 + 64/3) / 1000 = 0.2773 s. Reserve: 4 finals x (64/3/1000 + 0.5) + 1 = 3.085 s;
# T = 30 - 10 - 3.085 = 16.915 s, one lane. Shares 3 : 1 -> 6.343 and 2.114 s per run -> floors 22 and 7 epochs
# (16.085 s); one more epoch (0.555 s for 2 seeds) still fits and goes to ShuffleNetV2, the further under its share.
EXPECTED = {"resnet18": 22, "shufflenet_v2_x0_5": 8}


def test_budget_sets_the_final_epochs_from_the_sweeps_speed(toml, fake_study, fakelog, tmp_path):
    out = tmp_path / "study"
    res = _run(toml(), out, budget="30s")
    assert res["ok"]
    b = read_json(out / "study.json")["budget"]
    a = b["allocation"]
    assert a["epochs"] == EXPECTED and a["final_s"] == pytest.approx(16.915, abs=0.05) and a["lanes"] == 1
    rows = {r["model"]: r for r in a["models"]}
    assert rows["resnet18"]["calibrated_images_per_sec"] == 500 and rows["resnet18"]["images_per_sec"] == 1000
    assert rows["resnet18"]["source"] == "sweep, 2 run(s)" and rows["shufflenet_v2_x0_5"]["source"] == "sweep, 1 run(s)"
    assert rows["resnet18"]["share"] == 0.75 and rows["resnet18"]["cap"] == 30
    for model, epochs in EXPECTED.items():
        for seed in (0, 1):
            assert read_json(out / f"final/{model}/seed{seed}/config.json")["epochs"] == epochs
    assert [e["epochs"] for e in studyfakes.read_events(fakelog) if e["event"] == "train" and "/sweep/" in e["run"]] == [3] * 3
    # one calibration per speed setting (the sweep's and the finals' are the same here), with the study's threads
    assert sorted(fake_study) == [("resnet18", "cifar", 12, None), ("shufflenet_v2_x0_5", "cifar", 12, None)]
    assert b["rule"] == bg.RULE and b["budget"] == "30s" and b["predicted"]["fits"]
    # the finals ran at the speed the plan used and took the time it predicted: the re-plan keeps the plan
    assert a["fixed"] == ["resnet18", "shufflenet_v2_x0_5"]
    (r,) = a["replans"]
    assert r["model"] == "shufflenet_v2_x0_5" and r["speed_ratio"] == 1.0 and r["epochs_before"] == r["epochs"]["shufflenet_v2_x0_5"] == 8


def _finals_at(speed_ratio: float):
    """The fake engine, with ResNet18's finals reporting ``speed_ratio`` times the sweep's 1000 img/s."""
    def train(cfg, splits=None, on_epoch=None):
        res = studyfakes.train(cfg, splits, on_epoch)
        if cfg.model == "resnet18" and "/final/" in cfg.output:
            res["images_per_sec"] = 1000.0 * speed_ratio
            write_json(Path(cfg.output) / "results.json", res)
        return res
    return train


@pytest.mark.parametrize("ratio", [2.0, 0.5])
def test_a_model_s_finals_are_planned_again_from_the_finals_before_it(toml, fake_study, tmp_path, ratio):
    """ResNet18's finals ran at twice (half) the speed the plan used, in the time the plan predicted: when
    ShuffleNetV2's finals start, its epoch costs half (twice) as much, and the time left buys it more (fewer)."""
    out = tmp_path / "study"
    res = run_study(toml(), output=out, train_fn=_finals_at(ratio), evaluate_fn=studyfakes.evaluate, device="cpu",
                    budget="30s")
    a = res["budget"]["allocation"]
    rows = {r["model"]: r for r in a["models"]}
    (r,) = a["replans"]
    # by hand: T left = 30 - 10 - ResNet18's 2 predicted runs - reserve, 2 seeds on one lane, epoch cost / ratio
    left = 30 - 10 - 2 * rows["resnet18"]["predicted_run_s"] - a["reserve_s"]
    sh = rows["shufflenet_v2_x0_5"]
    epoch_s = (sh["train_images"] + sh["val_images"] / 3) / (1000.0 * ratio)
    want = int((left / 2 - sh["overhead_s"]) // epoch_s)
    assert r["speed_ratio"] == ratio and r["epochs_before"] == 8 and r["epochs"] == {"shufflenet_v2_x0_5": want}
    assert (want > 8) if ratio > 1 else (want < 8)
    for seed in (0, 1):
        assert read_json(out / f"final/shufflenet_v2_x0_5/seed{seed}/config.json")["epochs"] == want
        assert read_json(out / f"final/resnet18/seed{seed}/config.json")["epochs"] == EXPECTED["resnet18"]
    assert a["epochs"] == {"resnet18": EXPECTED["resnet18"], "shufflenet_v2_x0_5": want}
    from cifarbench.report.budget import budget_blocks
    from cifarbench.report.load import load_study

    notes = [b for b in budget_blocks(load_study(out)) if type(b).__name__ == "Bullets"][-1].items
    assert any(n.startswith(f"shufflenet_v2_x0_5's finals planned again when they started, at 0:") and
               f"ran at {ratio:.2f}x the speed used above; epochs 8 -> {want}," in n for n in notes), notes


def test_a_re_planned_model_resumes_with_its_epochs(toml, fake_study, tmp_path, monkeypatch):
    out = tmp_path / "study"
    monkeypatch.setenv("STUDYFAKES_INTERRUPT", "final/shufflenet_v2_x0_5/seed0")
    with pytest.raises(Interrupted):
        run_study(toml(), output=out, train_fn=_finals_at(2.0), evaluate_fn=studyfakes.evaluate, device="cpu", budget="30s")
    epochs = read_json(out / "study.json")["budget"]["allocation"]["epochs"]["shufflenet_v2_x0_5"]
    assert epochs > 8
    monkeypatch.setattr(StudyState, "wall_s", lambda self: 25.0)  # a re-plan now would give it 1 epoch
    res = run_study(toml(), output=out, train_fn=_finals_at(2.0), evaluate_fn=studyfakes.evaluate, device="cpu", budget="30s")
    assert res["ok"] and len(res["budget"]["allocation"]["replans"]) == 1
    assert read_json(out / "final/shufflenet_v2_x0_5/seed1/config.json")["epochs"] == epochs


def test_a_budget_too_short_for_one_epoch_trains_the_finals_on_subsets(toml, fake_study, tmp_path, monkeypatch, capsys):
    """14 s, of which the clock has used 10 and the test stage takes 3.1: the 4 finals get 0.9 s where one epoch
    each takes 1.25 s, so ShuffleNetV2, the furthest over its share, trains on a stratified subset; its
    config.json, study.json and the report say so."""
    import cifarbench.study.plan as plan

    monkeypatch.setattr(plan, "_steps_per_image", lambda *a, **k: 1 / 2000)  # so the calibrated sweep fits 14 s
    out = tmp_path / "study"
    res = _run(toml(), out, budget="14s")
    a = res["budget"]["allocation"]
    subset = a["train_subset"]["shufflenet_v2_x0_5"]
    assert res["ok"] and a["epochs"] == {"resnet18": 1, "shufflenet_v2_x0_5": 1} and a["train_subset"]["resnet18"] is None
    assert 0 < subset < 256 and a["fits"]
    for seed in (0, 1):
        assert read_json(out / f"final/shufflenet_v2_x0_5/seed{seed}/config.json")["train_subset"] == subset
        assert read_json(out / f"final/resnet18/seed{seed}/config.json")["train_subset"] is None
    assert "the finals train on a stratified subset (train_subset)" in capsys.readouterr().err
    from cifarbench.report.budget import budget_blocks, subset_note
    from cifarbench.report.load import load_study

    table = next(b for b in budget_blocks(load_study(out)) if type(b).__name__ == "Table")
    assert [r[6] for r in table.rows] == ["1 (30)", f"1 (30) on {subset:,}"]
    assert f"trained on a stratified subset: shufflenet_v2_x0_5 1 epoch(s) on {subset:,} of 256 images" in subset_note(load_study(out))


FALLBACK = 'budget_share = 3\nbudget_fallback = {{ stem = "imagenet", below_epochs = {below}{more} }}'


@pytest.mark.parametrize("below", [23, 22])
def test_a_model_the_budget_gives_too_few_epochs_trains_with_its_fallback(toml, fake_study, tmp_path, monkeypatch,
                                                                          below):
    """ResNet18's file config gets 22 epochs (EXPECTED); with below_epochs = 23 its finals switch to the fallback's
    stem, three times faster by calibration (scaled by the sweep's ratio of 2), and get more epochs; with 22 they
    keep the file's config. The sweep always runs the file's config."""
    import cifarbench.study.plan as plan

    monkeypatch.setattr(plan, "_steps_per_image", lambda model, stem, *a, **k: fake_study.append((model, stem))
                        or (1 / 1500 if stem == "imagenet" else 1 / 500))
    out = tmp_path / "study"
    text = BUDGETED.format(top="").replace("budget_share = 3", FALLBACK.format(below=below, more=""))
    res = _run(toml(text=text), out, budget="30s")
    a = res["budget"]["allocation"]
    rows = {r["model"]: r for r in a["models"]}
    stems = {p.relative_to(out).parent.as_posix(): read_json(p)["stem"] for p in out.glob("*/*/*/config.json")}
    assert res["ok"] and len(stems) == 7 and {v for k, v in stems.items() if k.startswith("sweep/")} == {"cifar"}
    if below == 22:
        assert a["fallback"] == [] and a["epochs"] == EXPECTED and "fallback" not in rows["resnet18"]
        assert stems["final/resnet18/seed0"] == stems["final/resnet18/seed1"] == "cifar"
        return
    r18 = rows["resnet18"]
    assert a["fallback"] == ["resnet18"] and ("resnet18", "imagenet") in fake_study
    assert r18["fallback"] == {"fields": {"stem": "imagenet"}, "below_epochs": 23, "as_toml": 'stem = "imagenet"', "file_epochs": 22,
                               "file_train_subset": None, "file_images_per_sec": 1000.0}
    assert r18["calibrated_images_per_sec"] == 1500 and r18["images_per_sec"] == 3000  # x the sweep's ratio 2
    assert r18["source"] == "calibration x 2.00 (the sweep/calibration ratio)"
    assert a["epochs"]["resnet18"] == 30 > EXPECTED["resnet18"]  # its cap: the fallback's epochs cost a third
    assert stems["final/shufflenet_v2_x0_5/seed0"] == "cifar"
    for seed in (0, 1):
        cfg = read_json(out / f"final/resnet18/seed{seed}/config.json")
        assert (cfg["stem"], cfg["epochs"]) == ("imagenet", 30)
    from cifarbench.report.budget import budget_blocks, subset_note
    from cifarbench.report.load import load_study

    study = load_study(out)
    blocks = budget_blocks(study)
    table = next(b for b in blocks if type(b).__name__ == "Table")
    assert [r[0] for r in table.rows] == ["resnet18 (fallback)", "shufflenet_v2_x0_5"]
    notes = [b for b in blocks if type(b).__name__ == "Bullets"][-1].items
    assert any(n.startswith("resnet18: the rule gave the study file's config 22 epoch(s) at 1000 img/s, fewer than its "
                            'budget_fallback\'s below_epochs = 23, so its finals trained with stem = "imagenet"') for n in notes)
    assert 'these finals trained with their study file\'s budget_fallback instead of its config: resnet18 with stem = "imagenet"' \
        in subset_note(study)
    # a resumed study keeps the decision (an interrupted final resumes only with the same config)
    monkeypatch.setattr(StudyState, "wall_s", lambda self: 25.0)
    assert _run(toml(text=text), out, budget="30s")["budget"]["allocation"]["fallback"] == ["resnet18"]


def test_a_fallback_with_its_own_epochs_is_capped_by_them(toml, fake_study, tmp_path, monkeypatch):
    """The quick preset caps ResNet18's cifar-s2 finals at 3 epochs and its imagenet fallback at 4: a fallback's
    ``epochs`` field is its cap, in place of the file's final epochs (30 here; without the field the fallback
    gets all 30, as in the test above)."""
    import cifarbench.study.plan as plan

    monkeypatch.setattr(plan, "_steps_per_image", lambda model, stem, *a, **k: 1 / 1500 if stem == "imagenet" else 1 / 500)
    out = tmp_path / "study"
    text = BUDGETED.format(top="").replace("budget_share = 3", FALLBACK.format(below=23, more=", epochs = 26"))
    res = _run(toml(text=text), out, budget="30s")
    a = res["budget"]["allocation"]
    r18 = next(r for r in a["models"] if r["model"] == "resnet18")
    assert res["ok"] and a["fallback"] == ["resnet18"] and r18["cap"] == 26 and a["epochs"]["resnet18"] == 26
    assert read_json(out / "final/resnet18/seed0/config.json")["epochs"] == 26


def test_a_fallback_s_calibration_error_is_not_taken_for_the_host_s_drift(toml, fake_study, tmp_path, monkeypatch):
    """ResNet18's fallback is priced from its calibration (3000 img/s with the sweep's ratio) and its finals run at
    1000: ratio 1/3. ShuffleNetV2's finals then run at their sweep's speed (ratio 1). MobileNetV2's re-plan uses
    ShuffleNetV2's ratio alone; ShuffleNetV2's, with no sweep-priced final before it, ResNet18's."""
    import cifarbench.study.plan as plan

    monkeypatch.setattr(plan, "_steps_per_image", lambda model, stem, *a, **k: 1 / 1500 if stem == "imagenet" else 1 / 500)
    text = (BUDGETED.format(top="").replace("budget_share = 3", FALLBACK.format(below=31, more=""))
            + '\n[[models]]\nname = "mobilenet_v2_x0_5"\ngrid = [{ name = "sgd", opt = "sgd", lr = 0.1 }]\n')
    res = run_study(toml(text=text), output=tmp_path / "study", train_fn=_finals_at(1.0),
                    evaluate_fn=studyfakes.evaluate, device="cpu", budget="40s")
    a = res["budget"]["allocation"]
    assert res["ok"] and a["fallback"] == ["resnet18"]
    ratios = {r["model"]: r["speed_ratio"] for r in a["replans"]}
    assert ratios == {"shufflenet_v2_x0_5": pytest.approx(1 / 3, abs=1e-3), "mobilenet_v2_x0_5": 1.0}


def test_runs_in_flight_keep_their_lanes_busy():
    assert schedule_s([10, 10], 2, busy=[5]) == 15
    # 2 lanes of 100 s, one taken for 50 s more: 150 run-s left, but the runs must fit the lanes: 5 epochs each
    assert allocate(100, 0, 0, [ModelCost("M", 10.0)], seeds=2, lanes=2, busy=[50])["epochs"] == {"M": 5}
    assert allocate(100, 0, 0, [ModelCost("M", 10.0)], seeds=2, lanes=2)["epochs"] == {"M": 10}


def test_without_a_budget_the_study_file_decides(toml, fake_study, tmp_path):
    res = _run(toml(), tmp_path / "study")
    assert "budget" not in res and not fake_study
    assert read_json(tmp_path / "study/final/resnet18/seed0/config.json")["epochs"] == 30


def test_budget_in_the_study_file_and_the_flag_over_it(toml, fake_study, tmp_path):
    res = _run(toml(top='budget = "1h"'), tmp_path / "a")
    assert res["budget"]["budget_s"] == 3600 and res["budget"]["allocation"]["epochs"] == {"resnet18": 30, "shufflenet_v2_x0_5": 30}
    res = _run(toml(top='budget = "1h"'), tmp_path / "b", budget="30s")
    assert res["budget"]["allocation"]["epochs"] == EXPECTED


def test_resume_reuses_the_stored_epochs_without_calibrating(toml, fake_study, fakelog, tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    monkeypatch.setenv("STUDYFAKES_INTERRUPT", "final/shufflenet_v2_x0_5/seed0")
    with pytest.raises(Interrupted):
        _run(toml(), out, budget="30s")
    assert read_json(out / "study.json")["budget"]["allocation"]["epochs"] == EXPECTED
    calibrations = len(fake_study)
    n = len(studyfakes.read_events(fakelog))
    # later, with more time used and another budget: a new decision would differ; the stored one stands
    monkeypatch.setattr(StudyState, "wall_s", lambda self: 25.0)
    res = _run(toml(), out, budget="1h")
    assert res["ok"] and len(fake_study) == calibrations
    assert "budget 1h: ignored" in capsys.readouterr().err
    assert res["budget"]["allocation"]["epochs"] == EXPECTED and res["budget"]["budget"] == "30s"
    again = [e for e in studyfakes.read_events(fakelog)[n:] if e["event"] == "train"]
    assert [(Path(e["run"]).relative_to(out.resolve()).as_posix(), e["start"], e["epochs"]) for e in again] == [
        ("final/shufflenet_v2_x0_5/seed0", 1, 8), ("final/shufflenet_v2_x0_5/seed1", 0, 8)]


def test_a_budget_the_sweep_cannot_fit_stops_before_it(toml, fake_study, fakelog, tmp_path):
    # calibrated sweep: 3 runs x (0.5 + 3 epochs x 277.3 / 500) = 6.5 s, after 10 s; finals at 1 epoch on 5 images 2 s
    with pytest.raises(CifarbenchError, match=r"budget 15s: too short for study budgeted on this machine: the sweep "
                                              r"takes about 0:06, one final epoch per model \(on 2% of the training "
                                              r"images\) 0:02"):
        _run(toml(), tmp_path / "study", budget="15s")
    assert not [e for e in studyfakes.read_events(fakelog) if e["event"] == "train"]


def test_a_budget_the_finals_cannot_fit_is_said_up_front(toml, fake_study, tmp_path, capsys):
    # 20 s: the sweep fits (16.5 s with the clock's 10), one final epoch each and the reserve (7.4 s) do not
    res = _run(toml(), tmp_path / "study", budget="20s")
    err = capsys.readouterr().err
    assert "warning: budget 20s: too short for study budgeted on this machine: the sweep takes about 0:06" in err
    assert res["ok"] and not res["budget"]["predicted"]["fits"]
    # the sweep ran at twice the calibrated speed: T = 20 - 10 - 3.085 s still buys the finals some epochs
    assert res["budget"]["allocation"]["fits"] and res["budget"]["allocation"]["epochs"]["resnet18"] > 1


def test_dry_run_prints_the_budget_plan(toml, fake_study, capsys, tmp_path):
    # without the data loaded, shapes counts as 10,000 training images: 3 sweep runs of 3 epochs take ~3 min
    assert main(["study", str(toml()), "--dry-run", "--budget", "10m", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "budget 10m (10:00):" in out and "calibrated: resnet18 500 img/s" in out
    assert "final epochs (decided after the sweep from its measured speeds, and again as each model's finals start): resnet18 " in out and "(cap 30)" in out
    assert "does not fit" not in out and not (tmp_path / "studies").exists()


# ---------------------------------------------------------------- taskset: the usable cores
def test_usable_cores_follow_the_affinity_mask(monkeypatch):
    from cifarbench.cpus import usable_cpus
    from cifarbench.study.jobs import cpu_jobs, device_slots

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})  # taskset -c 0
    assert usable_cpus() == 1 and cpu_jobs(2, "cpu") == 1 and cpu_jobs(2, None) == 1
    assert device_slots(2, "cpu")[0].threads == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))  # not os.cpu_count's 2
    assert usable_cpus() == 8 and cpu_jobs(2) == 2 and device_slots(2)[0].threads == 4
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows
    assert usable_cpus() == 2


def test_the_estimate_splits_the_usable_cores(monkeypatch):
    import cifarbench.study.plan as plan

    seen = []
    monkeypatch.setattr(plan, "_steps_per_image", lambda *a, **k: seen.append(torch.get_num_threads()) or 1e-3)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    before = torch.get_num_threads()
    plan.estimate(load_spec("quick"), "cpu")  # jobs = 2 on one usable core: 1 thread, not cpu_count // 2
    assert seen and set(seen) == {1} and torch.get_num_threads() == before


def test_one_core_runs_one_job_at_a_time_and_plans_for_it(toml, fake_study, fakelog, tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    res = _run(toml(), tmp_path / "study", budget="30s", jobs=2, poll=0.2)
    assert res["ok"] and res["env"]["jobs"] == 1 and res["budget"]["allocation"]["lanes"] == 1
    trains = [e for e in studyfakes.read_events(fakelog) if e["event"] == "train"]
    assert {e["pid"] for e in trains} == {os.getpid()}  # in this process, one after the other
    assert res["budget"]["allocation"]["epochs"] == EXPECTED


def test_calibration_times_the_runs_thread_count(monkeypatch):
    """plan._steps_per_image(threads=N) measures at N threads and gives torch its own count back."""
    import cifarbench.study.plan as plan

    before = torch.get_num_threads()
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    s = plan._steps_per_image("shufflenet_v2_x0_5", "cifar", 8, 3, 10, torch.device("cpu"), 4, threads=1)
    assert s > 0 and seen == [1, before] and torch.get_num_threads() == before


# ---------------------------------------------------------------- the real engine and report
@pytest.mark.slow
def test_a_small_real_study_with_a_budget_reports_its_rule_and_epochs(tmp_path):
    text = """
name = "tinybudget"
dataset = "shapes"
seeds = [0]
budget = "3m"
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
epochs = 3
[[models]]
name = "shufflenet_v2_x0_5"
label = "ShuffleNetV2 x0.5"
grid = [{ name = "nesterov-lr0.1", opt = "nesterov", lr = 0.1 }]
"""
    path = tmp_path / "tinybudget.toml"
    path.write_text(text)
    out = tmp_path / "study"
    res = run_study(path, output=out, device="cpu")
    assert res["ok"] and res["stages"]["report"] == "done"
    b = read_json(out / "study.json")["budget"]
    epochs = b["allocation"]["epochs"]["shufflenet_v2_x0_5"]
    assert 1 <= epochs <= 3
    assert read_json(out / "final/shufflenet_v2_x0_5/seed0/config.json")["epochs"] == epochs
    assert len(b["calibration"]) == 1 and b["calibration"][0]["images_per_sec"] > 0
    assert b["allocation"]["models"][0]["source"] == "sweep, 1 run(s)"
    times = res["stage_wall_s"]["final"]
    assert 0 < times["start"] < times["end"] <= res["wall_s"]
    report = (out / "report.md").read_text()
    section = report.split("## Time budget")[1].split("\n## ")[0]
    assert "Budget **3m** (3:00)" in section and "epochs = floor((share x runs side by side x T / seeds" in section
    assert f"| shufflenet_v2_x0_5 | 1.00 |" in section and f"| {epochs} (3) |" in section
    assert "Whole study: predicted" in section and "% of the budget" in section


def test_the_test_reserve_counts_tta_views_and_runs_at_every_lanes_speed():
    from cifarbench.study.budget import EVAL_COST, RESERVE_S, TEST_RUN_S, _reserve

    rows = [{"images_per_sec": 100.0, "tta_views": 2}, {"images_per_sec": 300.0}]
    d = {"test": 3000}
    one = 2 * (3000 * 3 * EVAL_COST / 100 + TEST_RUN_S) + 2 * (3000 * EVAL_COST / 300 + TEST_RUN_S) + RESERVE_S
    assert _reserve(rows, 2, d) == pytest.approx(one)
    two = 2 * (3000 * 3 * EVAL_COST / 200 + TEST_RUN_S) + 2 * (3000 * EVAL_COST / 600 + TEST_RUN_S) + RESERVE_S
    assert _reserve(rows, 2, d, lanes=2) == pytest.approx(two)


def test_a_calibration_with_progressive_resizing_never_stands_for_one_without(monkeypatch):
    """budget._key holds --prog-res only when it is on (older study.json calibrations still match), and a stored
    speed with progressive resizing is not reused for a run without it, nor the other way round."""
    import cifarbench.study.plan as plan

    d = {"size": 32, "channels": 3, "classes": 10}
    cfg = {"model": "resnet18", "stem": "cifar", "resolution": 32, "batch_size": 64, "amp": False,
           "channels_last": True, "prog_res": 0, "prog_res_end": 0.75}
    assert "prog_res" not in bg._key(cfg, 1, d)
    assert bg._key({**cfg, "prog_res": 16}, 1, d)["prog_res"] == 16
    sizes = []
    monkeypatch.setattr(plan, "_steps_per_image", lambda m, s, res, *a, **k: sizes.append(res) or res * res * 1e-6)
    speeds = bg.Speeds([], d, "cpu")
    plain = speeds.get(cfg, 1)
    assert sizes == [32] and plain == round(1 / (32 * 32e-6), 1)
    faster = speeds.get({**cfg, "prog_res": 16}, 1)  # not the stored plain speed: measured at 32 and 16 px
    assert sizes == [32, 32, 16] and faster > plain
    assert speeds.get(cfg, 1) == plain and speeds.get({**cfg, "prog_res": 16}, 1) == faster and len(sizes) == 3
    assert speeds.get({**cfg, "prog_res": 16, "prog_res_end": 0.5}, 1) != faster  # the schedule is part of the key
