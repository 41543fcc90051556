"""cifarbench export: ONNX and TorchScript files with a sidecar, checked against PyTorch on the test split."""
import copy
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import runfakes
from cifarbench import export as export_mod
from cifarbench.cli import main
from cifarbench.errors import CifarbenchError
from cifarbench.export import export_run
from cifarbench.predict import predict


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return runfakes.trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def pngs(trained, tmp_path_factory):
    """20 test images of the run's dataset written as PNG files, and predict's rows for them."""
    from cifarbench.data import load_dataset

    cfg = json.loads((trained / "config.json").read_text())
    test = load_dataset("shapes", data_dir=cfg["data_dir"]).test
    folder = tmp_path_factory.mktemp("pngs")
    for i in range(20):
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:02d}.png")
    res = predict(trained, [folder], top_k=1, device="cpu")
    assert len(res["rows"]) == 20
    return res["rows"]


def _consumer_input(path, sidecar):
    """What a user of the export does with an image, from the sidecar alone."""
    x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
    x = (x - np.array(sidecar["mean"], np.float32)[:, None, None]) / np.array(sidecar["std"], np.float32)[:, None, None]
    return x[None]


def _check_sidecar(sidecar, run, fmt):
    results = json.loads((run / "results.json").read_text())
    assert sidecar["format"] == fmt and sidecar["run"] == str(run.resolve())
    assert sidecar["classes"] == results["classes"]
    assert sidecar["mean"] == results["preprocess"]["mean"] and sidecar["std"] == results["preprocess"]["std"]
    assert (sidecar["channels"], sidecar["channel_order"], sidecar["image_size"]) == (3, "RGB", 32)
    p = sidecar["parity"]
    assert p["passed"] and p["images"] == 256 and p["top1_same"] == 256 and 0 <= p["max_abs_logit_diff"] <= 1e-4


def test_onnx_passes_its_parity_check_and_agrees_with_predict(trained, pngs, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'cifarbench[onnx]'")
    out = tmp_path / "shapes.onnx"
    assert main(["export", str(trained), "--format", "onnx", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    sidecar = json.loads((tmp_path / "shapes.onnx.json").read_text())
    _check_sidecar(sidecar, trained, "onnx")
    assert sidecar["input"]["shape"] == [1, 3, 32, 32] and sidecar["opset"] == 17
    assert "parity on 256 test images: top-1 same for 256/256" in printed

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for row in pngs:
        logits = sess.run(None, {"input": _consumer_input(row["path"], sidecar)})[0][0]
        assert sidecar["classes"][int(logits.argmax())] == row["class_1"], row["path"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_passes_its_parity_check_and_agrees_with_predict(trained, pngs):
    res = export_run(trained, "torchscript")
    assert res["path"] == str(trained / "model.torchscript.pt") and res["sidecar"] == res["path"] + ".json"
    sidecar = json.loads(open(res["sidecar"]).read())
    _check_sidecar(sidecar, trained, "torchscript")
    module = torch.jit.load(res["path"])
    x = torch.from_numpy(np.concatenate([_consumer_input(r["path"], sidecar) for r in pngs]))  # batch of 20
    with torch.no_grad():
        top1 = module(x).argmax(1).tolist()
    assert [sidecar["classes"][i] for i in top1] == [r["class_1"] for r in pngs]


def test_dynamic_batch_and_the_resize_inside_the_graph(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'cifarbench[onnx]'")
    model = runfakes.fake_run(tmp_path / "run", resolution=48)  # trained at 48 px from 32 px images
    res = export_run(tmp_path / "run", "onnx", dynamic_batch=True, check=64)
    assert res["parity"]["passed"] and res["parity"]["images"] == 64
    assert res["input"]["shape"] == ["batch", 3, 32, 32] and res["resolution"] == 48
    sess = ort.InferenceSession(res["path"], providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        want = model(torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False))
    got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    assert got.shape == (5, 10) and torch.allclose(got, want, atol=1e-4)


def test_a_wrong_export_fails_loudly_and_says_by_how_much(tmp_path, monkeypatch, capsys):
    """The parity figures are computed, not assumed: an export whose logits are off by 1e-3 fails."""
    runfakes.fake_run(tmp_path / "run")
    real = export_mod.export_torchscript

    def off_by_a_little(model, example, path):
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.fc.bias.add_(1e-3)
        return real(model, example, path)

    monkeypatch.setattr(export_mod, "export_torchscript", off_by_a_little)
    assert main(["export", str(tmp_path / "run"), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match PyTorch on 256 test images: top-1 same on 256" in err
    assert "max abs logit difference 1.00e-03 (limit 0.0001)" in err
    sidecar = json.loads((tmp_path / "run" / "model.torchscript.pt.json").read_text())
    assert sidecar["parity"]["passed"] is False


def test_without_the_onnx_extra_one_line_names_it(tmp_path, monkeypatch, capsys):
    runfakes.fake_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err == "error: --format onnx needs onnx and onnxruntime: pip install 'cifarbench[onnx]'\n"
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_a_run_without_checkpoint_is_an_error(tmp_path):
    runfakes.fake_run(tmp_path / "run")
    (tmp_path / "run" / "best.pt").unlink()
    with pytest.raises(CifarbenchError, match="no checkpoint"):
        export_run(tmp_path / "run", "torchscript")
