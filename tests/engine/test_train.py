import csv
import errno
import json

import pytest
import torch

from cifarbench.config import TrainConfig
from cifarbench.engine import checkpoint, evaluate_run, train
from cifarbench.engine import trainer as train_mod
from cifarbench.engine.loader import DeviceLoader
from cifarbench.errors import CifarbenchError


def _cfg(tmp_path, **kw):
    args = dict(model="shufflenet_v2_x0_5", dataset="tiny", stem="cifar", epochs=2, batch_size=32,
                eval_batch_size=64, lr=0.05, output=str(tmp_path / "run"), threads=1, label_smoothing=0.0)
    args.update(kw)
    return TrainConfig(**args)


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_run_folder_holds_config_metrics_results_and_checkpoints(tmp_path, tiny_splits):
    res = train(_cfg(tmp_path), splits=tiny_splits)
    run = tmp_path / "run"
    assert res["status"] == "finished" and res["epochs_done"] == 2
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == set(train_mod.METRIC_COLUMNS)
    saved = json.loads((run / "results.json").read_text())
    assert saved["status"] == "finished" and saved["test_acc"] is not None
    assert len(saved["per_class_acc"]) == 4 and sum(map(sum, saved["confusion"])) == 64
    assert saved["macs_per_image"] > 0 and saved["total_train_macs"] == 3 * saved["macs_per_image"] * 2 * 256
    assert saved["env"]["torch"] == torch.__version__
    assert json.loads((run / "config.json").read_text())["model"] == "shufflenet_v2_x0_5"
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)  # must load with the safe unpickler
        assert {"model", "optimizer", "scheduler", "rng", "config", "epoch"} <= set(ckpt)


def test_a_fractional_epoch_count_trains_part_of_a_last_pass_and_ends_the_schedule_there(tmp_path, tiny_splits):
    # 1.5 epochs of 8 steps (256 images, batch 32): 12 steps, two passes, the second over 4 batches; the one-cycle
    # schedule spans exactly those 12 steps (lr 0 after the last), and both passes end with a validation pass
    res = train(_cfg(tmp_path, epochs=1.5), splits=tiny_splits)
    run = tmp_path / "run"
    assert res["status"] == "finished" and res["epochs_done"] == 2 and res["epochs_trained"] == 1.5
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[-1]["lr"]) == 0.0
    assert all(r["val_acc"] for r in rows)
    saved = json.loads((run / "results.json").read_text())
    assert saved["total_train_macs"] == 3 * saved["macs_per_image"] * 12 * 32
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["scheduler"]["last_epoch"] == 12 and ckpt["epoch"] == 2
    # the last pass's speed is its own images over its own time, not a whole pass's
    assert float(rows[-1]["images_per_sec"]) == pytest.approx(128 / float(rows[-1]["epoch_time"]), rel=0.01)
    assert json.loads((run / "config.json").read_text())["epochs"] == 1.5


def test_whole_float_epochs_are_the_integer_run(tmp_path, tiny_splits):
    cfg = _cfg(tmp_path, epochs=2.0).validate()
    assert cfg.epochs == 2 and isinstance(cfg.epochs, int)


def test_learns_the_tiny_task(tmp_path, tiny_splits):
    """A configuration that learns with room to spare, not on the last epoch by luck.

    Was 4 epochs at lr 0.05: test accuracy 98 / 100 / 55 / 75 for seeds 0-3, and seed 0 itself gave 75 at
    2 threads or with AVX2 kernels (summation order: another CPU). 8 epochs at lr 0.02: test >= 95% and val
    at 100% by epoch 6 of 8, for seeds 0-3 at 1 and 2 threads and with AVX2 kernels (12 of 12 runs)."""
    res = train(_cfg(tmp_path, epochs=8, lr=0.02), splits=tiny_splits)
    assert res["test_acc"] >= 80.0


def test_sweep_runs_never_read_the_test_split(tmp_path, tiny_splits):
    res = train(_cfg(tmp_path, eval_test=False), splits=tiny_splits)
    assert res["test_acc"] is None and res["confusion"] is None and res["val_acc"] is not None


def test_finished_run_is_not_retrained(tmp_path, tiny_splits):
    first = train(_cfg(tmp_path), splits=tiny_splits)
    mtime = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    again = train(_cfg(tmp_path, resume="auto"), splits=tiny_splits)
    assert again["test_acc"] == first["test_acc"]
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns == mtime


def test_existing_run_needs_resume(tmp_path, tiny_splits):
    train(_cfg(tmp_path, epochs=1), splits=tiny_splits)
    with pytest.raises(CifarbenchError, match="already holds a run"):
        train(_cfg(tmp_path, epochs=1), splits=tiny_splits)


@pytest.mark.parametrize("changes, message", [
    (dict(batch_size=1000), "larger than the training split"),
    (dict(resolution=4), "at least 8"),
    (dict(epochs=0), "at least 1"),
    (dict(epochs=0.5), "at least 1"),
    (dict(epochs=float("nan")), "--epochs nan"),
    (dict(epochs="3"), "must be a number"),
    (dict(opt="lion"), "--opt 'lion'"),
    (dict(lr=float("nan")), "--lr"),
    (dict(warmup_epochs=5), "--warmup-epochs"),
    (dict(compile="fastest"), "--compile 'fastest'"),
    (dict(prog_res=12), "--prog-res 12: must be smaller than the training resolution \\(12 px\\)"),
    (dict(prog_res=4), "--prog-res 4: must be 0"),
    (dict(prog_res=8, prog_res_end=0.0), "--prog-res-end 0.0"),
    (dict(flip="sometimes"), "--flip 'sometimes': choose random or alternate"),
])
def test_impossible_configs_are_refused_before_work(tmp_path, tiny_splits, changes, message):
    with pytest.raises(CifarbenchError, match=message):
        train(_cfg(tmp_path, **changes), splits=tiny_splits)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_amp_refused_without_bf16(tmp_path, tiny_splits, monkeypatch):
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_bf16", lambda: False)
    with pytest.raises(CifarbenchError, match="no native bf16"):
        train(_cfg(tmp_path, amp=True), splits=tiny_splits)


def test_output_that_is_a_file_is_refused(tmp_path, tiny_splits):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(CifarbenchError, match="not a folder"):
        train(_cfg(tmp_path), splits=tiny_splits)


def test_non_finite_loss_stops_with_status_diverged_and_keeps_last_good_checkpoint(tmp_path, tiny_splits, monkeypatch):
    calls = {"n": 0}

    class NanAfterEpochOne(torch.nn.CrossEntropyLoss):
        def forward(self, out, y):
            loss = super().forward(out, y)
            if self.label_smoothing == 0.0 and out.requires_grad:  # the training criterion only
                calls["n"] += 1
                if calls["n"] > 8:  # 8 steps per epoch: epoch 2 diverges
                    return loss * float("nan")
            return loss

    monkeypatch.setattr(train_mod.nn, "CrossEntropyLoss", NanAfterEpochOne)
    res = train(_cfg(tmp_path, epochs=3), splits=tiny_splits)
    assert res["status"] == "diverged" and res["epochs_done"] == 1
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "diverged"
    last = checkpoint.load(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, tiny_splits, monkeypatch):
    real_save = torch.save
    writes = {"n": 0}

    def failing_save(obj, f):
        writes["n"] += 1
        if writes["n"] > 2:  # epoch 1 writes best.pt and last.pt; the next write hits a full disk
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(CifarbenchError, match="No space left on device.*previous checkpoint is intact"):
        train(_cfg(tmp_path, epochs=2), splits=tiny_splits)
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CifarbenchError, match="last.pt: not a readable checkpoint"):
        checkpoint.load(bad)


def test_resume_with_other_settings_is_refused(tmp_path, tiny_splits):
    train(_cfg(tmp_path, epochs=1), splits=tiny_splits)
    (tmp_path / "run" / "results.json").unlink()
    with pytest.raises(CifarbenchError, match="lr=0.05"):
        train(_cfg(tmp_path, epochs=1, lr=0.1, resume="auto"), splits=tiny_splits)


def test_a_field_newer_than_the_checkpoint_counts_as_its_default_on_resume(tmp_path):
    saved = {k: v for k, v in _cfg(tmp_path).to_dict().items() if k not in ("crop_pad", "model_kwargs")}
    train_mod._check_resume_config(saved, _cfg(tmp_path), tmp_path / "last.pt")  # the defaults: same run
    with pytest.raises(CifarbenchError, match=r"crop_pad=4 \(now 2\)"):
        train_mod._check_resume_config(saved, _cfg(tmp_path, crop_pad=2), tmp_path / "last.pt")
    with pytest.raises(CifarbenchError, match="model_kwargs"):
        train_mod._check_resume_config(saved, _cfg(tmp_path, model_kwargs={"dropout": 0.0}), tmp_path / "last.pt")


def test_on_epoch_can_prune(tmp_path, tiny_splits):
    res = train(_cfg(tmp_path, epochs=3, eval_test=False), splits=tiny_splits, on_epoch=lambda epoch, row: True)
    assert res["status"] == "pruned" and res["epochs_done"] == 1


def test_evaluate_run_scores_a_train_subset_run_as_the_run_did(tmp_path, tiny_splits, monkeypatch):
    """`cifarbench eval` re-scores the checkpoint with the run's own preprocessing: the mean and std of the
    images it trained on. Losses are continuous: a different normalisation shows even where no prediction flips."""
    from cifarbench.data import ImageSet, Splits

    # brightness varies from image to image, so a 128-image subset's mean differs from the split's
    g = torch.Generator().manual_seed(0)
    offset = torch.randint(0, 200, (len(tiny_splits.train.labels), 1, 1, 1), generator=g)
    train_set = ImageSet((tiny_splits.train.images.int() + offset).clamp(0, 255).to(torch.uint8), tiny_splits.train.labels)
    splits = Splits("tiny", tiny_splits.classes, train_set, tiny_splits.val, tiny_splits.test)
    assert max(abs(a - b) for a, b in zip(splits.mean, splits.subset(train=128, seed=0).mean)) > 0.005
    res = train(_cfg(tmp_path, epochs=4, batch_size=16, train_subset=128), splits=splits)  # trained: loss ~0.96
    monkeypatch.setattr(train_mod, "load_splits", lambda cfg: splits)
    val, test = evaluate_run(tmp_path / "run", split="val"), evaluate_run(tmp_path / "run", split="test")
    assert (val["acc"], test["acc"]) == (res["val_acc"], res["test_acc"])
    assert val["loss"] == pytest.approx(res["val_loss"], abs=2e-5)
    assert test["loss"] == pytest.approx(res["test_loss"], abs=2e-5)


def test_evaluate_run_fills_in_the_test_figures(tmp_path, tiny_splits, monkeypatch):
    train(_cfg(tmp_path, eval_test=False), splits=tiny_splits)
    monkeypatch.setattr(train_mod, "load_splits", lambda cfg: tiny_splits)
    res = evaluate_run(tmp_path / "run", split="test")
    assert res["n"] == 64 and 0 <= res["acc"] <= 100
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_acc"] == res["acc"]


def test_without_a_validation_split_the_best_epoch_is_the_lowest_train_loss(tmp_path, tiny_splits):
    from cifarbench.data import ImageSet, Splits

    empty = ImageSet(tiny_splits.val.images[:0], tiny_splits.val.labels[:0])
    splits = Splits("tiny", tiny_splits.classes, tiny_splits.train, empty, tiny_splits.test)
    res = train(_cfg(tmp_path, epochs=2, lr=1e-4), splits=splits)  # train loss stays near ln 4 > 1
    losses = [float(r["train_loss"]) for r in _rows(tmp_path / "run")]
    assert res["best_epoch"] == 1 + losses.index(min(losses))  # was 0: no epoch ever beat the initial score
    assert res["best_val_acc"] is None and res["test_acc"] is not None


def test_compile_mode_reaches_torch_compile_and_a_failure_falls_back_to_eager(tmp_path, tiny_splits, monkeypatch):
    seen = []

    def fake_compile(model, mode=None):  # records the mode, then fails the way a missing C compiler does
        seen.append(mode)
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(torch, "compile", fake_compile)
    res = train(_cfg(tmp_path, epochs=1, compile="reduce-overhead"), splits=tiny_splits)
    assert seen == ["reduce-overhead"] and res["status"] == "finished"
    train(_cfg(tmp_path, epochs=1, compile=True, output=str(tmp_path / "run2")), splits=tiny_splits)
    assert seen[-1] is None  # plain --compile: torch's default mode


def test_tta_averages_the_logits_of_its_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(train_mod.tta_logits(model, x, "none"), model(x))
    flip = train_mod.tta_logits(model, x, "flip")
    assert torch.allclose(flip, (model(x) + model(x.flip(3))) / 2)
    p = train_mod.TTA_SHIFT
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
    a, b = padded[..., :8, :8], padded[..., 2 * p:, 2 * p:]
    expected = 0.5 * flip + 0.125 * (model(a) + model(a.flip(3)) + model(b) + model(b.flip(3)))
    assert torch.allclose(train_mod.tta_logits(model, x, "flip-translate"), expected, atol=1e-6)


def test_evaluate_reports_plain_and_tta_from_one_pass_sharing_the_plain_forward():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5))
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    images, labels = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8), torch.arange(40) % 5
    loader = DeviceLoader(images, labels, 20, False, "cpu", (0.5,) * 3, (0.25,) * 3)
    crit = torch.nn.CrossEntropyLoss()
    plain = train_mod.evaluate(net, loader, crit, 5, amp=False)
    calls.clear()
    both = train_mod.evaluate(net, loader, crit, 5, amp=False, tta="flip")
    assert calls == [20, 20, 20, 20]  # 2 batches x (plain + mirror): the plain forward is not run twice
    assert (both["acc"], both["loss"]) == (plain["acc"], plain["loss"]) and plain["acc_tta"] is None
    x = torch.cat([x for x, _ in loader])
    flip_acc = 100.0 * (((net(x) + net(x.flip(3))) / 2).argmax(1) == labels).float().mean().item()
    assert both["acc_tta"] == pytest.approx(flip_acc)


def test_ema_run_selects_and_saves_the_average_and_reports_tta_beside_plain(tmp_path, tiny_splits, monkeypatch):
    res = train(_cfg(tmp_path, model_ema=True, model_ema_decay=0.9, tta="flip", cutout=4, wd_norm_bias=False),
                splits=tiny_splits)
    run = tmp_path / "run"
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert checkpoint.eval_state_dict(ckpt) is ckpt["model_ema"]
    assert any(not torch.equal(ckpt["model"][k], ckpt["model_ema"][k]) for k in ckpt["model"])
    # the reported figures are the EMA weights' (an evaluation of best.pt's average reproduces them), and
    # the TTA figures sit beside the plain ones
    monkeypatch.setattr(train_mod, "load_splits", lambda cfg: tiny_splits)
    again = evaluate_run(run, split="val")
    assert again["acc"] == res["val_acc"] and again["acc_tta"] == res["val_acc_tta"]
    assert res["val_acc_tta"] is not None and res["test_acc_tta"] is not None and res["test_acc"] is not None
    assert res["preprocess"] == {"channels": 3, "image_size": 12, "resolution": 12,
                                 "mean": list(tiny_splits.mean), "std": list(tiny_splits.std)}
    assert "plain" in res["accuracy_convention"] and "EMA" in res["accuracy_convention"]


@pytest.mark.parametrize("best_is_last", [True, False])
def test_the_last_epochs_validation_pass_gives_val_tta_when_that_epoch_is_kept(tmp_path, tiny_splits, monkeypatch,
                                                                                best_is_last):
    calls, real = [], train_mod.evaluate

    def spy(model, loader, *a, tta="none", **kw):
        r = real(model, loader, *a, tta=tta, **kw)
        calls.append((len(loader.images), tta))
        if len(calls) == (1 if best_is_last else 2):  # that epoch scores lowest: best.pt keeps the other one
            r = {**r, "acc": -1.0}
        return r

    monkeypatch.setattr(train_mod, "evaluate", spy)
    res = train(_cfg(tmp_path, tta="flip"), splits=tiny_splits)
    n_val, n_test = len(tiny_splits.val), len(tiny_splits.test)
    # plain in epoch 1, plain + mirror in epoch 2 (the last); a second val pass only when another epoch is kept
    again = [(n_val, "flip")] if not best_is_last else []
    assert calls == [(n_val, "none"), (n_val, "flip"), *again, (n_test, "flip")]
    assert res["best_epoch"] == (2 if best_is_last else 1)
    monkeypatch.setattr(train_mod, "evaluate", real)
    monkeypatch.setattr(train_mod, "load_splits", lambda cfg: tiny_splits)
    assert evaluate_run(tmp_path / "run", split="val")["acc_tta"] == res["val_acc_tta"]  # best.pt's own figure


@pytest.mark.parametrize("amx", [True, False])
def test_amp_on_a_bf16_cpu_routes_small_map_convs_through_matmuls_and_records_it(tmp_path, tiny_splits, monkeypatch, amx):
    from cifarbench.engine import cpu_conv
    from cifarbench.engine.cpu_conv import MatmulConv

    monkeypatch.setattr("cifarbench.engine.env.cpu_has_bf16", lambda: True)
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_avx512_bf16", lambda: True)
    monkeypatch.setattr("cifarbench.engine.env.cpu_has_amx", lambda: amx)
    calls = []
    real = MatmulConv.apply
    def out_pixels(x, w, stride, pad, fold):
        return ((x.shape[2] + 2 * pad - w.shape[2]) // stride + 1) * ((x.shape[3] + 2 * pad - w.shape[3]) // stride + 1)

    monkeypatch.setattr(MatmulConv, "apply", lambda *a: calls.append(out_pixels(*a)) or real(*a))
    res = train(_cfg(tmp_path, amp=True, epochs=1), splits=tiny_splits)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["env"]["cpu_amx"] is amx
    limit = cpu_conv.MATMUL_MAX_PIXELS if amx else cpu_conv.AVX512_MAX_PIXELS
    assert saved["matmul_convs"] > 0 and saved["matmul_conv_max_pixels"][0] == limit
    # the routed calls' output maps stay within this CPU's threshold; with AMX the larger maps go too
    assert calls and max(calls) <= limit and (max(calls) > cpu_conv.AVX512_MAX_PIXELS) is amx
    assert res["status"] == "finished" and res["test_acc"] is not None


def test_no_matmul_convs_without_amp_except_on_avx2_only_cpus(tmp_path, tiny_splits, monkeypatch):
    from cifarbench.engine.cpu_conv import MatmulConv

    monkeypatch.setattr("cifarbench.engine.env.cpu_avx2_only", lambda: False)
    train(_cfg(tmp_path, epochs=1), splits=tiny_splits)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["matmul_convs"] == 0 and saved["matmul_conv_max_pixels"] is None
    # an AVX2 CPU without AVX-512 (no bf16): the fp32 run routes its 2x2 maps
    monkeypatch.setattr("cifarbench.engine.env.cpu_avx2_only", lambda: True)
    calls = []
    real = MatmulConv.apply
    monkeypatch.setattr(MatmulConv, "apply", lambda *a: calls.append(a[0].dtype) or real(*a))
    res = train(_cfg(tmp_path / "avx2", epochs=1), splits=tiny_splits)
    saved = json.loads((tmp_path / "avx2" / "run" / "results.json").read_text())
    assert saved["matmul_convs"] > 0 and saved["matmul_conv_max_pixels"] == [4, 4]
    assert calls and set(calls) == {torch.float32} and res["status"] == "finished"


def test_prog_res_trains_the_early_steps_small_and_counts_their_macs(tmp_path, tiny_splits):
    from cifarbench.models.profile import count_macs

    res = train(_cfg(tmp_path, prog_res=8), splits=tiny_splits)  # 12 px data, 2 epochs of 8 steps
    assert res["status"] == "finished" and res["resolution"] == 12  # evaluated at full size
    model = train_mod.build_model(_cfg(tmp_path), 4, 3)
    m8, m12 = count_macs(model, (1, 3, 8, 8)), count_macs(model, (1, 3, 12, 12))
    # 8 + 4 x t / 0.75 stays under 12 until t = 0.75: 12 of the 16 steps at 8 px, the last 4 at 12
    assert res["total_train_macs"] == 3 * 32 * (12 * m8 + 4 * m12) < 3 * 32 * 16 * m12
    assert json.loads((tmp_path / "run" / "config.json").read_text())["prog_res"] == 8


class _Batches:
    """A loader stand-in: fixed batches, as DeviceLoader.iterate yields them."""
    device = torch.device("cpu")

    def __init__(self, batches):
        self.batches = batches

    def iterate(self, start_step=0, stop_step=None):
        yield from self.batches[start_step:stop_step]


def test_a_mixed_batch_is_scored_against_both_labels_by_their_weights():
    from cifarbench.engine.mix import Mix

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 1])
    mix = Mix(mixup=0.5, seed=0)
    mix.set_epoch(0, 1)
    lam = mix.draws[0][0]
    seen = []

    def criterion(out, target):
        seen.append(target.clone())
        return torch.nn.functional.cross_entropy(out, target)

    mixed = lam * x + (1 - lam) * x.flip(0)
    expected_pred = model(mixed).argmax(1)
    expected_loss = (lam * criterion(model(mixed), y) + (1 - lam) * criterion(model(mixed), y.flip(0))).item()
    seen.clear()
    r = train_mod.train_one_epoch(model, _Batches([(x.clone(), y)]), torch.optim.SGD(model.parameters(), lr=0.0),
                                  None, criterion, amp=False, mix=mix)
    assert [t.tolist() for t in seen] == [y.tolist(), y.flip(0).tolist()]
    loss_sum, correct, n = r["sums"].tolist()
    assert loss_sum / n == pytest.approx(expected_loss)
    assert correct == pytest.approx(lam * (expected_pred == y).sum().item()
                                    + (1 - lam) * (expected_pred == y.flip(0)).sum().item())


def test_lookahead_steps_after_every_optimizer_step_and_syncs_at_each_epochs_end(tmp_path, tiny_splits, monkeypatch):
    calls = {"step": 0, "sync": 0}
    real_step, real_sync = train_mod.Lookahead.step, train_mod.Lookahead.sync

    def step(self):
        calls["step"] += 1
        real_step(self)

    def sync(self):
        calls["sync"] += 1
        real_sync(self)

    monkeypatch.setattr(train_mod.Lookahead, "step", step)
    monkeypatch.setattr(train_mod.Lookahead, "sync", sync)
    train(_cfg(tmp_path, lookahead=True, lookahead_k=1000), splits=tiny_splits)  # k beyond the run: syncs only at ends
    steps = len(tiny_splits.train) // 32
    assert calls == {"step": 2 * steps, "sync": 2}
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["lookahead"]["steps"] == 2 * steps
    params = [v for k, v in ckpt["model"].items() if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(p, s) for p, s in zip(params, ckpt["lookahead"]["slow"]))  # saved right after a sync


def test_whiten_init_starts_the_first_conv_from_the_normalised_training_images_filters(tmp_path, tiny_splits,
                                                                                        monkeypatch):
    from cifarbench.models.whiten import first_conv, patch_whitening

    seen = {}
    real = train_mod._whiten_init

    def whiten(model, *args):
        real(model, *args)
        seen["start"] = first_conv(model).weight.detach().clone()  # what the run starts from

    monkeypatch.setattr(train_mod, "_whiten_init", whiten)
    monkeypatch.setattr(train_mod, "WHITEN_IMAGES", 100)
    train(_cfg(tmp_path, whiten_init=True, epochs=1), splits=tiny_splits)
    x = tiny_splits.train.images[:100].float() / 255  # the first 100 training images, normalised as the loader does
    mean = torch.tensor(tiny_splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(tiny_splits.std).view(1, 3, 1, 1)
    f = patch_whitening((x - mean) / std, (3, 3))
    w = seen["start"]
    assert torch.allclose(w[:12], f[:12], rtol=1e-4, atol=1e-4) and torch.allclose(w[12:24], -f[:12], rtol=1e-4, atol=1e-4)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["whiten_init"] is True
    # off by default: the same seed starts from the family's random init
    seen.clear()
    train(_cfg(tmp_path, output=str(tmp_path / "plain"), epochs=1), splits=tiny_splits)
    assert "start" not in seen


def test_a_channels_last_run_trains_bit_for_bit_as_with_torchs_fused_sgd(tmp_path, tiny_splits, monkeypatch):
    from cifarbench.engine import optim

    def weights(out):
        return torch.load(out / "last.pt", weights_only=True)["model"]

    cfg = dict(model="resnet18", stem="cifar-s2", channels_last=True, epochs=2)
    train(_cfg(tmp_path, output=str(tmp_path / "flat"), **cfg), splits=tiny_splits)
    monkeypatch.setattr(optim, "FlatFusedSGD", torch.optim.SGD)  # what the engine used before
    train(_cfg(tmp_path, output=str(tmp_path / "torch"), **cfg), splits=tiny_splits)
    a, b = weights(tmp_path / "flat"), weights(tmp_path / "torch")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.dim() == 4 and not v.is_contiguous() for v in a.values())  # channels_last weights were trained
