"""`cifarbench bench` and the fast path's settings. Timings are measured, never asserted."""
import json
import math
import sys

import pytest
import torch

from cifarbench import bench
from cifarbench.bench import COLUMNS, run_bench
from cifarbench.cli import main
from cifarbench.config import TrainConfig
from cifarbench.engine import fast
from cifarbench.engine.fast import apply_fast, fast_settings, model_family
from cifarbench.errors import CifarbenchError

TINY = dict(stem="cifar", resolution=16, batch_size=4, device="cpu", repeats=1, threads=1,
            window_s=0.01, latency_s=0.01)


def test_rows_carry_every_column_and_consistent_figures():
    before = torch.get_num_threads()
    rows = run_bench(["shufflenet_v2_x0_5"], **TINY)
    assert torch.get_num_threads() == before
    (row,) = rows
    assert list(row) == COLUMNS
    assert row["error"] is None and row["model"] == "shufflenet_v2_x0_5" and row["threads"] == 1
    assert row["params"] > 0 and row["macs_per_image"] > 0
    for k in ("train_img_s", "infer_img_s", "latency_ms_median", "latency_ms_p90"):
        assert row[k] > 0 and math.isfinite(row[k]), k
    assert row["latency_ms_median"] <= row["latency_ms_p90"]
    assert row["train_gflops"] == pytest.approx(3 * row["macs_per_image"] * 2 * row["train_img_s"] / 1e9)
    assert row["mem_method"] in ("rss_hwm_delta", "ru_maxrss_delta") and row["peak_mem_mb"] >= 0
    assert row["compile_s"] is None and row["onnx_latency_ms_median"] is None and row["onnx_error"] is None


def test_a_failing_model_records_its_error_and_the_others_go_on(monkeypatch):
    real = bench._build

    def build(name, *a):
        if name == "oom_net":
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 TB")
        return real(name, *a)

    monkeypatch.setattr(bench, "_build", build)
    rows = run_bench(["oom_net", "no_such_model", "shufflenet_v2_x0_5"], **TINY)
    assert [r["model"] for r in rows] == ["oom_net", "no_such_model", "shufflenet_v2_x0_5"]
    assert rows[0]["error"].startswith("RuntimeError: DefaultCPUAllocator")
    assert "no_such_model" in rows[1]["error"]
    assert rows[2]["error"] is None and rows[2]["train_img_s"] > 0
    assert all(list(r) == COLUMNS for r in rows)


def test_onnx_export_adds_the_runtime_latency():
    pytest.importorskip("onnxruntime")
    (row,) = run_bench(["shufflenet_v2_x0_5"], export="onnx", **TINY)
    assert row["error"] is None and row["onnx_error"] is None, row["onnx_error"]
    assert 0 < row["onnx_latency_ms_median"] <= row["onnx_latency_ms_p90"]


def test_onnx_without_onnxruntime_says_so_in_the_row(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    (row,) = run_bench(["shufflenet_v2_x0_5"], export="onnx", **TINY)
    assert row["error"] is None and row["train_img_s"] > 0
    assert "onnxruntime is not installed" in row["onnx_error"]


@pytest.mark.parametrize("kw, msg", [
    (dict(models=[]), "--models"),
    (dict(repeats=0), "--repeats"),
    (dict(batch_size=0), "--batch-size"),
    (dict(resolution=4), "--resolution"),
    (dict(export="tflite"), "--export"),
    (dict(device="tpu9"), "--device"),
])
def test_impossible_settings_are_refused(kw, msg):
    args = {**TINY, "models": ["shufflenet_v2_x0_5"], **kw}
    with pytest.raises(CifarbenchError, match=msg):
        run_bench(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused():
    with pytest.raises(CifarbenchError, match="CUDA is not available"):
        run_bench(["resnet18"], device="cuda")


def test_peak_memory_sees_an_allocation():
    with bench.PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    if mem.method == "rss_hwm_delta":  # Linux: the high-water mark was reset, so the delta is this block
        assert 48 <= mem.mb <= 200
    assert bench._percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)


def test_cli_bench_json(capsys):
    rc = main(["-q", "bench", "--models", "shufflenet_v2_x0_5", "--resolution", "16", "-b", "4", "--repeats", "1",
               "--threads", "1", "--device", "cpu", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(rows) == 1 and list(rows[0]) == COLUMNS and rows[0]["train_img_s"] > 0


def test_cli_bench_exit_code_says_a_model_failed(capsys):
    rc = main(["-q", "bench", "--models", "no_such_model", "--device", "cpu", "--format", "csv"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1 and out[0].split(",") == COLUMNS and "no_such_model" in out[1]


# ---------------------------------------------------------------- the fast path
def test_fast_on_cpu_uses_the_default_for_an_unmeasured_family():
    assert model_family("efficientnet_b0") not in fast.CPU_TABLE
    assert fast_settings("efficientnet_b0", "cpu", cpu_bf16=True) == fast.CPU_DEFAULT


def test_fast_on_cpu_follows_the_measured_table(monkeypatch):
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_bf16", lambda: True)
    for model, family in (("resnet18", "resnet"), ("mobilenet_v2_x0_5", "mobilenet_v2"),
                          ("shufflenet_v2_x0_5", "shufflenet_v2")):
        cfg = apply_fast(TrainConfig(model=model, device="cpu", batch_size=256))  # above every bf16 threshold
        want = fast.CPU_TABLE[family]
        for lever in ("amp", "channels_last", "compile"):
            assert getattr(cfg, lever) == want.get(lever, False), (model, lever)
    # the measured reasons, as documented: bf16 for resnet, never for shufflenet
    assert apply_fast(TrainConfig(model="resnet18", device="cpu", stem="cifar-s2")).amp is True
    assert apply_fast(TrainConfig(model="shufflenet_v2_x0_5", device="cpu", batch_size=1024)).amp is False


def test_fast_on_cpu_gives_mobilenet_bf16_only_with_large_activations(monkeypatch):
    # measured: bf16 + channels_last lost to channels_last alone at batch 64 (stem cifar, 65,536 pixels after
    # the stem) and with stem cifar-s2 up to batch 256; it won at batch 128 and 256 with stem cifar
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_bf16", lambda: True)

    def amp(**kw):
        cfg = apply_fast(TrainConfig(model="mobilenet_v2_x0_5", device="cpu", **kw))
        assert cfg.channels_last is True
        return cfg.amp

    assert amp(batch_size=64, stem="cifar") is False
    assert amp(batch_size=64, stem="cifar-s2") is False and amp(batch_size=256, stem="cifar-s2") is False
    assert amp(batch_size=128, stem="cifar") is True and amp(batch_size=256, stem="cifar") is True
    assert amp(batch_size=64, stem="imagenet", resolution=224) is True  # 56 x 56 after the stem
    assert fast_settings("mobilenet_v2_x0_5", "cpu", cpu_bf16=True).get("amp") is None  # size unknown: no bf16


def test_batch_pixels_uses_each_stems_stride():
    assert fast.batch_pixels(64, "cifar", None) == 64 * 32 * 32
    assert fast.batch_pixels(64, "cifar-s2", 32) == 64 * 16 * 16
    assert fast.batch_pixels(2, "imagenet", 224) == 2 * 56 * 56


def test_fast_never_uses_bf16_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_bf16", lambda: False)
    assert apply_fast(TrainConfig(model="resnet18", device="cpu")).amp is False
    assert fast_settings("resnet18", "cpu", cpu_bf16=False).get("amp") is None


def test_fast_on_cuda():
    cfg = apply_fast(TrainConfig(model="resnet18", device="cuda"))
    assert cfg.amp is True and cfg.channels_last is True and cfg.compile is False
    # measured on an H200: the depthwise-conv models ran fastest in fp32 eager
    small = apply_fast(TrainConfig(model="shufflenet_v2_x0_5", device="cuda:1"))
    assert small.amp is False and small.channels_last is False
    assert fast_settings("mobilenet_v2_x0_5", "cuda") == {}
    assert fast_settings("efficientnet_b0", "cuda") == fast.CUDA_DEFAULT


def test_fast_changes_only_levers_and_never_switches_one_off():
    base = TrainConfig(model="shufflenet_v2_x0_5", device="cpu", amp=True, compile=True, threads=1, lr=0.3,
                       batch_size=128, epochs=7)
    cfg = apply_fast(base)
    assert cfg.amp is True and cfg.compile is True and cfg.threads == 1  # asked for: kept
    diff = {k for k, v in cfg.to_dict().items() if v != base.to_dict()[k]}
    assert diff <= {"amp", "channels_last", "compile", "threads"}
    assert fast_settings("resnet18", "mps") == {}
