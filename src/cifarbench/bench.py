"""`cifarbench bench`: training and inference speed, batch-1 latency, peak memory and MACs per model.

In the spirit of timm's ``benchmark.py``, for small images. Every figure is measured on random
data (the data pipeline is measured separately, in ``benchmarks/``), after warm-up steps, as the
median of ``repeats`` timed windows. Conventions, stated once:

- ``train_img_s``: images/s of forward + cross-entropy + backward + SGD (Nesterov, weight decay) step.
- ``infer_img_s``: images/s of an eval-mode forward under ``torch.no_grad()``, same batch size.
- ``latency_ms_*``: batch-1 eval forward, median and 90th percentile over individually timed calls.
- ``macs_per_image``: forward multiply-accumulates (``models.profile.count_macs``: flop_counter / 2).
- ``train_gflops``: achieved training GFLOP/s = 3 x forward MACs x 2 FLOPs per MAC x train_img_s / 1e9
  (the usual "backward costs twice the forward" convention; it counts useful model FLOPs, not
  what the kernels actually execute).
- ``peak_mem_mb``: peak memory of building the model and training it (weights, gradients, optimizer
  state, activations; the batch too on CUDA). CUDA: ``torch.cuda.max_memory_allocated``. CPU: growth of
  the process's peak resident set (Linux: the high-water mark is reset through ``/proc/self/clear_refs``
  and freed heap is handed back with ``malloc_trim`` first; elsewhere ``ru_maxrss``, which never goes
  down, so a model smaller than an earlier one can show 0). ``mem_method`` names which one a row used.
- ``compile_s`` (with ``--compile``): the first training step, i.e. compilation plus one step.
- CUDA timings use CUDA events (one synchronisation per window); CPU timings ``time.perf_counter``.
  Warm-up: 10 steps on CUDA, 2 on the CPU; a window lasts about 0.5 s (CUDA) or 1 s (CPU), at least a step.
- ``--amp`` is bf16 autocast, measured as asked even on a CPU without native bf16 (where
  ``cifarbench train`` refuses it), so the cost is visible.

A model that fails (unknown name, out of memory, an op the backend does not support) gets its
error in the ``error`` column and the next model is measured.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import platform
import statistics
import tempfile
import time
from typing import Callable

import torch
import torch.nn.functional as F

from cifarbench import log
from cifarbench.config import compile_mode
from cifarbench.errors import CifarbenchError

COLUMNS = [
    "model", "stem", "resolution", "batch_size", "device", "amp", "channels_last", "compile", "threads",
    "params", "macs_per_image", "train_img_s", "infer_img_s", "latency_ms_median", "latency_ms_p90",
    "peak_mem_mb", "mem_method", "train_gflops", "compile_s",
    "onnx_latency_ms_median", "onnx_latency_ms_p90", "onnx_error", "error",
]


# ---------------------------------------------------------------- devices and clocks
def resolve_device(device: str = "auto") -> torch.device:
    from cifarbench.engine.env import resolve_device as _resolve

    try:
        return _resolve(device)
    except RuntimeError:  # torch.device() on a name it does not know
        raise CifarbenchError(f"--device {device!r}: not a device (auto, cpu, cuda, cuda:N or mps)") from None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], n: int, device: torch.device) -> float:
    """Seconds taken by ``n`` calls of ``fn``, all work finished. CUDA: events, one sync at the end,
    so the host never waits inside the window."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return time.perf_counter() - t0


def throughput(fn: Callable[[], object], batch_size: int, device: torch.device, *, warmup: int = 2,
               repeats: int = 5, window_s: float = 1.0, max_steps: int = 200) -> dict:
    """Warm up, size a window to last about ``window_s`` seconds, then time ``repeats`` windows.

    Returns ``{"img_s": median, "all": [...], "steps": steps per window, "first_s": first call}``.
    The first call is timed alone: with ``torch.compile`` it holds the compilation.
    """
    first_s = timed(fn, 1, device)
    if warmup > 1:
        timed(fn, warmup - 1, device)
    probe = timed(fn, 1, device)
    steps = max(1, min(max_steps, math.ceil(window_s / max(probe, 1e-6))))
    rates = [batch_size * steps / timed(fn, steps, device) for _ in range(repeats)]
    return {"img_s": statistics.median(rates), "all": rates, "steps": steps, "first_s": first_s}


def latencies(fn: Callable[[], object], device: torch.device, *, warmup: int = 3, budget_s: float = 2.0,
              min_calls: int = 10, max_calls: int = 300) -> dict:
    """Individually timed calls (the batch-1 case): median and p90 in milliseconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < t_end):
        times.append(timed(fn, 1, device))
    return {"median_ms": statistics.median(times) * 1e3, "p90_ms": _percentile(times, 90) * 1e3, "n": len(times)}


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory of one phase: CUDA allocator stats, or the growth of the process's peak RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = None
        self.mb = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda_max_allocated"
            return self
        _release_memory()
        if _reset_rss_peak():
            self.method = "rss_hwm_delta"
            self._base = _status_kb("VmRSS")
        else:
            self.method = "ru_maxrss_delta"
            self._base = _maxrss_kb()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.method == "rss_hwm_delta":
            self.mb = max(0, _status_kb("VmHWM") - self._base) / 1024
        else:
            self.mb = max(0, _maxrss_kb() - self._base) / 1024
        return False


def _release_memory() -> None:
    """Hand freed heap memory back to the OS, so the RSS baseline of the next model is honest."""
    gc.collect()
    if platform.system() == "Linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_rss_peak() -> bool:
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_kb() -> int:
    import resource  # POSIX only; Linux takes the /proc path first

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if platform.system() == "Darwin" else r  # macOS reports bytes


# ---------------------------------------------------------------- steps
def autocast(device: torch.device, amp: bool):
    """bf16 autocast on the device (CPU, CUDA), or a no-op."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool = False,
                    lr: float = 0.01, loop: bool = False, torch_fused: bool = False) -> Callable[[], None]:
    """A bare forward + backward + SGD step on a fixed batch: the reference the engine is measured against.
    Same optimizer as the engine's default recipe (Nesterov SGD with weight decay, the engine's fused
    implementation where torch has one); loop=True forces torch's per-parameter loop instead, torch_fused=True
    torch's own fused step instead of the engine's FlatFusedSGD (the same kernel on flat aliases)."""
    from cifarbench.engine.optim import FlatFusedSGD, implementation

    params = list(model.parameters())
    impl = {"foreach": False} if loop else implementation(params)
    sgd = FlatFusedSGD if impl.get("fused") and not torch_fused else torch.optim.SGD
    opt = sgd(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4, **impl)
    model.train()

    def step():
        with autocast(x.device, amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def make_infer_step(model: torch.nn.Module, x: torch.Tensor, amp: bool = False) -> Callable[[], object]:
    def step():
        with torch.no_grad(), autocast(x.device, amp):
            return model(x)

    return step


def random_batch(batch_size: int, channels: int, resolution: int, device: torch.device,
                 channels_last: bool = False, num_classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, channels, resolution, resolution, generator=g)
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device)


# ---------------------------------------------------------------- ONNX
def onnx_latency(model: torch.nn.Module, channels: int, resolution: int, threads: int,
                 budget_s: float = 2.0) -> dict:
    """Export to ONNX (opset 17, batch 1) and time batch-1 inference in ONNX Runtime on the CPU.

    The exporter is ``cifarbench export``'s (``export.export_onnx``: TorchScript-based first, the
    torch.export-based one as the fallback).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnx_error": "onnxruntime is not installed (pip install 'cifarbench[onnx]')"}
    from cifarbench.export import export_onnx

    model = model.float().eval().cpu()
    x = torch.randn(1, channels, resolution, resolution)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(model, x, path, opset=17)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy()}
        lat = latencies(lambda: sess.run(None, feed), torch.device("cpu"), budget_s=budget_s)
    return {"onnx_latency_ms_median": lat["median_ms"], "onnx_latency_ms_p90": lat["p90_ms"]}


# ---------------------------------------------------------------- one model, many models
def _short_error(e: BaseException) -> str:
    """One line: the message alone for our own errors, prefixed with the exception type for the rest."""
    msg = str(e).strip().splitlines()
    first = msg[0][:200] if msg else ""
    return first if isinstance(e, CifarbenchError) and first else f"{type(e).__name__}: {first}".rstrip(": ")


def _build(name: str, stem: str, num_classes: int, in_chans: int) -> torch.nn.Module:
    from cifarbench.models import create_model

    return create_model(name, num_classes=num_classes, in_chans=in_chans, stem=stem)


def bench_model(name: str, *, stem: str, resolution: int, batch_size: int, device: torch.device, amp: bool,
                channels_last: bool, compile: bool | str, export: str | None, repeats: int, num_classes: int = 10,
                in_chans: int = 3, window_s: float | None = None, latency_s: float | None = None) -> dict:
    """Measure one model; raises on failure (``run_bench`` turns that into the row's error)."""
    from cifarbench.models.profile import count_macs

    cuda = device.type == "cuda"
    window_s = window_s if window_s is not None else (0.5 if cuda else 1.0)
    latency_s = latency_s if latency_s is not None else (1.0 if cuda else 2.0)
    warmup = 10 if cuda else 2
    row: dict = {}

    x, y = random_batch(batch_size, in_chans, resolution, device, channels_last, num_classes)
    # The memory window covers the model's weights too, so CPU and CUDA rows mean the same thing.
    with PeakMemory(device) as mem:
        model = _build(name, stem, num_classes, in_chans)
        row["params"] = sum(p.numel() for p in model.parameters())
        row["macs_per_image"] = count_macs(model, (1, in_chans, resolution, resolution))
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        from cifarbench.engine import cpu_conv

        cpu_conv.apply(model, device, amp)  # the kernels training uses (small-map convolutions as matmuls where they pay)
        net = torch.compile(model, mode=compile_mode(compile)) if compile else model
        t = throughput(make_train_step(net, x, y, amp), batch_size, device, warmup=warmup, repeats=repeats,
                       window_s=window_s)
    row.update(train_img_s=t["img_s"], peak_mem_mb=mem.mb, mem_method=mem.method)
    row["train_gflops"] = 3 * row["macs_per_image"] * 2 * t["img_s"] / 1e9
    if compile:
        row["compile_s"] = t["first_s"]  # the first step: compilation plus one step

    model.eval()
    i = throughput(make_infer_step(net, x, amp), batch_size, device, warmup=warmup, repeats=repeats,
                   window_s=window_s)
    row["infer_img_s"] = i["img_s"]

    x1 = x[:1].clone(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    lat = latencies(make_infer_step(net, x1, amp), device, warmup=warmup, budget_s=latency_s)
    row.update(latency_ms_median=lat["median_ms"], latency_ms_p90=lat["p90_ms"])

    if export == "onnx":
        # An export failure is noted, not fatal: the figures above are still valid.
        try:
            model = model.to("cpu", memory_format=torch.contiguous_format)
            row.update(onnx_latency(model, in_chans, resolution, torch.get_num_threads()))
        except Exception as e:  # noqa: BLE001 - any exporter/runtime failure belongs in the row
            row["onnx_error"] = _short_error(e)
    return row


def run_bench(models, stem: str = "cifar", resolution: int = 32, batch_size: int = 256, device: str = "auto",
              amp: bool = False, channels_last: bool = False, compile: bool | str = False, export: str | None = None,
              threads: int | None = None, repeats: int = 5, *, window_s: float | None = None,
              latency_s: float | None = None) -> list[dict]:
    """Benchmark each model in turn; one row per model, every row with every column of ``COLUMNS``.

    ``window_s`` (seconds per timed window) and ``latency_s`` (seconds of batch-1 calls) default to
    values that suit the device; tests pass small ones.
    """
    if isinstance(models, str):
        models = [models]
    if not models:
        raise CifarbenchError("--models: name at least one model")
    if repeats < 1:
        raise CifarbenchError(f"--repeats {repeats}: must be at least 1")
    if batch_size < 1:
        raise CifarbenchError(f"--batch-size {batch_size}: must be at least 1")
    if resolution < 8:
        raise CifarbenchError(f"--resolution {resolution}: must be at least 8 pixels")
    if export not in (None, "onnx"):
        raise CifarbenchError(f"--export {export!r}: only 'onnx' is supported")
    if threads is not None and threads < 1:
        raise CifarbenchError(f"--threads {threads}: must be at least 1")
    if compile:
        compile_mode(compile)  # an unknown mode fails here, not once per model
    dev = resolve_device(device)

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        for name in models:
            row = dict.fromkeys(COLUMNS)
            row.update(model=name, stem=stem, resolution=resolution, batch_size=batch_size, device=str(dev),
                       amp=amp, channels_last=channels_last, compile=compile, threads=torch.get_num_threads())
            log.info(f"bench: {name} (stem {stem}, {resolution} px, batch {batch_size}, {dev})")
            try:
                row.update(bench_model(name, stem=stem, resolution=resolution, batch_size=batch_size, device=dev,
                                       amp=amp, channels_last=channels_last, compile=compile, export=export,
                                       repeats=repeats, window_s=window_s, latency_s=latency_s))
            except Exception as e:  # noqa: BLE001 - one model's failure must not stop the others
                row["error"] = _short_error(e)
                log.warn(f"bench: {name}: {row['error']}")
            finally:
                gc.collect()
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
    finally:
        torch.set_num_threads(old_threads)
    return rows
