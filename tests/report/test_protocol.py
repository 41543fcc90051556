"""The report's deviations from the study file and its time per epoch (report/protocol.py), on the fake study."""
import pytest

from fakestudy import FINAL_EPOCHS, SWEEP_EPOCHS, make_fake_study

from cifarbench.config import read_json, write_json
from cifarbench.report.doc import Bullets, Para, Table
from cifarbench.report.load import load_study
from cifarbench.report.protocol import cost_blocks, deviation_blocks, epoch_costs


@pytest.fixture
def fake(tmp_path):
    return make_fake_study(tmp_path)


def test_seconds_per_epoch_price_the_study_files_epochs(fake):
    # an unscaled study: the file's epochs are the runs' own (every fake epoch took 10 s)
    rows = {(r["model"], r["stage"]): r for r in epoch_costs(load_study(fake))}
    r18 = rows[("ResNet18", "final")]
    assert (r18["runs"], r18["s_per_epoch"], r18["file_epochs"]) == (2, 10.0, FINAL_EPOCHS)
    assert r18["file_s"] == 2 * FINAL_EPOCHS * 10.0 and rows[("ResNet18", "sweep")]["file_epochs"] == SWEEP_EPOCHS
    # a scaled one: study.json says what the file asked for, and the projection uses it
    info = read_json(fake / "study.json")
    info["epochs"] = {m: {"sweep": [30, 2], "final": [50, 3]} for m in info["models"]}
    info["deviations"] = ["epochs scaled by 0.05: sweep 30 -> 2, final 50 -> 3"]
    write_json(fake / "study.json", info)
    study = load_study(fake)
    rows = epoch_costs(study)
    assert {(r["stage"], r["file_epochs"]) for r in rows} == {("sweep", 30), ("final", 50)}
    assert [r["file_s"] for r in rows if r["model"] == "ResNet18"] == [2 * 30 * 10.0, 2 * 50 * 10.0]
    blocks = cost_blocks(study)
    table = next(b for b in blocks if isinstance(b, Table))
    assert table.rows[0][:6] == ["ResNet18", "sweep", "32", "2", str(rows[0]["epochs_timed"]), "10.00"]
    total = sum(r["file_s"] for r in rows)
    assert blocks[-1].text.startswith(f"At these speeds the study file's {3 * (2 * 30 + 2 * 50)} training epochs take "
                                      f"about {total / 60:.1f} min")


def test_deviations_head_the_report_only_when_there_are_some(fake):
    assert deviation_blocks(load_study(fake)) == []
    info = read_json(fake / "study.json")
    info["deviations"] = ["dataset cifar10 -> shapes"]
    write_json(fake / "study.json", info)
    para, bullets = deviation_blocks(load_study(fake))
    assert isinstance(para, Para) and para.text.startswith("**Deviations from the study file**")
    assert isinstance(bullets, Bullets) and bullets.items == ["dataset cifar10 -> shapes"]
