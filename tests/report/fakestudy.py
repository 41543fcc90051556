"""A fake study folder written file by file, in the layout the study writes (see the study contract):
3 models x (2 sweep configs + 2 final seeds), 10 classes. Built so each flag has exactly one cause:

- mobilenet_v2_x0_5 / sweep adam-lr1e-3 overfits (val loss rises 3 epochs running while train loss falls);
- shufflenet_v2_x0_5 / sweep sgd-lr1e-1 diverged (non-finite loss at epoch 3);
- resnet18 / sweep adam-lr1e-3 was pruned after 3 epochs;
- MobileNetV2 (80.5, 81.5) and ShuffleNetV2 (81.2, 81.8) differ by less than their seed spread,
  while ResNet18 (90.1, 90.5) is clearly ahead of both.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from cifarbench.config import TrainConfig, write_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SWEEP_EPOCHS, FINAL_EPOCHS = 6, 8
PER_CLASS_TEST = 100

MODELS = {
    # name: (label, paper, params, macs, winner, {config: (opt, lr, kind)}, final test accs, seconds per epoch)
    "resnet18": ("ResNet18", 71.27, 11_173_962, 556_651_520, "sgd-lr1e-1",
                 {"sgd-lr1e-1": ("momentum", 0.1, "ok"), "adam-lr1e-3": ("adam", 1e-3, "pruned")}, [90.1, 90.5], 30.0),
    "mobilenet_v2_x0_5": ("MobileNetV2 x0.5", 66.91, 700_138, 28_000_000, "sgd-lr1e-1",
                          {"sgd-lr1e-1": ("momentum", 0.1, "ok"), "adam-lr1e-3": ("adam", 1e-3, "overfit")},
                          [80.5, 81.5], 12.0),
    "shufflenet_v2_x0_5": ("ShuffleNetV2 x0.5", 68.21, 352_042, 11_000_000, "adam-lr1e-3",
                           {"sgd-lr1e-1": ("momentum", 0.1, "diverged"), "adam-lr1e-3": ("adam", 1e-3, "ok")},
                           [81.2, 81.8], 9.0),
}

STUDY_TOML = """\
name = "fake"
dataset = "cifar10"
description = "A fake study written by the report tests."
notes = ["CIFAR stems: 32 px inputs keep the quick study on a CPU."]
seeds = [0, 1]

[defaults]
stem = "cifar"
batch_size = 256

[sweep]
epochs = 6

[final]
epochs = 8
"""


def _curves(epochs: int, final_val_acc: float, kind: str) -> list[dict]:
    """Smooth, deterministic curves; 'overfit' makes val loss rise from epoch 3 on while train loss falls."""
    rows = []
    for e in range(1, epochs + 1):
        train_loss = 0.3 + 1.9 * math.exp(-0.45 * e)
        val_loss = 0.5 + 1.7 * math.exp(-0.4 * e)
        if kind == "overfit" and e > 3:
            val_loss = 0.5 + 1.7 * math.exp(-1.2) + 0.12 * (e - 3)
        if kind == "diverged" and e >= 3:
            train_loss = val_loss = math.nan
        val_acc = final_val_acc - 25 * math.exp(-0.5 * e) + 25 * math.exp(-0.5 * epochs)
        rows.append({"epoch": e, "train_loss": train_loss, "train_acc": min(99.0, val_acc + 2 * e),
                     "val_loss": val_loss, "val_acc": math.nan if kind == "diverged" and e >= 3 else val_acc,
                     "lr": 0.1, "epoch_time": 10.0, "images_per_sec": 4500.0})
    return rows


def _confusion(test_acc: float, shift: int) -> list[list[int]]:
    """10x10 counts, 100 images per class, diagonal near test_acc with per-class variation."""
    m = []
    for i in range(len(CLASSES)):
        correct = max(0, min(PER_CLASS_TEST, round(test_acc + ((i * 7 + shift) % 11 - 5))))
        row = [0] * len(CLASSES)
        row[i] = correct
        wrong = PER_CLASS_TEST - correct
        for k in range(wrong):
            row[(i + 1 + k % 9) % len(CLASSES)] += 1
        m.append(row)
    return m


def _write_run(run_dir: Path, model: str, cfg: dict, rows: list[dict], status: str, test: float | None,
               params: int, macs: int, seconds: float, seed: int = 0) -> dict:
    run_dir.mkdir(parents=True)
    config = TrainConfig(model=model, dataset="cifar10", stem="cifar", epochs=cfg["epochs"], opt=cfg["opt"],
                         lr=cfg["lr"], seed=seed, sched="plateau", output=str(run_dir),
                         eval_test=test is not None).to_dict()
    write_json(run_dir / "config.json", config)
    header = "epoch,train_loss,train_acc,val_loss,val_acc,lr,epoch_time,images_per_sec"
    lines = [header] + [",".join("" if isinstance(r[k], float) and math.isnan(r[k]) else f"{r[k]:.6g}"
                                 for k in header.split(",")) for r in rows]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    vals = [r["val_acc"] for r in rows if not math.isnan(r["val_acc"])]
    best = max(range(len(vals)), key=vals.__getitem__)
    res = {"status": status, "model": model, "dataset": "cifar10", "stem": "cifar", "resolution": 32, "seed": seed,
           "epochs_done": len(rows), "best_epoch": best + 1, "best_val_acc": vals[best], "val_acc": vals[best],
           "val_loss": rows[best]["val_loss"], "test_acc": None, "test_loss": None, "per_class_acc": None,
           "confusion": None, "classes": CLASSES, "params": params, "macs_per_image": macs,
           "total_train_macs": macs * 3 * 45000 * len(rows), "train_time_s": seconds * len(rows),
           "wall_time_s": seconds * len(rows) + 5, "images_per_sec": 45000 / seconds,
           "env": {"python": "3.11.2", "torch": "2.14.1", "torchvision": "0.29.1", "device": "cpu",
                   "device_name": "fake CPU", "threads": 2, "hostname": "testhost", "date": "2025-01-01T00:00:00"}}
    if test is not None:
        conf = _confusion(test, seed)
        res["confusion"] = conf
        res["per_class_acc"] = [100.0 * row[i] / sum(row) for i, row in enumerate(conf)]
        res["test_acc"] = 100.0 * sum(conf[i][i] for i in range(len(conf))) / sum(map(sum, conf))
        res["test_loss"] = 0.5
    write_json(run_dir / "results.json", res)
    return res


def make_fake_study(root: Path, finals: bool = True, data_figures: bool = True) -> Path:
    """Write a complete fake study under root/fake and return its folder. finals=False: the sweep only."""
    study = root / "fake"
    (study / "figures").mkdir(parents=True)
    (study / "study.toml").write_text(STUDY_TOML)
    config = tomllib.loads(STUDY_TOML)
    config["models"] = [{"name": n, "label": v[0], "paper_test_acc": v[1]} for n, v in MODELS.items()]
    models = {}
    for name, (label, paper, params, macs, winner, grid, tests, secs) in MODELS.items():
        sweep = []
        for cname, (opt, lr, kind) in grid.items():
            rows = _curves(SWEEP_EPOCHS if kind != "pruned" else 3, 60.0 if kind != "ok" else 70.0, kind)
            status = "diverged" if kind == "diverged" else "finished"
            rel = f"sweep/{name}/{cname}"
            res = _write_run(study / rel, name, {"epochs": SWEEP_EPOCHS, "opt": opt, "lr": lr}, rows, status,
                             None, params, macs, secs)
            state = {"pruned": "pruned", "diverged": "failed"}.get(kind, "complete")
            sweep.append({"name": cname, "params": {"opt": opt, "lr": lr}, "run": rel, "state": state,
                          "val_acc": res["best_val_acc"]})
        entry = {"label": label, "paper_test_acc": paper, "sweep": sweep, "winner": winner, "finals": []}
        if finals:
            opt, lr, _ = grid[winner]
            for seed, test in enumerate(tests):
                rel = f"final/{name}/seed{seed}"
                res = _write_run(study / rel, name, {"epochs": FINAL_EPOCHS, "opt": opt, "lr": lr},
                                 _curves(FINAL_EPOCHS, test - 1.0, "ok"), "finished", test, params, macs, secs, seed)
                entry["finals"].append({"seed": seed, "run": rel, "state": "complete", "val_acc": res["val_acc"],
                                        "test_acc": res["test_acc"]})
        models[name] = entry
    if data_figures:
        from PIL import Image

        Image.new("RGB", (120, 60), (90, 140, 200)).save(study / "figures" / "data_distribution.png")
        Image.new("RGB", (100, 100), (200, 120, 60)).save(study / "figures" / "data_samples.png")
    rows = [{"class": c, "train": 4500, "val": 500, "test": 1000} for c in CLASSES]
    rows.append({"class": "total", "train": 45000, "val": 5000, "test": 10000})
    write_json(study / "study.json", {
        "name": "fake", "created": "2025-01-01T00:00:00", "updated": "2025-01-01T01:00:00", "config": config,
        "dataset": "cifar10", "data": {"rows": rows},
        "env": {"python": "3.11.2", "torch": "2.14.1", "torchvision": "0.29.1", "device": "cpu",
                "device_name": "fake CPU", "threads": 2, "hostname": "testhost", "date": "2025-01-01T00:00:00"},
        "stages": {"sweep": "done", "final": "done" if finals else "pending",
                   "test": "done" if finals else "pending", "report": "pending"},
        "models": models})
    return study
