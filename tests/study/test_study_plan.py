"""`cifarbench study --dry-run`: every run with its hyperparameters, and a measured time estimate."""
import re

import pytest

from cifarbench.cli import main
from cifarbench.study import load_spec, plan_study
from cifarbench.study.plan import format_duration, plan


def test_paper_dry_run_prints_the_studys_9_sweeps_and_3_finals(capsys, monkeypatch, tmp_path):
    import cifarbench.study.plan as plan_mod

    measured = []

    def steps_per_image(model, stem, resolution, *a, **k):
        measured.append((model, stem, resolution))
        return 0.05  # 20 img/s: the real measurement is tested below, on small inputs

    monkeypatch.setattr(plan_mod, "_steps_per_image", steps_per_image)
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--preset", "paper", "--dry-run", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "studies").exists()  # a dry run writes nothing
    sweep = out.split("sweep runs (9):")[1].split("final runs (3):")[0]
    final = out.split("final runs (3):")[1].split("estimated time")[0]
    rows = [line.split() for line in sweep.splitlines() if line.startswith(("resnet18", "mobilenet", "shufflenet"))]
    assert len(rows) == 9
    header = sweep.strip().splitlines()[0].split()
    got = [{h: v for h, v in zip(header, r)} for r in rows]
    expect = [("resnet18", "sgd", "0.001", "0"), ("resnet18", "momentum", "0.0001", "0.9"), ("resnet18", "adam", "1e-06", None),
              ("mobilenet_v2_x0_5", "sgd", "0.001", "0"), ("mobilenet_v2_x0_5", "momentum", "0.0001", "0.9"),
              ("mobilenet_v2_x0_5", "adam", "1e-06", None),
              ("shufflenet_v2_x0_5", "sgd", "0.01", "0"), ("shufflenet_v2_x0_5", "momentum", "0.001", "0.5"),
              ("shufflenet_v2_x0_5", "adam", "0.0001", None)]
    for g, (model, opt, lr, momentum) in zip(got, expect):
        assert (g["model"], g["opt"], g["lr"]) == (model, opt, lr)
        if momentum is not None:
            assert g["momentum"] == momentum
        assert "1e-06" in " ".join(g.values()) and "plateau" in g.values() and "imagenet" in g.values()
        assert "224" in g.values() and "30" in g.values()
    finals = [line.split() for line in final.splitlines() if line.startswith(("resnet18", "mobilenet", "shufflenet"))]
    assert len(finals) == 3 and all("50" in f and "plateau" in f and "224" in f for f in finals)
    assert re.search(r"estimated time on cpu .*: [\d.]+ (h|days)", out)
    assert "meant for a GPU" in out
    assert sorted(set(measured)) == [("mobilenet_v2_x0_5", "imagenet", 224), ("resnet18", "imagenet", 224),
                                     ("shufflenet_v2_x0_5", "imagenet", 224)]


def test_estimate_is_measured_and_scales_with_the_study():
    spec = load_spec("quick")
    res = plan_study(spec, device="cpu")
    est = res["estimate"]
    assert [m["model"] for m in est["models"]] == ["resnet18", "mobilenet_v2_x0_5", "shufflenet_v2_x0_5"]
    assert all(m["train_images_per_sec"] > 0 and m["resolution"] == 32 for m in est["models"])
    # the study runs spec.jobs runs side by side
    assert est["seconds"] == pytest.approx(sum(m["hours"] for m in est["models"]) * 3600 / spec.jobs, rel=0.05)
    # images seen: sweep points x epochs x subset + finals seeds x epochs x 45,000 (+ val and test passes at 1/3)
    r18 = est["models"][0]
    sweep, final = spec.run_config("resnet18", "sweep", {}), spec.run_config("resnet18", "final", {})
    points, seeds = len(spec.model("resnet18").grid), len(spec.seeds)
    images = (points * sweep.epochs * (sweep.train_subset + 5000 / 3) + seeds * final.epochs * (45000 + 5000 / 3)
              + seeds * 10000 / 3)
    assert r18["hours"] * 3600 == pytest.approx(images / r18["train_images_per_sec"], rel=0.05)


def test_quick_plan_rows():
    p = plan(load_spec("quick"))
    assert len(p["sweep"]) == 6 and len(p["final"]) == 3
    assert [r["train_subset"] for r in p["sweep"]] == [5000] * 2 + [10000] * 4 and {r["epochs"] for r in p["sweep"]} == {1}
    assert [r["stem"] for r in p["final"]] == ["cifar-s2"] * 3
    assert [r["epochs"] for r in p["final"]] == [3, 6, 8]  # per-model final stage tables (the budget's caps)
    assert [r["lr"] for r in p["final"]] == ["best"] * 3 and [r["seed"] for r in p["final"]] == ["0 1"] * 3


def test_format_duration():
    assert [format_duration(s) for s in (30, 600, 3 * 3600, 5 * 86400)] == ["30 s", "10 min", "3.0 h", "5.0 days"]


def test_progressive_resizing_is_priced_by_each_steps_pixels():
    """Each step of the engine's schedule costs its pixels' share between the two measured sizes: 16 px costs
    1, 32 px costs 2; sizes 16/20/24/28 each take 3/16 of the steps (0.75 / 4) and 32 the last quarter."""
    from cifarbench.study.plan import prog_res_cost

    by_hand = 3 / 16 * sum(1 + (r * r - 256) / 768 for r in (16, 20, 24, 28)) + 0.25 * 2
    assert prog_res_cost(2.0, 1.0, 16, 32, 0.75) == pytest.approx(by_hand, abs=2e-3)
    assert prog_res_cost(1024, 256, 16, 32, 0.75) < prog_res_cost(1024, 576, 24, 32, 0.75) < 1024  # cost ~ pixels
    assert prog_res_cost(2.0, 2.0, 16, 32, 0.5) == pytest.approx(2.0)  # no cheaper at the small size: no saving


def test_a_run_with_progressive_resizing_is_measured_at_both_sizes(monkeypatch):
    import cifarbench.study.plan as plan_mod

    sizes = []
    monkeypatch.setattr(plan_mod, "_steps_per_image", lambda m, s, res, *a, **k: sizes.append(res) or res * res * 1e-6)
    s = plan_mod._run_seconds_per_image("resnet18", "cifar", 32, 3, 10, "cpu", 32, prog_res=16, prog_res_end=0.75)
    assert sizes == [32, 16] and s == pytest.approx(plan_mod.prog_res_cost(32 * 32e-6, 16 * 16e-6, 16, 32, 0.75))
    sizes.clear()
    assert plan_mod._run_seconds_per_image("resnet18", "cifar", 32, 3, 10, "cpu", 32) == pytest.approx(32 * 32e-6)
    assert sizes == [32]
