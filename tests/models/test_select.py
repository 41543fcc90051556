"""Ranking torchvision's ImageNet weights by acc@1 / GFLOPS."""
import pytest

from cifarbench.errors import CifarbenchError
from cifarbench.models.select import rank_models


def test_the_study_picks_lead_the_ranking():
    rows = rank_models()
    assert [r["model"] for r in rows[:2]] == ["shufflenet_v2_x0_5", "mobilenet_v3_small"]
    ratios = [r["acc_per_gflop"] for r in rows]
    assert ratios == sorted(ratios, reverse=True)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) >= 70 and not any(r["model"].startswith("mobilenet_v2_x") for r in rows)  # no weights, no row


def test_rows_come_from_the_default_weights():
    rows = {r["model"]: r for r in rank_models()}
    r18 = rows["resnet18"]
    assert (r18["acc1"], r18["gflops"], r18["weights"]) == (69.758, 1.814, "IMAGENET1K_V1")
    assert r18["params_m"] == pytest.approx(11.689512)
    assert r18["acc_per_gflop"] == pytest.approx(69.758 / 1.814)
    assert rows["resnet50"]["weights"] == "IMAGENET1K_V2" and rows["resnet50"]["acc1"] == 80.858
    assert r18["crop_px"] == 224 and rows["efficientnet_b7"]["crop_px"] == 600


def test_filters():
    assert all(r["gflops"] <= 1 for r in rank_models(max_gflops=1))
    assert all(r["acc1"] >= 80 for r in rank_models(min_acc=80))
    fam = rank_models(family="resnet")
    assert {r["model"] for r in fam} == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    assert {r["model"] for r in rank_models(family="*net_b[01]")} == {"efficientnet_b0", "efficientnet_b1"}
    top = rank_models(top=3, max_gflops=0.5)
    assert [r["rank"] for r in top] == [1, 2, 3]
    with pytest.raises(CifarbenchError, match="top=0"):
        rank_models(top=0)


def test_measure_adds_macs_and_params_at_10_classes():
    (row,) = rank_models(family="shufflenet_v2_x0_", measure=32)
    assert row["params_at_10_classes"] == 352_042 and row["macs_at_px"] == 815_392
    (vit,) = rank_models(family="vit_b_32", measure=32)
    assert vit["macs_at_px"] is None and vit["params_at_10_classes"] > 80e6  # ViTs only take 224 px
