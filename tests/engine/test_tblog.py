"""--log tensorboard: event files in the run folder, read back with TensorBoard's own reader."""
import csv
import json
import sys

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install 'cifarbench[tensorboard]'")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from cifarbench.config import TrainConfig  # noqa: E402
from cifarbench.engine import train  # noqa: E402
from cifarbench.engine.tblog import TAGS, RunLogger  # noqa: E402
from cifarbench.errors import CifarbenchError  # noqa: E402


def _read(run_dir) -> dict:
    """{tag: [(step, value), ...]} for every scalar in the run folder's event files."""
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _row(epoch, shift=0.0, val=True):
    return {"epoch": epoch, "train_loss": 2.0 / epoch + shift, "train_acc": 10.0 * epoch, "lr": 0.1 / epoch,
            "val_loss": 2.5 / epoch if val else None, "val_acc": 9.0 * epoch if val else None,
            "epoch_time": 1.5, "images_per_sec": 100.0 * epoch}


def test_one_point_per_epoch_and_hparams_in_the_run_folder_itself(tmp_path):
    logger = RunLogger(tmp_path, {"model": "resnet18", "lr": 0.1, "amp": False, "resolution": None})
    for epoch in (1, 2, 3):
        logger.log_epoch(_row(epoch))
    logger.close({"epochs_done": 3, "best_val_acc": 27.0, "val_acc": 27.0, "test_acc": 25.5,
                  "val_acc_tta": None, "test_acc_tta": None})
    scalars = _read(tmp_path)
    for key, tag in TAGS.items():
        assert scalars[tag] == [(e, pytest.approx(_row(e)[key])) for e in (1, 2, 3)], tag
    assert {t for t in scalars if t.startswith("hparam/")} == {"hparam/best_val_acc", "hparam/val_acc", "hparam/test_acc"}
    assert scalars["hparam/test_acc"] == [(3, 25.5)]
    # add_hparams would have made a timestamped sub-run; here the run folder is the hparams session
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.PluginTagToContent("hparams")) == {"_hparams_/experiment", "_hparams_/session_start_info",
                                                      "_hparams_/session_end_info"}


def test_epochs_without_validation_skip_the_val_scalars(tmp_path):
    logger = RunLogger(tmp_path, {})
    logger.log_epoch(_row(1, val=False))
    logger.close()
    scalars = _read(tmp_path)
    assert "loss/val" not in scalars and "accuracy/val" not in scalars and scalars["loss/train"] == [(1, 2.0)]


def test_a_resumed_run_does_not_repeat_epochs(tmp_path):
    """Epoch 3 was logged, then the process died before its checkpoint: the resumed run logs 3 again."""
    first = RunLogger(tmp_path, {})
    for epoch in (1, 2, 3):
        first.log_epoch(_row(epoch))
    first.writer.close()  # killed: no hparams
    second = RunLogger(tmp_path, {}, start_epoch=2)
    for epoch in (3, 4):
        second.log_epoch(_row(epoch, shift=100.0))
    second.close({"epochs_done": 4, "best_val_acc": 36.0})
    train_loss = _read(tmp_path)["loss/train"]
    assert [step for step, _ in train_loss] == [1, 2, 3, 4]
    assert train_loss[2] == (3, pytest.approx(_row(3, shift=100.0)["train_loss"]))  # the resumed run's value


def test_without_tensorboard_one_line_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.raises(CifarbenchError) as e:
        RunLogger(tmp_path, {})
    assert str(e.value) == "--log tensorboard needs TensorBoard: pip install 'cifarbench[tensorboard]'"


def test_train_log_tensorboard_end_to_end(tmp_path, tiny_splits):
    """The trainer's wiring: one point per epoch for each scalar, equal to metrics.csv; hparams at the end."""
    from cifarbench.cli import build_parser, train_config_from_args

    args = build_parser().parse_args(["train", "--log", "tensorboard"])
    assert train_config_from_args(args).log == "tensorboard"
    cfg = TrainConfig(model="shufflenet_v2_x0_5", dataset="tiny", stem="cifar", epochs=2, batch_size=32,
                      eval_batch_size=64, lr=0.05, threads=1, output=str(tmp_path / "run"), log="tensorboard")
    results = train(cfg, splits=tiny_splits)
    scalars = _read(tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key, tag in TAGS.items():
        assert scalars[tag] == [(int(r["epoch"]), pytest.approx(float(r[key]), rel=1e-6)) for r in rows], tag
    assert scalars["hparam/test_acc"] == [(2, pytest.approx(results["test_acc"]))]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "finished"
