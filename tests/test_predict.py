"""cifarbench predict: the run's own preprocessing, conversions that say so, and bad input that names the file."""
import csv
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import runfakes
from cifarbench.cli import main
from cifarbench.errors import CifarbenchError
from cifarbench.predict import predict, read_image


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _random_pngs(folder, n, seed=0):
    return [_png(folder / f"img{i:02d}.png", a) for i, a in enumerate(runfakes.coloured_images(n, seed=seed))]


def _expected(model, paths, mean, std, resolution=None):
    """Softmax of a direct forward, preprocessing written out by hand from the saved mean and std."""
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    x = (x.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    if resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return model(x).double().softmax(1)


def _probs_by_class(row):
    k = sum(1 for key in row if key.startswith("class_"))
    return {row[f"class_{i}"]: row[f"prob_{i}"] for i in range(1, k + 1)}


@pytest.mark.parametrize("resolution", [None, 48])
def test_probabilities_are_the_model_on_the_saved_preprocessing(tmp_path, resolution):
    model = runfakes.fake_run(tmp_path / "run", resolution=resolution)
    paths = _random_pngs(tmp_path / "imgs", 5)
    res = predict(tmp_path / "run", [tmp_path / "imgs"], top_k=10, device="cpu", batch_size=2)
    assert res["errors"] == [] and [r["path"] for r in res["rows"]] == [str(p) for p in paths]
    want = _expected(model, paths, runfakes.MEAN, runfakes.STD, resolution)
    for row, p in zip(res["rows"], want):
        got = _probs_by_class(row)
        assert [got[c] for c in runfakes.CLASSES] == pytest.approx(p.tolist(), abs=1e-6)
        assert list(got.values()) == sorted(got.values(), reverse=True)
    assert len({r["class_1"] for r in res["rows"]}) > 1  # the model depends on its input: the check has teeth


def test_the_ema_weights_are_the_ones_used(tmp_path):
    ema_model = runfakes.fake_run(tmp_path / "run", ema=True)
    path = _random_pngs(tmp_path / "imgs", 1)[0]
    (row,) = predict(tmp_path / "run", [path], top_k=10, device="cpu")["rows"]
    want = _expected(ema_model, [path], runfakes.MEAN, runfakes.STD)[0]
    assert [_probs_by_class(row)[c] for c in runfakes.CLASSES] == pytest.approx(want.tolist(), abs=1e-6)


def test_conversions_follow_the_stated_rule_and_say_so(tmp_path):
    grey = _png(tmp_path / "grey.png", np.arange(24 * 40).reshape(24, 40) % 256)
    rgba = _png(tmp_path / "rgba.png", np.random.default_rng(1).integers(0, 256, (32, 32, 4)))
    rgb = _png(tmp_path / "rgb.png", np.random.default_rng(2).integers(0, 256, (32, 32, 3)))

    x, note = read_image(grey, channels=3, size=32)
    resized = np.array(Image.open(grey).resize((32, 32), Image.Resampling.BILINEAR))
    assert note == "grey -> RGB; resized 40x24 -> 32x32"
    assert torch.equal(x, torch.from_numpy(resized).expand(3, 32, 32))  # grey replicated, Pillow bilinear
    x, note = read_image(rgb, channels=1, size=32)
    assert note == "RGB -> grey" and torch.equal(x[0], torch.from_numpy(np.array(Image.open(rgb).convert("L"))))
    x, note = read_image(rgba, channels=3, size=32)
    assert note == "alpha dropped" and torch.equal(x.permute(1, 2, 0), torch.from_numpy(np.array(Image.open(rgba))[..., :3]))
    assert read_image(rgb, channels=3, size=32)[1] == ""

    runfakes.fake_run(tmp_path / "grey-run", channels=1, image_size=28)
    rows = predict(tmp_path / "grey-run", [rgb, grey], device="cpu")["rows"]
    assert [r["note"] for r in rows] == ["RGB -> grey; resized 32x32 -> 28x28", "resized 40x24 -> 28x28"]


def test_bad_inputs_are_one_line_errors_and_the_rest_is_predicted(tmp_path, capsys):
    runfakes.fake_run(tmp_path / "run")
    folder = tmp_path / "imgs"
    good = _random_pngs(folder, 3)
    (folder / "notes.txt").write_text("not an image, not an image extension: skipped in a folder")
    (folder / "text.png").write_text("a text file renamed .png")
    data = good[0].read_bytes()
    (folder / "truncated.png").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty").mkdir()
    argv = ["predict", str(tmp_path / "run"), str(folder), str(tmp_path / "empty"), str(tmp_path / "missing.png"),
            "--format", "csv", "--device", "cpu"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == [str(p) for p in good]
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    for name in ("text.png", "truncated.png", "empty", "missing.png"):
        assert sum(name in line for line in lines) == 1, (name, lines)


def test_runs_that_cannot_predict_exit_2_with_one_line(tmp_path, capsys):
    img = _random_pngs(tmp_path / "imgs", 1)[0]
    runfakes.fake_run(tmp_path / "old")
    results = json.loads((tmp_path / "old" / "results.json").read_text())
    del results["preprocess"]
    (tmp_path / "old" / "results.json").write_text(json.dumps(results))
    runfakes.fake_run(tmp_path / "untrained")
    (tmp_path / "untrained" / "best.pt").unlink()
    for run, message in [("old", "has no 'preprocess' entry: the run was written before cifarbench could predict"),
                         ("untrained", "no checkpoint (best.pt or last.pt)"), ("nowhere", "not a run folder")]:
        assert main(["predict", str(tmp_path / run), str(img)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / run}") and message in err and err.count("\n") == 1
    with pytest.raises(CifarbenchError, match="--top-k 0"):
        predict(tmp_path / "untrained", [img], top_k=0)
    with pytest.raises(CifarbenchError, match="give image files"):
        predict(tmp_path / "untrained", [])


# ---------------------------------------------------------------- with a trained run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return runfakes.trained_run(tmp_path_factory)


def test_a_folder_of_20_pngs_then_two_bad_files(trained, tmp_path, capsys):
    """The issue's acceptance: 20 rows with class names and probabilities; two bad files, two errors."""
    from cifarbench.data import load_dataset

    test = load_dataset("shapes", data_dir=json.loads((trained / "config.json").read_text())["data_dir"]).test
    folder = tmp_path / "imgs"
    for i in range(20):
        _png(folder / f"{i:02d}.png", test.images[i].permute(1, 2, 0).numpy())
    argv = ["predict", str(trained), str(folder), "--format", "json", "--top-k", "3"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    classes = json.loads((trained / "results.json").read_text())["classes"]
    assert len(rows) == 20
    for r in rows:
        assert {r["class_1"], r["class_2"], r["class_3"]} <= set(classes)
        assert 0 < r["prob_3"] <= r["prob_2"] <= r["prob_1"] and r["prob_1"] + r["prob_2"] + r["prob_3"] <= 1

    (folder / "text.png").write_text("hello")
    data = (folder / "00.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 20
    assert err.count("\n") == 2 and "text.png" in err and "cut.png" in err


def test_the_test_split_through_predict_scores_the_runs_test_accuracy(trained, capsys):
    """Same images, same preprocessing, same weights: predict's top-1 accuracy is the trainer's test_acc."""
    assert main(["predict", str(trained), "--dataset", "shapes", "--split", "test", "--top-k", "1",
                 "--format", "csv", "-b", "500"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    results = json.loads((trained / "results.json").read_text())
    assert len(rows) == 2000 and rows[0]["path"] == "shapes:test/0"
    acc = 100 * sum(r["label"] == r["class_1"] for r in rows) / len(rows)
    assert acc == pytest.approx(results["test_acc"], abs=1e-3)
