"""The training spine: train_one_epoch → evaluate → train, everything passed explicitly.

`train(cfg)` leaves a run folder (see ARCHITECTURE.md) from which everything else is reported:
config.json, metrics.csv (one row per epoch), results.json, last.pt and best.pt.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarbench import log
from cifarbench.config import TrainConfig, compile_mode, epoch_passes, read_json, run_steps, write_json
from cifarbench.engine import checkpoint, cpu_conv, distributed
from cifarbench.engine.env import amp_unsupported, check_amp, environment, resolve_device
from cifarbench.engine.ema import ModelEma
from cifarbench.engine.loader import DeviceLoader, prog_res_schedule
from cifarbench.engine.lookahead import Lookahead
from cifarbench.engine.mix import Mix
from cifarbench.engine.optim import build_optimizer, build_scheduler, param_groups, steps_per_batch
from cifarbench.errors import CifarbenchError

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "images_per_sec"]
TTA_SHIFT = 2  # pixels: flip-translate adds the flip pair shifted by this much toward two opposite corners
# Fields that may differ between a run and its resumption without changing what is computed.
RESUME_FREE = {"output", "resume", "device", "threads", "data_dir", "eval_test", "compile", "eval_batch_size", "keep_best",
               "tta", "log"}


class Interrupted(CifarbenchError):
    """SIGINT/SIGTERM: the current step finished and last.pt was written."""


# ------------------------------------------------------------------ one epoch
def train_one_epoch(model, loader: DeviceLoader, optimizer, scheduler, criterion, *, amp: bool,
                    start_step: int = 0, sums: torch.Tensor | None = None, should_stop=lambda: False,
                    progress: log.Progress | None = None, ema: ModelEma | None = None,
                    lookahead: Lookahead | None = None, mix: Mix | None = None, stop_step: int | None = None) -> dict:
    """Train over `loader` from `start_step` up to `stop_step` (default: the whole pass; a fractional epoch's last
    pass stops early). Returns summed loss/correct/count as a device tensor, the steps
    done, and why it stopped early ("interrupted" or "diverged"), if it did. With `mix` (mixup / CutMix, its
    epoch's draws made), "correct" counts each prediction against both labels, by their weights.

    Metrics accumulate on the device so that a CUDA step never waits for the host.
    """
    model.train()
    device = loader.device
    check_each_step = device.type == "cpu"  # .item() is free on the CPU; on CUDA we check once per epoch
    per_batch = scheduler is not None
    sums = torch.zeros(3, device=device, dtype=torch.float64) if sums is None else sums.to(device)
    step = start_step
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    for x, y in loader.iterate(start_step, stop_step):
        lam = 1.0
        if mix is not None:
            x, lam = mix(x, step)
        with autocast:
            out = model(x)
            loss = criterion(out, y) if lam == 1.0 else lam * criterion(out, y) + (1 - lam) * criterion(out, y.flip(0))
        if check_each_step and not math.isfinite(loss.item()):
            return {"sums": sums, "step": step, "stopped": "diverged"}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if lookahead is not None:
            lookahead.step()
        if ema is not None:
            ema.update()
        if per_batch:
            scheduler.step()
        n = y.shape[0]
        pred = out.argmax(1)
        hits = (pred == y).sum() if lam == 1.0 else lam * (pred == y).sum() + (1 - lam) * (pred == y.flip(0)).sum()
        sums += torch.stack([loss.detach().double() * n, hits.double(),
                             torch.tensor(float(n), device=device, dtype=torch.float64)])
        step += 1
        if progress is not None:
            progress.update(1, loss=f"{loss.item():.3f}" if check_each_step or step % 50 == 0 else "")
        if should_stop():
            return {"sums": sums, "step": step, "stopped": "interrupted"}
    if not math.isfinite(sums[0].item()):
        return {"sums": sums, "step": step, "stopped": "diverged"}
    return {"sums": sums, "step": step, "stopped": None}


def tta_logits(model, x: torch.Tensor, tta: str = "none", plain: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of one forward ("none"), or averaged over test-time views.

    flip: the image and its mirror, averaged. flip-translate: half that pair, plus a quarter each of the pair
    shifted by TTA_SHIFT pixels toward the top-left and toward the bottom-right (reflect padding), the weighting
    airbench uses for its mirror + translate TTA. `plain`: model(x), when the caller already has it (the first
    view), so plain and TTA accuracy cost one forward less than computing them apart.
    """
    plain = model(x) if plain is None else plain
    if tta == "none":
        return plain
    pair = (plain + model(x.flip(3))) / 2
    if tta == "flip":
        return pair
    p, (h, w) = TTA_SHIFT, x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    shifted = [padded[..., :h, :w], padded[..., 2 * p:, 2 * p:]]
    return 0.5 * pair + sum(0.125 * (model(v) + model(v.flip(3))) for v in shifted)


@torch.no_grad()
def evaluate(model, loader: DeviceLoader, criterion, num_classes: int, *, amp: bool,
             ctx: distributed.DistContext | None = None, tta: str = "none") -> dict:
    """Loss, accuracy (%) and confusion matrix (rows: true class) over the loader's split, summed over ranks:
    always of the plain forward. With `tta`, also "acc_tta": accuracy of the logits averaged over test-time
    views (see tta_logits), from the same pass; else "acc_tta" is None."""
    model.eval()
    device = loader.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    confusion = torch.zeros(num_classes * num_classes, device=device, dtype=torch.float64)
    correct_tta = torch.zeros((), device=device, dtype=torch.float64)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    for x, y in loader:
        if len(y) == 0:
            continue
        with autocast:
            out = model(x)
            if tta != "none":
                correct_tta += (tta_logits(model, x, tta, plain=out).argmax(1) == y).sum().double()
        loss_sum += criterion(out.float(), y).double() * len(y)
        confusion += torch.bincount(y * num_classes + out.argmax(1), minlength=num_classes ** 2).double()
    if ctx is not None:
        ctx.all_reduce_sum(loss_sum)
        ctx.all_reduce_sum(confusion)
        ctx.all_reduce_sum(correct_tta)
    confusion = confusion.view(num_classes, num_classes).long().cpu()
    n = int(confusion.sum())
    correct = int(confusion.diag().sum())
    return {"loss": loss_sum.item() / max(n, 1), "acc": 100.0 * correct / max(n, 1), "n": n,
            "confusion": confusion, "acc_tta": 100.0 * correct_tta.item() / max(n, 1) if tta != "none" else None}


# ------------------------------------------------------------------ helpers
def build_model(cfg: TrainConfig, num_classes: int, channels: int) -> nn.Module:
    from cifarbench.models import create_model

    return create_model(cfg.model, num_classes=num_classes, in_chans=channels, stem=cfg.stem,
                        model_kwargs=cfg.model_kwargs)


def load_eval_model(run_dir: Path, cfg: TrainConfig, num_classes: int, channels: int) -> tuple[nn.Module, Path]:
    """A run folder's model with the weights to evaluate, predict with and export: best.pt's (else last.pt's),
    the EMA average when the run kept one. Returns the model (on the CPU) and the checkpoint's path."""
    ckpt_path = next((run_dir / n for n in ("best.pt", "last.pt") if (run_dir / n).exists()), None)
    if ckpt_path is None:
        raise CifarbenchError(f"{run_dir}: no checkpoint (best.pt or last.pt); train the run first")
    model = build_model(cfg, num_classes, channels)
    model.load_state_dict(checkpoint.eval_state_dict(checkpoint.load(ckpt_path)))
    return model, ckpt_path


def load_splits(cfg: TrainConfig):
    from cifarbench.data import load_dataset

    # The validation split is carved with a fixed seed, independent of the training seed, so that
    # every run of a study is selected on the same held-out images.
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=0)


def run_splits(cfg: TrainConfig, splits):
    """The splits a run trains on: a --train-subset is a stratified subset, whose mean and std normalise every
    split. Training and every re-evaluation go through here, so both see the same inputs."""
    if cfg.train_subset is not None and cfg.train_subset < len(splits.train):
        splits = splits.subset(train=cfg.train_subset, seed=0)
    return splits


def per_class_acc(confusion: torch.Tensor) -> list[float]:
    rows = confusion.sum(1).clamp(min=1)
    return [round(v, 3) for v in (100.0 * confusion.diag() / rows).tolist()]


def _write_metrics(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)


@contextmanager
def _stop_on_signals(enabled: bool):
    """SIGINT/SIGTERM set a flag: the loop finishes its step, writes last.pt and stops. A second signal kills."""
    flag = {"stop": False}
    if not enabled:
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        log.warn(f"{signal.Signals(signum).name}: stopping after this step (send again to abort now)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _resolve_output(cfg: TrainConfig) -> Path:
    out = Path(cfg.output or f"runs/{cfg.model}-{cfg.dataset.replace(':', '_').replace('/', '_')}-seed{cfg.seed}")
    if out.exists() and not out.is_dir():
        raise CifarbenchError(f"--output {out}: exists and is not a folder")
    return out


def _resume_checkpoint(cfg: TrainConfig, out: Path) -> tuple[Path | None, dict | None]:
    """Which checkpoint to resume from, or the finished results if there is nothing left to do."""
    results = out / "results.json"
    if cfg.resume in (None, ""):
        if (out / "last.pt").exists():
            raise CifarbenchError(f"--output {out}: already holds a run; use --resume auto to continue it or another --output")
        return None, None
    if cfg.resume == "auto":
        if results.exists():
            prev = read_json(results)
            if prev.get("status") in ("finished", "diverged", "pruned"):
                return None, prev
        return (out / "last.pt" if (out / "last.pt").exists() else None), None
    path = Path(cfg.resume)
    if not path.is_file():
        raise CifarbenchError(f"--resume {path}: checkpoint not found")
    return path, None


def _check_resume_config(saved: dict, cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    # a field the checkpoint lacks is newer than it: the run had that field's default (new fields keep old behaviour)
    saved = {**TrainConfig().to_dict(), **saved}
    diff = [k for k in now if k not in RESUME_FREE and saved[k] != now[k]]
    if diff:
        pairs = ", ".join(f"{k}={saved[k]!r} (now {now[k]!r})" for k in diff)
        raise CifarbenchError(f"--resume {path}: the checkpoint was trained with {pairs}; resume with the same settings")


# ------------------------------------------------------------------ the run
def train(cfg: TrainConfig, splits=None, on_epoch=None) -> dict:
    """Train cfg.model on cfg.dataset; write the run folder; return the results.json dict.

    on_epoch(epoch, row) -> bool: called after each epoch with the metrics row; True stops the run
    (status "pruned"; used by the sweep's pruners).
    """
    cfg.validate()
    ctx = distributed.from_env()
    device = resolve_device(cfg.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if cfg.amp:
        check_amp(device)
    if cfg.sync_bn and ctx.enabled and device.type != "cuda":
        raise CifarbenchError(f"--sync-bn: torch.nn.SyncBatchNorm runs on CUDA devices only, not {device.type}; without "
                              "it, BatchNorm buffers are averaged across processes before every evaluation")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = _resolve_output(cfg)
    ckpt_path, finished = _resume_checkpoint(cfg, out)
    if finished is not None:
        log.info(f"{out}: already {finished['status']}; nothing to do")
        return finished
    distributed.init(ctx, device)
    if not ctx.is_main:
        log.set_quiet(True)  # one voice: rank 0 prints, writes files and draws the progress bar
    try:
        results = _run(cfg, ctx, device, out, ckpt_path, splits, on_epoch)
        ctx.barrier()  # leave together: a rank that exits while another still uses gloo aborts
        return results
    finally:
        distributed.shutdown(ctx)


def _run(cfg, ctx, device, out, ckpt_path, splits, on_epoch) -> dict:
    t_start = time.perf_counter()
    main = ctx.is_main
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise CifarbenchError(f"--output {out}: cannot write there ({e.strerror or e})") from None

    splits = run_splits(cfg, splits if splits is not None else load_splits(cfg))
    global_batch = cfg.batch_size * ctx.world_size
    if global_batch > len(splits.train):
        raise CifarbenchError(f"--batch-size {cfg.batch_size}: larger than the training split "
                              f"({len(splits.train)} images{' over %d processes' % ctx.world_size if ctx.enabled else ''})")
    resolution = cfg.resolution or splits.image_size
    if cfg.prog_res and cfg.prog_res >= resolution:
        raise CifarbenchError(f"--prog-res {cfg.prog_res}: must be smaller than the training resolution ({resolution} px)")

    torch.manual_seed(cfg.seed)  # weight init and dropout
    from cifarbench.models.profile import count_macs

    model = build_model(cfg, splits.num_classes, splits.channels)
    if cfg.whiten_init and ckpt_path is None:  # a resumed run loads its weights instead
        _whiten_init(model, cfg, splits, resolution)
    macs = count_macs(model, (1, splits.channels, resolution, resolution))
    if cfg.prog_res:  # a model that cannot take the smallest size fails here, not in the middle of a run
        count_macs(model, (1, splits.channels, cfg.prog_res, cfg.prog_res))
    params = sum(p.numel() for p in model.parameters())
    if cfg.sync_bn and ctx.enabled:  # one set of batch statistics over the global batch (train() checked CUDA)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    matmul_convs = cpu_conv.apply(model, device, cfg.amp)  # before the EMA copy, which then shares the choice
    matmul_pixels = list(cpu_conv.thresholds(device, cfg.amp)) if matmul_convs else None
    if matmul_convs:
        log.info(f"{matmul_convs} convolutions routed to {'bf16' if cfg.amp else 'fp32'} matmuls where their output map "
                 f"has at most {matmul_pixels[0]} pixels (engine/cpu_conv.py)")
    optimizer = build_optimizer(cfg, param_groups(model, cfg))
    lookahead = Lookahead(model, cfg.lookahead_alpha, cfg.lookahead_k) if cfg.lookahead else None
    mix = Mix(cfg.mixup, cfg.cutmix, cfg.mixup_switch_prob, cfg.seed * 1000 + ctx.rank) if cfg.mixup or cfg.cutmix else None
    ema = ModelEma(model, cfg.model_ema_decay) if cfg.model_ema else None
    eval_model = ema.module if ema is not None else model  # what validation, selection and best.pt's eval use
    train_loader = DeviceLoader(splits.train.images, splits.train.labels, cfg.batch_size, True, device,
                                splits.mean, splits.std, cfg.resolution, cfg.augment, cfg.seed,
                                ctx.rank, ctx.world_size, cfg.channels_last, cfg.cutout, cfg.crop_pad, flip=cfg.flip)
    val_loader = DeviceLoader(splits.val.images, splits.val.labels, cfg.eval_batch_size, False, device,
                              splits.mean, splits.std, cfg.resolution, rank=ctx.rank,
                              world_size=ctx.world_size, channels_last=cfg.channels_last)
    steps = len(train_loader)
    total_steps = run_steps(cfg.epochs, steps)  # a fractional epoch (--epochs 2.4) ends inside its last pass
    passes = epoch_passes(cfg.epochs, steps)
    res_at = None
    if cfg.prog_res:
        res_at = train_loader.res_schedule = prog_res_schedule(cfg.prog_res, resolution, cfg.prog_res_end,
                                                               cfg.epochs, steps)
    scheduler = build_scheduler(cfg, optimizer, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()

    # -inf: without a validation split the score is -train_loss, which is always negative
    state = {"epoch": 0, "step": 0, "best_val_acc": float("-inf"), "best_epoch": 0, "history": [],
             "partial": torch.zeros(3, dtype=torch.float64), "partial_time": 0.0}
    if ckpt_path is not None:
        ckpt = checkpoint.load(ckpt_path)
        _check_resume_config(ckpt["config"], cfg, ckpt_path)
        if ckpt.get("world_size", 1) != ctx.world_size:
            raise CifarbenchError(f"--resume {ckpt_path}: saved with {ckpt.get('world_size', 1)} processes, "
                                  f"now {ctx.world_size}; resume with the same world size")
        model.load_state_dict(ckpt["model"])
        if ema is not None:
            ema.load_state_dict({"module": ckpt["model_ema"], "updates": ckpt["model_ema_updates"]})
        if lookahead is not None:
            lookahead.load_state_dict(ckpt["lookahead"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        checkpoint.set_rng_state(ckpt["rng"])
        state.update({k: ckpt[k] for k in state if k in ckpt})
        log.info(f"resuming {out} at epoch {state['epoch'] + 1}, step {state['step']} of {steps}")

    train_model = model
    if ctx.enabled:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = _compile(train_model, model, train_loader, criterion, cfg.amp, compile_mode(cfg.compile))

    env = environment(device)
    base = {"model": cfg.model, "dataset": cfg.dataset, "stem": cfg.stem, "resolution": resolution,
            "seed": cfg.seed, "params": params, "macs_per_image": macs, "classes": list(splits.classes),
            "world_size": ctx.world_size, "effective_batch_size": global_batch, "val_images": len(splits.val),
            "sync_bn": cfg.sync_bn, "matmul_convs": matmul_convs,
            "matmul_conv_max_pixels": matmul_pixels,  # [forward and weight gradient, input gradient] or None
            # what prediction and export need to preprocess an image exactly as this run did
            "preprocess": {"channels": splits.channels, "image_size": splits.image_size, "resolution": resolution,
                           "mean": [float(m) for m in splits.mean], "std": [float(v) for v in splits.std]},
            "accuracy_convention": "val_acc, test_acc: plain (one forward per image; the headline and the selection "
                                   "metric); *_tta: logits averaged over test-time views (--tta)"
                                   + ("; all figures from the EMA weights" if cfg.model_ema else ""),
            "mac_convention": "multiply-accumulates per image, forward pass (torch.utils.flop_counter / 2); "
                              "training MACs = 3 x forward x images seen"}
    logger = None
    if main:
        write_json(out / "config.json", cfg.to_dict())
        write_json(out / "results.json", {**base, "status": "running", "env": env})
        if cfg.log == "tensorboard":
            from cifarbench.engine.tblog import RunLogger

            logger = RunLogger(out, cfg.to_dict(), start_epoch=state["epoch"])
    log.info(f"{cfg.model} (stem {cfg.stem}, {params / 1e6:.2f}M params, {macs / 1e6:.1f}M MACs/image at "
             f"{resolution}px) on {cfg.dataset}: {len(splits.train)} train / {len(splits.val)} val images, "
             f"{device}, batch {global_batch}, {cfg.epochs} epochs"
             + (f", progressive resizing {cfg.prog_res} -> {resolution} px over {cfg.prog_res_end:.0%} of the steps"
                if cfg.prog_res else "") + f" -> {out}")

    def save(name: str, epoch: int, step: int, partial, partial_time: float) -> None:
        if not main:
            return
        extra = {"model_ema": ema.module.state_dict(), "model_ema_updates": ema.updates} if ema is not None else {}
        if lookahead is not None:
            extra["lookahead"] = lookahead.state_dict()
        checkpoint.save_atomic({
            **extra,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "step": step, "best_val_acc": state["best_val_acc"], "best_epoch": state["best_epoch"],
            "history": state["history"], "partial": partial.cpu(), "partial_time": partial_time,
            "rng": checkpoint.rng_state(), "config": cfg.to_dict(), "world_size": ctx.world_size,
        }, out / name)

    status = "finished"
    last_val_tta = None  # (epoch, val TTA accuracy) from the last epoch's validation pass
    with _stop_on_signals(main or not ctx.enabled) as flag:
        for epoch in range(state["epoch"], passes):
            stop = min(steps, total_steps - epoch * steps)
            train_loader.set_epoch(epoch)
            if mix is not None:
                mix.set_epoch(epoch, steps)
            start_step = state["step"]
            bar = (log.Progress(stop - start_step, f"epoch {epoch + 1}/{passes}", images_per_step=global_batch)
                   if main else None)
            t0 = time.perf_counter()
            r = train_one_epoch(train_model, train_loader, optimizer, scheduler if steps_per_batch(cfg) else None,
                                criterion, amp=cfg.amp, start_step=start_step, sums=state["partial"] if start_step else None,
                                should_stop=lambda: ctx.any(flag["stop"], device), progress=bar, ema=ema,
                                lookahead=lookahead, mix=mix, stop_step=stop)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_time = state["partial_time"] + time.perf_counter() - t0
            if bar:
                bar.close()
            if r["stopped"] == "diverged":
                status = "diverged"
                log.warn(f"non-finite loss in epoch {epoch + 1}: run stopped (status diverged); "
                         f"last good checkpoint: {out / 'last.pt'} (epoch {epoch})")
                break
            if r["stopped"] == "interrupted":
                save("last.pt", epoch, r["step"], r["sums"], epoch_time)
                if main:
                    write_json(out / "results.json", {**base, "status": "interrupted", "epochs_done": epoch, "env": env})
                raise Interrupted(f"interrupted in epoch {epoch + 1} at step {r['step']}/{stop}; {out / 'last.pt'} "
                                  f"written. Resume with: cifarbench train --resume auto --output {out}"
                                  + (f" -c {out / 'config.json'}" if cfg.output is None else ""))
            if lookahead is not None:  # timm's sync_lookahead: the epoch's weights are the synced ones
                lookahead.sync()
            sums = ctx.all_reduce_sum(r["sums"].clone())
            loss_sum, correct, count = sums.tolist()
            # every rank evaluates, and saves, the same BatchNorm statistics (see DistContext.average_buffers)
            for m in {id(model): model, id(eval_model): eval_model}.values():
                ctx.average_buffers(m)
            # the bare model, not the DDP wrapper: its forward would broadcast buffers, and ranks
            # may hold different numbers of validation images
            # the last epoch's pass also takes the TTA views: when that epoch is the one kept (one-cycle: nearly
            # always), the final val_acc_tta then costs no second pass over the plain view
            tta = cfg.tta if epoch + 1 == passes else "none"
            val = (evaluate(eval_model, val_loader, eval_criterion, splits.num_classes, amp=cfg.amp, ctx=ctx, tta=tta)
                   if len(splits.val) else None)
            if val and val["acc_tta"] is not None:
                last_val_tta = (epoch + 1, val["acc_tta"])
            row = {"epoch": epoch + 1, "train_loss": round(loss_sum / count, 5), "train_acc": round(100 * correct / count, 3),
                   "val_loss": round(val["loss"], 5) if val else None, "val_acc": round(val["acc"], 3) if val else None,
                   "lr": optimizer.param_groups[0]["lr"], "epoch_time": round(epoch_time, 3),
                   "images_per_sec": round(count / epoch_time, 1)}
            if not steps_per_batch(cfg):
                scheduler.step(row["val_loss"] if val else row["train_loss"])
            state["history"].append(row)
            state.update(epoch=epoch + 1, step=0, partial=torch.zeros(3, dtype=torch.float64), partial_time=0.0)
            score = row["val_acc"] if val else -row["train_loss"]
            if score > state["best_val_acc"]:
                state["best_val_acc"], state["best_epoch"] = score, epoch + 1
                if cfg.keep_best:
                    save("best.pt", epoch + 1, 0, state["partial"], 0.0)
            save("last.pt", epoch + 1, 0, state["partial"], 0.0)
            if main:
                _write_metrics(out / "metrics.csv", state["history"])
                if logger is not None:
                    logger.log_epoch(row)
                log.info(f"epoch {epoch + 1}/{passes}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}%  "
                         + (f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2f}%  " if val else "")
                         + f"lr {row['lr']:.4g}  {epoch_time:.1f}s  {row['images_per_sec']:.0f} img/s")
            if on_epoch is not None and on_epoch(epoch + 1, row):
                status = "pruned"
                break

    history = state["history"]
    times = sorted(h["images_per_sec"] for h in history)
    trained_steps = min(total_steps, len(history) * steps)
    # epochs_done counts passes (validation passes, metrics.csv rows); epochs_trained the fraction of steps as well
    results = {**base, "status": status, "epochs_done": len(history), "epochs_trained": round(trained_steps / steps, 3),
               "best_epoch": state["best_epoch"],
               "best_val_acc": state["best_val_acc"] if len(splits.val) else None,
               "val_acc": None, "val_loss": None, "test_acc": None, "test_loss": None,
               "per_class_acc": None, "confusion": None, "val_acc_tta": None, "test_acc_tta": None,
               "train_time_s": round(sum(h["epoch_time"] for h in history), 3),
               "images_per_sec": times[len(times) // 2] if times else None,
               "total_train_macs": _train_macs(model, splits.channels, macs, res_at, trained_steps, steps, global_batch),
               "env": env}
    if history and status != "diverged":
        best = out / ("best.pt" if cfg.keep_best and (out / "best.pt").exists() else "last.pt")
        ctx.barrier()
        model.load_state_dict(checkpoint.eval_state_dict(checkpoint.load(best, map_location=device)))
        if len(splits.val):  # best.pt holds the weights of that epoch: its validation figures are in the history
            best_row = history[state["best_epoch"] - 1]
            results.update(val_acc=best_row["val_acc"], val_loss=best_row["val_loss"])
            if cfg.tta != "none":
                loaded = state["best_epoch"] if best.name == "best.pt" else len(history)
                if last_val_tta is not None and last_val_tta[0] == loaded:  # the same weights, from that epoch's pass
                    acc_tta = last_val_tta[1]
                else:
                    acc_tta = evaluate(model, val_loader, eval_criterion, splits.num_classes, amp=cfg.amp, ctx=ctx,
                                       tta=cfg.tta)["acc_tta"]
                results["val_acc_tta"] = round(acc_tta, 3)
        if cfg.eval_test:
            test_loader = DeviceLoader(splits.test.images, splits.test.labels, cfg.eval_batch_size, False, device,
                                       splits.mean, splits.std, cfg.resolution, rank=ctx.rank,
                                       world_size=ctx.world_size, channels_last=cfg.channels_last)
            t = evaluate(model, test_loader, eval_criterion, splits.num_classes, amp=cfg.amp, ctx=ctx, tta=cfg.tta)
            results.update(test_acc=round(t["acc"], 3), test_loss=round(t["loss"], 5),
                           per_class_acc=per_class_acc(t["confusion"]), confusion=t["confusion"].tolist(),
                           test_acc_tta=round(t["acc_tta"], 3) if t["acc_tta"] is not None else None)
    results["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    if main:
        write_json(out / "results.json", results)
        if logger is not None:
            logger.close(results)
        if results["test_acc"] is not None:
            log.info(f"{out}: test accuracy {results['test_acc']:.2f}% (best epoch {results['best_epoch']})")
    return results


WHITEN_IMAGES = 2000  # patches of this many training images: 1.8 M 3x3 patches at 32 px, a second on one core


def _whiten_init(model, cfg: TrainConfig, splits, resolution: int) -> None:
    """--whiten-init from the first WHITEN_IMAGES training images, normalised and sized as the loader gives them
    (no augmentation, no randomness: every seed and DDP rank computes the same filters)."""
    from cifarbench.models.whiten import whiten_first_conv

    part = splits.train
    n = min(WHITEN_IMAGES, len(part))
    loader = DeviceLoader(part.images[:n], part.labels[:n], n, False, "cpu", splits.mean, splits.std, resolution)
    x, _ = next(iter(loader))
    k = whiten_first_conv(model, x)
    log.info(f"--whiten-init: {k} channels of the first conv set to patch-whitening filters of {n} training images")


def _train_macs(model, channels: int, macs: int, res_at, trained_steps: int, steps: int, batch: int) -> int:
    """Training MACs of ``trained_steps`` steps (``steps`` per pass): 3 x forward MACs x images seen, each step at
    its own resolution."""
    if res_at is None:
        return 3 * macs * trained_steps * batch
    from cifarbench.models.profile import count_macs

    at = {}
    for g in range(trained_steps):
        r = res_at(*divmod(g, steps))
        at[r] = at.get(r, 0) + 1
    return 3 * batch * sum(n * count_macs(model, (1, channels, r, r)) for r, n in at.items())


def _compile(train_model, model, loader, criterion, amp, mode=None):
    """torch.compile with a warm-up step; on failure say so and fall back to eager."""
    try:
        compiled = torch.compile(train_model, mode=mode)
        saved = copy.deepcopy(model.state_dict())  # the warm-up step must not change the weights or BN stats
        x, y = next(loader.iterate(0))
        with torch.autocast(loader.device.type, dtype=torch.bfloat16) if amp else nullcontext():
            loss = criterion(compiled(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        return compiled
    except Exception as e:  # inductor needs a C compiler, some ops are unsupported, ...
        log.warn(f"--compile failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); training eagerly")
        model.zero_grad(set_to_none=True)
        return train_model


# ------------------------------------------------------------------ re-evaluation
def evaluate_run(run_dir, split: str = "test", data_dir=None, device: str = "auto") -> dict:
    """Evaluate a run's best checkpoint (its EMA weights, if it kept them) on a split, plain and, when the run
    asked for it, with its test-time augmentation; for the test split, store the figures in results.json."""
    run_dir = Path(run_dir)
    if split not in ("test", "val"):
        raise CifarbenchError(f"--split {split!r}: choose test or val")
    saved = read_json(run_dir / "config.json")
    cfg = TrainConfig.from_dict(saved, source=str(run_dir / "config.json"))
    if data_dir is not None:
        cfg = cfg.replace(data_dir=str(data_dir))
    dev = resolve_device(device)
    splits = run_splits(cfg, load_splits(cfg))
    model, ckpt_path = load_eval_model(run_dir, cfg, splits.num_classes, splits.channels)
    model.to(dev)
    if cfg.channels_last:  # the run's memory format: 1.5-2x faster for the small models on the CPU
        model = model.to(memory_format=torch.channels_last)
    part = splits.test if split == "test" else splits.val
    loader = DeviceLoader(part.images, part.labels, cfg.eval_batch_size, False, dev, splits.mean, splits.std,
                          cfg.resolution, channels_last=cfg.channels_last)
    amp = cfg.amp and not amp_unsupported(dev)  # evaluated where bf16 pays, in fp32 elsewhere
    cpu_conv.apply(model, dev, amp)
    r = evaluate(model, loader, nn.CrossEntropyLoss(), splits.num_classes, amp=amp, tta=cfg.tta)
    res = {"acc": round(r["acc"], 3), "loss": round(r["loss"], 5), "n": r["n"], "split": split,
           "per_class_acc": per_class_acc(r["confusion"]), "confusion": r["confusion"].tolist(),
           "classes": list(splits.classes), "checkpoint": str(ckpt_path),
           "acc_tta": round(r["acc_tta"], 3) if r["acc_tta"] is not None else None, "tta": cfg.tta}
    if split == "test" and (run_dir / "results.json").exists():
        results = read_json(run_dir / "results.json")
        results.update(test_acc=res["acc"], test_loss=res["loss"], per_class_acc=res["per_class_acc"],
                       confusion=res["confusion"], test_acc_tta=res["acc_tta"])
        write_json(run_dir / "results.json", results)
    return res
