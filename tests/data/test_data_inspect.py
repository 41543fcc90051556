"""`cifarbench data` and cifarbench.data.inspect: counts per class and split, the two PNGs."""
import json

import pytest
from PIL import Image

from cifarbench.cli import main
from cifarbench.data import load_dataset
from cifarbench.data.inspect import inspect_dataset, plot_class_distribution, plot_samples


def test_inspect_counts_and_pngs(tmp_path, make_cifar10):
    make_cifar10(tmp_path / "data", n=20)
    report = inspect_dataset("cifar10", data_dir=tmp_path / "data", output=tmp_path / "out", val_size=20)
    rows = report["rows"]
    assert [r["class"] for r in rows] == report["classes"] + ["total"]
    assert rows[-1] == {"class": "total", "train": 80, "val": 20, "test": 20}
    assert all(r["val"] == 2 and r["train"] == 8 for r in rows[:-1])
    assert report["image_size"] == 32 and report["channels"] == 3 and len(report["mean"]) == 3
    assert [p.rsplit("/", 1)[-1] for p in report["files"]] == ["class_distribution.png", "samples.png"]
    for path in report["files"]:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200


def test_plots_for_grayscale_and_many_classes(tmp_path, make_idx, make_cifar100):
    make_idx(tmp_path / "fashion-mnist")
    gray = load_dataset("fashion-mnist", data_dir=tmp_path, val_size=10)
    assert plot_samples(gray, tmp_path / "g.png", per_class=3).is_file()
    make_cifar100(tmp_path, n=200)
    many = load_dataset("cifar100", data_dir=tmp_path, val_size=100)
    with Image.open(plot_class_distribution(many, tmp_path / "c.png")) as img:
        assert img.width > 1000  # wide enough for 100 labelled groups
    with Image.open(plot_samples(many, tmp_path / "s.png", per_class=2)) as img:
        assert img.height < 1600  # capped at 20 classes


def test_cli_table(tmp_path, make_cifar10, capsys):
    make_cifar10(tmp_path / "data", n=20)
    code = main(["data", "cifar10", "--data-dir", str(tmp_path / "data"), "-o", str(tmp_path / "out"),
                 "--val-size", "10"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "cifar10: 90 train / 10 val / 20 test images, 3x32x32, 10 classes" in out
    assert "total" in out and "wrote " in out and (tmp_path / "out" / "samples.png").is_file()
    assert err.count("warning:") == 1


def test_cli_json(tmp_path, make_cifar10, capsys):
    make_cifar10(tmp_path / "data", n=20)
    assert main(["data", "cifar10", "--data-dir", str(tmp_path / "data"), "-o", str(tmp_path / "o"),
                 "--val-size", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"][-1] == {"class": "total", "train": 100, "val": 0, "test": 20}


@pytest.mark.parametrize("argv, message", [
    (["data", "cifar11"], "error: unknown dataset 'cifar11'; valid names: cifar10, cifar100"),
    (["data", "cifar10", "--val-size", "100000"], "must be smaller than the 100 training images"),
])
def test_cli_errors(tmp_path, make_cifar10, capsys, argv, message):
    make_cifar10(tmp_path / "data", n=20)
    assert main(argv + ["--data-dir", str(tmp_path / "data"), "-o", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
