"""What a study will run, and how long that takes here: ``cifarbench study --dry-run``.

The time estimate is measured, not guessed: a few training steps of each model at the study's
resolution on the current device (1 warm-up + up to 3 timed steps, fewer when a step takes over a
second; fp32, eager), scaled by the images the study will push through it. On a CPU the steps use a
batch of 4 above 64 px and 32 below, to keep the measurement short (ResNet18 at 224 px: about 3 s a
step here); small batches run somewhat slower per image than the study's, so the estimate errs long.
It measures the machine as it is: other jobs running at the same time inflate it. A run with progressive
resizing is measured at its smallest size too, and its steps priced by their pixels (``prog_res_cost``).
"""
from __future__ import annotations

import time
from typing import Any

from cifarbench.study.budget import EVAL_COST  # a forward pass costs about a third of forward + backward + step
from cifarbench.study.spec import StudySpec, params_of

# Images in the training file before the validation split, and the native size: enough for an estimate
# without reading the dataset (a dry run must work before the data is downloaded).
DATASETS = {"cifar10": (50000, 32, 3, 10), "cifar100": (50000, 32, 3, 100),
            "fashion-mnist": (60000, 28, 1, 10), "mnist": (60000, 28, 1, 10), "shapes": (12000, 32, 3, 10)}

COLUMNS = ["model", "config", "opt", "lr", "momentum", "weight_decay", "sched", "epochs", "batch_size",
           "stem", "resolution", "augment", "label_smoothing", "train_subset", "amp", "seed"]


def _row(spec: StudySpec, model, stage: str, params: dict, name: str, seed=None) -> dict[str, Any]:
    cfg = spec.run_config(model, stage, params, seed=seed).to_dict()
    row = {k: cfg.get(k) for k in COLUMNS}
    row.update(model=model.name, config=name)
    if cfg["opt"] == "sgd":
        row["momentum"] = 0.0  # "sgd" is plain SGD, whatever momentum the config holds
    elif cfg["opt"] in ("adam", "adamw"):
        row["momentum"] = None  # not used
    return row


def plan(spec: StudySpec) -> dict[str, list[dict[str, Any]]]:
    """Rows of the sweep runs and the final runs, with every hyperparameter that matters."""
    sweep, final = [], []
    for m in spec.models:
        if spec.sampler == "grid":
            for p in m.grid:
                sweep.append(_row(spec, m, "sweep", params_of(p), p["name"], seed=spec.sweep_seed))
        else:
            space = ", ".join(f"{k}={v}" for k, v in m.space.items())
            for i in range(int(spec.sweep.get("n_trials", 0))):
                row = _row(spec, m, "sweep", {}, f"trial{i:03d}", seed=spec.sweep_seed)
                row.update({k: "?" for k in m.space}, config=f"trial{i:03d} ({space})")
                sweep.append(row)
        final_params = params_of(m.grid[0]) if m.grid else {}
        row = _row(spec, m, "final", final_params, "best on val", seed=None)
        for k in set().union(*(params_of(p) for p in m.grid), m.space):  # decided by the sweep
            if k in row:
                row[k] = "best"
        row["seed"] = " ".join(str(s) for s in spec.seeds)
        final.append(row)
    return {"sweep": sweep, "final": final}


def _steps_per_image(model: str, stem: str, resolution: int, in_chans: int, num_classes: int, device, batch: int,
                     amp: bool = False, channels_last: bool = False, threads: int | None = None) -> float:
    import contextlib

    import torch

    if threads:  # measure at the thread count the run will have (its --jobs slot), then put torch's back
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return _steps_per_image(model, stem, resolution, in_chans, num_classes, device, batch, amp, channels_last)
        finally:
            torch.set_num_threads(previous)

    from cifarbench.models import create_model

    net = create_model(model, num_classes=num_classes, in_chans=in_chans, stem=stem).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    from cifarbench.engine import cpu_conv

    cpu_conv.apply(net, device, amp)  # the kernels the run will use (small-map convolutions as matmuls where they pay)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(batch, in_chans, resolution, resolution, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    step()  # warm-up: allocations, cuDNN autotuning, oneDNN primitive caches
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    n = 0
    while n < 3 and (n == 0 or time.perf_counter() - t0 < 1.0):  # up to 3 steps, fewer when one takes > 1 s
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        n += 1
    return (time.perf_counter() - t0) / (n * batch)


def prog_res_cost(s_full: float, s_start: float, start: int, full: int, end: float) -> float:
    """Mean seconds per training image of a run with progressive resizing (``--prog-res start``), from the
    seconds per image measured at ``start`` and at ``full`` px. Each step of the engine's own schedule
    (``loader.prog_res_schedule``, over a nominal 1,000 steps: the schedule is a fraction of the run) is
    priced by its pixels, linearly between the two measured sizes: a convolution's work grows with the
    pixels, and the fixed cost per step (the head, the optimizer) is in both measurements."""
    from cifarbench.engine.loader import prog_res_schedule

    at, steps = prog_res_schedule(start, full, end, 1, 1000), 1000
    span = full * full - start * start
    return sum(s_start + (s_full - s_start) * (at(0, i) ** 2 - start * start) / span for i in range(steps)) / steps


def _run_seconds_per_image(model: str, stem: str, resolution: int, in_chans: int, num_classes: int, device, batch: int,
                           amp: bool = False, channels_last: bool = False, threads: int | None = None,
                           prog_res: int = 0, prog_res_end: float = 0.75) -> float:
    """Seconds per training image of a run: measured at its resolution, and with progressive resizing also at
    its smallest size, priced over the schedule (``prog_res_cost``)."""
    s = _steps_per_image(model, stem, resolution, in_chans, num_classes, device, batch, amp, channels_last, threads)
    if not prog_res or prog_res >= resolution:
        return s
    small = _steps_per_image(model, stem, prog_res, in_chans, num_classes, device, batch, amp, channels_last, threads)
    return prog_res_cost(s, min(small, s), prog_res, resolution, prog_res_end)


def estimate(spec: StudySpec, device: str | None = None) -> dict[str, Any]:
    """Seconds the whole study would take on this device, from a short measurement per model."""
    from cifarbench.data import default_val_size
    from cifarbench.engine.env import amp_unsupported, device_name, resolve_device

    import torch

    from cifarbench.cpus import usable_cpus

    dev = resolve_device(device or spec.defaults.get("device", "auto"))
    n_all, native, chans, classes = DATASETS.get(spec.dataset, (50000, 32, 3, 10))
    models, total = [], 0.0
    threads = torch.get_num_threads()
    if dev.type == "cpu":  # measure as the study runs: `jobs` runs side by side, the cores split between them
        torch.set_num_threads(max(1, usable_cpus() // spec.jobs))
    for m in spec.models:
        first = params_of(m.grid[0]) if m.grid else {}
        stages = []
        for stage in ("sweep", "final"):
            cfg = spec.run_config(m, stage, first)
            val = default_val_size(spec.dataset, n_all) if cfg.val_size is None else cfg.val_size
            n_train = min(cfg.train_subset or n_all, n_all - val)
            runs = (len(m.grid) or int(spec.sweep.get("n_trials", 0))) if stage == "sweep" else len(spec.seeds)
            stages.append((cfg, runs, n_train, val))
        cfg = stages[0][0]
        res = cfg.resolution or native
        # CPU: small batches keep the measurement short; at 224 px a step of 4 already takes seconds
        batch = cfg.batch_size if dev.type != "cpu" else (4 if res > 64 else 32)
        amp = cfg.amp and not amp_unsupported(dev)  # the engine refuses amp where bf16 would be slower
        s_img = _run_seconds_per_image(m.name, cfg.stem, res, chans, classes, dev, batch, amp, cfg.channels_last,
                                       prog_res=cfg.prog_res, prog_res_end=cfg.prog_res_end)
        secs = sum(runs * c.epochs * (n_train + EVAL_COST * val) * s_img for c, runs, n_train, val in stages)
        secs += len(spec.seeds) * 10000 * EVAL_COST * s_img  # the test stage
        models.append({"model": m.name, "resolution": res, "measured_batch": batch,
                       "train_images_per_sec": round(1 / s_img, 1), "hours": round(secs / 3600, 2)})
        total += secs
    torch.set_num_threads(threads)
    jobs = spec.jobs if dev.type == "cpu" else 1
    return {"device": str(dev), "device_name": device_name(dev), "models": models, "seconds": total / jobs,
            "method": f"2 warm-up + up to 3 timed training steps per model with the runs' amp and memory format, "
                      f"scaled to the study's images{f', {jobs} runs side by side' if jobs > 1 else ''}"}


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
