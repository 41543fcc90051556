"""`cifarbench export`: a run's model as ONNX or TorchScript, a JSON sidecar, and a parity check.

What is exported: the run's eval weights (the EMA average when it kept one) in fp32, taking the
normalised image at the run's native ``image_size``. When the run trained at another ``resolution``
the graph starts with the training code's own resize (bilinear, align_corners=False), so a consumer
never has to reproduce it; normalisation stays outside, described in the sidecar.

Files: ``--output FILE`` (default ``RUN/model.onnx`` or ``RUN/model.torchscript.pt``) and the sidecar
``FILE.json``: class names, mean, std, channels and their order, sizes, input and output names and
shapes, the run it came from, the exporter, and the parity figures.

Parity: the export is run on the first 256 images of the run's test split (loaded with the run's
config) next to the PyTorch model: ONNX in an ONNX Runtime CPU session, TorchScript re-loaded with
``torch.jit.load``. It passes when every image has the same top-1 class and the largest absolute
logit difference is at most 1e-4 (fp32). A failure leaves the files for inspection and is an error.

Exporters (torch 2.14, checked on resnet18, mobilenet_v2_x0_5 and shufflenet_v2_x0_5 with the
``cifar`` stems): ``torch.onnx.export(dynamo=False)``, the TorchScript-based exporter, is tried first:
it honours the requested opset and takes ~1 s where the default torch.export-based exporter takes
4-6 s and cannot write opsets below 18. It is deprecated, so the dynamo exporter is the fallback
(``exporter`` in the sidecar says which one ran). TorchScript: ``torch.jit.trace`` (the models have no
data-dependent control flow; ``torch.jit.script`` works too but would fail on any module written for
tracing only); torch.jit is deprecated in 2.14 but still complete, and its warnings are silenced here.
A traced module takes any batch size (the check runs it on batches of 64, traced at 1).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarbench import log
from cifarbench.errors import CifarbenchError

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # default file names in the run folder
PARITY_ATOL = 1e-4  # fp32 logits
CHECK_IMAGES = 256
CHUNK = 64  # images per forward in the check


# ---------------------------------------------------------------- the exporters (bench uses export_onnx too)
def export_onnx(model: nn.Module, example: torch.Tensor, path, opset: int = 17, dynamic_batch: bool = False) -> str:
    """Write ``model`` (eval, CPU) to ONNX with input ``input`` and output ``logits``; return the exporter used."""
    kwargs = dict(input_names=["input"], output_names=["logits"])
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both exporters warn (deprecation, dynamic_axes); the check speaks for them
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset, **kwargs)
            return "torch.onnx.export(dynamo=False)"
        except TypeError:  # an older torch without the dynamo argument
            torch.onnx.export(model, (example,), str(path), opset_version=opset, **kwargs)
            return "torch.onnx.export"
        except Exception as first:
            try:  # the TorchScript-based exporter is gone or failed: torch.export-based, opset 18 at least
                torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=max(opset, 18),
                                  verbose=False, **kwargs)
                return "torch.onnx.export(dynamo=True)"
            except Exception:
                raise first from None


def export_torchscript(model: nn.Module, example: torch.Tensor, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.jit.trace is deprecated"
        traced = torch.jit.trace(model, example, check_trace=False)  # the parity check is the real check
        torch.jit.save(traced, str(path))
    return "torch.jit.trace"


def _require_onnx():
    try:
        import onnx  # noqa: F401 - reads the written opset
        import onnxruntime
    except ImportError:
        raise CifarbenchError("--format onnx needs onnx and onnxruntime: pip install 'cifarbench[onnx]'") from None
    return onnxruntime


class ResizeInput(nn.Module):
    """The DeviceLoader's resize to the network resolution, as the first op of the exported graph."""

    def __init__(self, model: nn.Module, resolution: int):
        super().__init__()
        self.model, self.resolution = model, resolution

    def forward(self, x):
        x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return self.model(x)


# ---------------------------------------------------------------- parity
def _forward_in_chunks(fn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([torch.as_tensor(fn(x[i:i + chunk])) for i in range(0, len(x), chunk)])


def _onnx_runner(path):
    ort = _require_onnx()
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    batch = sess.get_inputs()[0].shape[0]  # an int for a fixed batch, a name for a dynamic one
    chunk = batch if isinstance(batch, int) else CHUNK
    return lambda x: _forward_in_chunks(lambda b: sess.run(None, {"input": b.numpy()})[0], x, chunk)


def _torchscript_runner(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.jit.load is deprecated"
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return lambda x: _forward_in_chunks(module, x, CHUNK)


def check_images(run, data_dir=None, n: int = CHECK_IMAGES) -> torch.Tensor:
    """The first ``n`` test images of the run's dataset, normalised as in training, at the native size."""
    from cifarbench.engine.loader import DeviceLoader
    from cifarbench.engine.trainer import load_splits

    cfg = run.cfg.replace(data_dir=str(data_dir)) if data_dir else run.cfg
    test = load_splits(cfg).test
    if len(test) == 0:
        raise CifarbenchError(f"{cfg.dataset}: the test split is empty; nothing to check the export on")
    if len(test) < n:
        log.warn(f"{cfg.dataset}: the test split has {len(test)} images; checking the export on all of them")
    images = test.images[:n]
    pre = run.preprocess
    loader = DeviceLoader(images, test.labels[:n], CHUNK, False, "cpu", pre["mean"], pre["std"], resolution=None)
    return torch.cat([x for x, _ in loader])


@torch.no_grad()
def parity(reference: nn.Module, exported, x: torch.Tensor) -> dict:
    """Top-1 agreement and the largest absolute logit difference between PyTorch and the export on ``x``."""
    ref = _forward_in_chunks(reference, x, CHUNK)
    out = exported(x).to(ref.dtype)
    same = int((ref.argmax(1) == out.argmax(1)).sum())
    diff = float((ref - out).abs().max())
    return {"images": len(x), "top1_same": same, "max_abs_logit_diff": diff, "limit": PARITY_ATOL,
            "passed": same == len(x) and diff <= PARITY_ATOL}


# ---------------------------------------------------------------- a run
def export_run(run_dir, fmt: str = "onnx", output=None, opset: int = 17, dynamic_batch: bool = False,
               data_dir=None, check: int = CHECK_IMAGES) -> dict:
    """Export a run's model, write the sidecar, check parity; returns the sidecar's content (plus ``sidecar``).

    Raises CifarbenchError when the export does not match PyTorch (the files stay for inspection).
    """
    from cifarbench import __version__
    from cifarbench.config import write_json
    from cifarbench.predict import load_run

    if fmt not in FORMATS:
        raise CifarbenchError(f"--format {fmt!r}: choose onnx or torchscript")
    if fmt == "onnx":
        _require_onnx()
    run = load_run(run_dir, "cpu")
    pre = run.preprocess
    c, size, res = pre["channels"], pre["image_size"], pre["resolution"]
    net = run.model if res == size else ResizeInput(run.model, res).eval()
    path = Path(output) if output else run.dir / FORMATS[fmt]
    sidecar = path.with_name(path.name + ".json")
    example = torch.zeros(1, c, size, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "onnx":
            exporter = export_onnx(net, example, path, opset, dynamic_batch)
            import onnx

            opset = next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))
        else:
            exporter = export_torchscript(net, example, path)
    except OSError as e:
        raise CifarbenchError(f"--output {path}: cannot write ({e.strerror or e})") from None
    except Exception as e:  # an op the exporter does not support, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CifarbenchError(f"{run.dir}: {fmt} export failed ({type(e).__name__}: {first})") from None

    x = check_images(run, data_dir, check)
    try:
        figures = parity(net, _onnx_runner(path) if fmt == "onnx" else _torchscript_runner(path), x)
    except Exception as e:  # the runtime cannot load or run what was written: as loud as a mismatch
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CifarbenchError(f"{path}: cannot run the export ({type(e).__name__}: {first})") from None
    batch = "batch" if dynamic_batch or fmt == "torchscript" else 1
    info = {
        "format": fmt, "file": path.name, "exporter": exporter, "opset": opset if fmt == "onnx" else None,
        "run": str(run.dir.resolve()), "checkpoint": run.checkpoint.name, "model": run.cfg.model,
        "stem": run.cfg.stem, "dataset": run.cfg.dataset, "classes": run.classes,
        "channels": c, "channel_order": "RGB" if c == 3 else "grey", "image_size": size, "resolution": res,
        "mean": pre["mean"], "std": pre["std"],
        "preprocessing": f"uint8 pixels, {c}x{size}x{size} (channels first), x = (pixel / 255 - mean[c]) / std[c]"
                         + (f"; the graph resizes to {res}x{res} itself" if res != size else ""),
        "input": {"name": "input", "shape": [batch, c, size, size], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [batch, len(run.classes)], "dtype": "float32",
                   "meaning": "unnormalised class scores in the order of classes; softmax gives probabilities"},
        "parity": {**figures, "split": "test"},
        "versions": {"cifarbench": __version__, "torch": torch.__version__},
    }
    write_json(sidecar, info)
    if not figures["passed"]:
        raise CifarbenchError(f"{path}: the export does not match PyTorch on {figures['images']} test images: top-1 "
                              f"same on {figures['top1_same']}, max abs logit difference "
                              f"{figures['max_abs_logit_diff']:.2e} (limit {PARITY_ATOL:g}); files kept for inspection")
    return {**info, "path": str(path), "sidecar": str(sidecar)}
