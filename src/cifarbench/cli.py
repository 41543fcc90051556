"""The command line: argparse subcommands, each a few lines over the library.

The CLI never computes. Every ``cmd_*`` parses, calls one library function, and prints.
A ``CifarbenchError`` becomes ``error: <message>`` on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from cifarbench.errors import CifarbenchError


def _print_rows(rows: list[dict], fmt: str, columns: list[str] | None = None) -> None:
    """Print a list of flat dicts as an aligned table, CSV or JSON on stdout."""
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    columns = columns or (list(rows[0]) if rows else [])
    if fmt == "csv":
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return

    def cell(v):
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return "" if v is None else str(v)

    table = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.rjust(w) if v[:1].isdigit() or v[:1] == "-" else v.ljust(w) for v, w in zip(t, widths)))


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $CIFARBENCH_DATA, else a per-user cache dir)")


# ---------------------------------------------------------------- data / models
def cmd_data(args) -> int:
    from cifarbench.data.inspect import inspect_dataset

    report = inspect_dataset(args.dataset, data_dir=args.data_dir, output=args.output,
                             val_size=args.val_size, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        total = report["rows"][-1]
        print(f"{report['dataset']}: {total['train']:,} train / {total['val']:,} val / {total['test']:,} test images, "
              f"{report['channels']}x{report['image_size']}x{report['image_size']}, {len(report['classes'])} classes; "
              f"train mean {tuple(report['mean'])} std {tuple(report['std'])}")
        _print_rows(report["rows"], "table")
        for path in report.get("files", []):
            print(f"wrote {path}")
    return 0


def cmd_models(args) -> int:
    from cifarbench.models import list_models

    if args.stems:
        from cifarbench.models.stems import stem_docs

        print(stem_docs(), end="")
        return 0
    names = list_models(args.pattern)
    if not names:
        raise CifarbenchError(f"no model matches {args.pattern!r}; try `cifarbench models` for all names")
    for name in names:
        print(name)
    return 0


def cmd_summary(args) -> int:
    from cifarbench.models.profile import summarize, format_summary

    s = summarize(args.model, input_size=args.input, stem=args.stem, num_classes=args.num_classes,
                  in_chans=args.in_chans, batch_size=args.batch_size)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0


def cmd_select(args) -> int:
    from cifarbench.models.select import rank_models

    rows = rank_models(max_gflops=args.max_gflops, min_acc=args.min_acc, family=args.family,
                       measure=args.measure, top=args.top)
    if not rows:
        raise CifarbenchError("no torchvision model with ImageNet-1K weights passes these filters")
    _print_rows(rows, args.format)
    return 0


# ---------------------------------------------------------------- training
def _kwarg(item: str) -> tuple[str, object]:
    """One KEY=VALUE of timm's --model-kwargs, read the way --override reads its values (a TOML value, else text)."""
    from cifarbench.errors import CifarbenchError
    from cifarbench.study.spec import parse_override_args

    try:
        ((key, value),) = parse_override_args([item], flag="--model-kwargs").items()
    except CifarbenchError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--model-kwargs {item!r}: KEY must be a keyword argument name")
    return key, value


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The train flags, named after timm's and torchvision's reference scripts. Defaults come from TrainConfig."""
    S = argparse.SUPPRESS  # unset flags stay out of the namespace, so -c FILE.toml can supply them
    p.add_argument("-c", "--config", default=None, help="TOML file with defaults; flags override it")
    p.add_argument("--model", "-m", default=S, help="model name (see `cifarbench models`)")
    p.add_argument("--dataset", "-d", default=S, help="cifar10, cifar100, fashion-mnist, mnist, shapes or folder:PATH")
    p.add_argument("--data-dir", default=S)
    p.add_argument("--stem", choices=["imagenet", "cifar", "cifar-s2"], default=S)
    p.add_argument("--model-kwargs", nargs="*", type=_kwarg, default=S, metavar="KEY=VALUE",
                   help="options for the torchvision builder, e.g. dropout=0.0 or zero_init_residual=true")
    p.add_argument("--resolution", type=int, default=S, help="resize inputs on the device (224 = the study)")
    p.add_argument("-b", "--batch-size", type=int, default=S)
    p.add_argument("--eval-batch-size", type=int, default=S)
    p.add_argument("--epochs", type=float, default=S,
                   help="passes over the training images; a fraction trains part of a last pass (2.4)")
    p.add_argument("--val-size", type=int, default=S)
    p.add_argument("--train-subset", type=int, default=S, help="train on a stratified subset of N images")
    p.add_argument("--augment", choices=["crop-flip", "flip", "none"], default=S)
    p.add_argument("--crop-pad", type=int, default=S, metavar="PX",
                   help="crop-flip's zero padding per side before the random crop (default 4)")
    p.add_argument("--flip", choices=["random", "alternate"], default=S,
                   help="mirror each image at random every epoch (default), or at random in the first epoch and "
                        "then in every other epoch (alternate: each pair of epochs sees both views)")
    p.add_argument("--cutout", type=int, default=S, metavar="PX",
                   help="one PX x PX square per training image set to the mean colour, on the device")
    p.add_argument("--mixup", type=float, default=S, metavar="ALPHA",
                   help="mixup with Beta(ALPHA, ALPHA) weights, each batch with itself reversed (default 0: off)")
    p.add_argument("--cutmix", type=float, default=S, metavar="ALPHA", help="CutMix likewise (default 0: off)")
    p.add_argument("--mixup-switch-prob", type=float, default=S, metavar="P",
                   help="with both on, the share of batches that use CutMix (default 0.5)")
    p.add_argument("--prog-res", type=int, default=S, metavar="PX",
                   help="progressive resizing: train from PX px, growing to the full resolution (default 0: off)")
    p.add_argument("--prog-res-end", type=float, default=S, metavar="FRAC",
                   help="the fraction of the training steps at which --prog-res reaches full size (default 0.75)")
    p.add_argument("--opt", default=S, help="sgd, momentum, nesterov, adam or adamw")
    p.add_argument("--lr", type=float, default=S)
    p.add_argument("--momentum", type=float, default=S)
    p.add_argument("--weight-decay", "--wd", type=float, default=S)
    p.add_argument("--label-smoothing", type=float, default=S)
    p.add_argument("--wd-norm-bias", action=argparse.BooleanOptionalAction, default=S,
                   help="weight decay on norm weights and biases too (default); --no-wd-norm-bias exempts them")
    p.add_argument("--whiten-init", action="store_true", default=S,
                   help="start the first conv as +/- patch-whitening filters of the training images (an init only)")
    p.add_argument("--lookahead", action="store_true", default=S,
                   help="Lookahead around the optimizer (timm: --opt lookahead_*); synced at every epoch's end")
    p.add_argument("--lookahead-alpha", type=float, default=S, help="Lookahead's step toward the fast weights (0.5)")
    p.add_argument("--lookahead-k", type=int, default=S, help="optimizer steps between Lookahead's updates (6)")
    p.add_argument("--model-ema", action="store_true", default=S,
                   help="keep an exponential moving average of the weights; evaluate and select with it")
    p.add_argument("--model-ema-decay", type=float, default=S, help="EMA decay (default 0.999, warmed up)")
    p.add_argument("--tta", choices=["none", "flip", "flip-translate"], default=S,
                   help="also report test-time-augmented val and test accuracy, beside the plain figures")
    p.add_argument("--sched", default=S, help="plateau, cosine, onecycle, step or none")
    p.add_argument("--patience", type=int, default=S)
    p.add_argument("--factor", type=float, default=S)
    p.add_argument("--warmup-epochs", type=float, default=S)
    p.add_argument("--seed", type=int, default=S)
    p.add_argument("--device", default=S, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", action="store_true", default=S, help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true", default=S)
    p.add_argument("--compile", nargs="?", const=True, default=S, metavar="MODE",
                   help="torch.compile, falling back to eager on failure; MODE: default, reduce-overhead (CUDA "
                        "graphs), max-autotune or max-autotune-no-cudagraphs")
    p.add_argument("--fast", action="store_true", default=S, help="the measured-fastest settings for this device")
    p.add_argument("--threads", type=int, default=S)
    p.add_argument("--sync-bn", action="store_true", default=S,
                   help="DDP: torch.nn.SyncBatchNorm (CUDA only); without it BN buffers are averaged across ranks")
    p.add_argument("--log", choices=["none", "tensorboard"], default=S,
                   help="tensorboard: event files in the run folder (needs cifarbench[tensorboard])")
    p.add_argument("--output", "-o", default=S, help="run folder")
    p.add_argument("--resume", nargs="?", const="auto", default=S, help="'auto' (the run in --output) or a checkpoint path")


def train_config_from_args(args):
    from cifarbench.config import TrainConfig, load_toml

    raw = load_toml(args.config) if getattr(args, "config", None) else {}
    file_values = {k.replace("-", "_"): v for k, v in raw.items()}
    values = dict(file_values)
    skip = {"config", "command", "func", "quiet", "fast"}
    values.update({k: v for k, v in vars(args).items() if k not in skip})
    if isinstance(values.get("model_kwargs"), list):  # --model-kwargs KEY=VALUE ... on top of the file's table
        values["model_kwargs"] = {**file_values.get("model_kwargs", {}), **dict(values["model_kwargs"])}
    cfg = TrainConfig.from_dict(values, source=args.config or "flags")
    if getattr(args, "fast", False):
        from cifarbench.engine.fast import apply_fast

        cfg = apply_fast(cfg)
    return cfg.validate()


def cmd_train(args) -> int:
    from cifarbench.engine import train

    res = train(train_config_from_args(args))
    return 0 if res.get("status") == "finished" else 1


def cmd_eval(args) -> int:
    from cifarbench.engine import evaluate_run

    res = evaluate_run(args.run, split=args.split, data_dir=args.data_dir, device=args.device)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{args.run}: {args.split} accuracy {res['acc']:.2f}%  loss {res['loss']:.4f}  ({res['n']} images)")
    return 0


# ---------------------------------------------------------------- using a trained run
def cmd_predict(args) -> int:
    from cifarbench.predict import predict

    res = predict(args.run, args.inputs, top_k=args.top_k, device=args.device, batch_size=args.batch_size,
                  dataset=args.dataset, split=args.split, data_dir=args.data_dir)
    for line in res["errors"]:  # unreadable inputs: named, skipped, and the exit code says so
        print(f"error: {line}", file=sys.stderr)
    if res["rows"]:
        _print_rows(res["rows"], args.format)
    return 1 if res["errors"] else 0


def cmd_export(args) -> int:
    from cifarbench.export import export_run

    res = export_run(args.run, args.format, output=args.output, opset=args.opset, dynamic_batch=args.dynamic_batch,
                     data_dir=args.data_dir)
    p = res["parity"]
    print(f"wrote {res['path']} ({res['exporter']}) and {res['sidecar']}")
    print(f"parity on {p['images']} test images: top-1 same for {p['top1_same']}/{p['images']}, "
          f"max abs logit difference {p['max_abs_logit_diff']:.2e} (limit {p['limit']:g}): passed")
    return 0


# ---------------------------------------------------------------- study / report / bench / scale-out
def cmd_study(args) -> int:
    from cifarbench.study import run_study
    from cifarbench.study.spec import parse_override_args

    override = {"epochs_scale": args.epochs_scale, "max_epochs": args.max_epochs, "dataset": args.dataset,
                **parse_override_args(args.override)}
    res = run_study(args.config or args.preset, output=args.output, data_dir=args.data_dir,
                    jobs=args.jobs, device=args.device, dry_run=args.dry_run, storage=args.storage, override=override,
                    budget=args.budget)
    if args.dry_run:
        _print_study_plan(res)
    else:
        for path in res.get("files", []):
            print(f"wrote {path}")
    return 0 if res.get("ok", True) else 1


def _print_study_plan(res: dict) -> None:
    """The dry run: every sweep and final run with its hyperparameters, then the measured time estimate."""
    from cifarbench.study.plan import format_duration

    print(f"study {res['name']}: {res['description']}")
    for d in res.get("deviations", []):
        print(f"deviation from the study file: {d}")
    for stage in ("sweep", "final"):
        rows = res["plan"][stage]
        cols = [c for c in rows[0] if any(r.get(c) is not None for r in rows)] if rows else []
        rows = [{k: (f"{v:g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]  # 1e-06, not 0.000
        print(f"\n{stage} runs ({len(rows)}):")
        _print_rows(rows, "table", cols)
    est = res.get("estimate")
    if est:
        print(f"\nestimated time on {est['device']} ({est['device_name']}): {format_duration(est['seconds'])}")
        for m in est["models"]:
            print(f"  {m['model']}: {m['hours']} h ({m['train_images_per_sec']} train img/s at {m['resolution']} px, "
                  f"batch {m['measured_batch']})")
        print(f"  ({est['method']})")
        if res.get("target") == "gpu" and not est["device"].startswith("cuda"):
            print(f"study {res['name']} is meant for a GPU; on this device it is not practical")
    elif res.get("target") == "gpu":
        print(f"\nstudy {res['name']} is meant for a GPU")
    for i, line in enumerate((res.get("budget") or {}).get("lines", [])):  # study/budget.py's plan
        print(f"\n{line}" if i == 0 else line)


def cmd_report(args) -> int:
    from cifarbench.report import render_report

    for path in render_report(args.study_dir, overfit_patience=args.overfit_patience):
        print(f"wrote {path}")
    return 0


def cmd_bench(args) -> int:
    from cifarbench.bench import run_bench

    rows = run_bench(models=args.models, stem=args.stem, resolution=args.resolution, batch_size=args.batch_size,
                     device=args.device, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                     export=args.export, threads=args.threads, repeats=args.repeats)
    # CSV and JSON keep every column; the table drops those empty in every row (compile_s without --compile, ...)
    columns = None if args.format != "table" else [c for c in rows[0] if any(r.get(c) is not None for r in rows)]
    _print_rows(rows, args.format, columns)
    return 0 if all(not r.get("error") for r in rows) else 1


def cmd_sweep(args) -> int:
    from cifarbench.study.sweep import run_sweep

    results = run_sweep(args.config, storage=args.storage, workers=args.workers, output=args.output,
                        data_dir=args.data_dir, device=args.device)
    rows = [{"model": m, "config": e["name"], "state": e["state"], "val_acc": e.get("val_acc"), "run": e["run"]}
            for m, entries in results.items() for e in entries]
    _print_rows(rows, "table")
    return 0 if all(r["state"] in ("complete", "pruned") for r in rows) else 1


def cmd_worker(args) -> int:
    from cifarbench import log
    from cifarbench.study.sweep import run_worker

    n = run_worker(storage=args.storage, study_name=args.study, output=args.output, data_dir=args.data_dir,
                   device=args.device, max_trials=args.max_trials, threads=args.threads)
    log.info(f"worker: {n} trial(s) run; none left")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cifarbench", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="image counts per class and split, class-distribution chart, sample grid")
    p.add_argument("dataset")
    _add_data_args(p)
    p.add_argument("--output", "-o", default="data-report", help="folder for the PNG files")
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list model names")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--stems", action="store_true", help="print what each --stem changes, per family (markdown)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="params, MACs, activation memory and a per-layer table")
    p.add_argument("model")
    p.add_argument("--input", type=int, default=32, help="input size in pixels")
    p.add_argument("--stem", choices=["imagenet", "cifar", "cifar-s2"], default="imagenet",
                   help="see `cifarbench models --stems`")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("-b", "--batch-size", type=int, default=1, help="activation memory is per batch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("select", help="rank torchvision's ImageNet models by acc@1 / GFLOPS (the study's step 1)")
    p.add_argument("--max-gflops", type=float, default=None)
    p.add_argument("--min-acc", type=float, default=None)
    p.add_argument("--family", default=None, help="only names starting with this (e.g. resnet) or matching a pattern")
    p.add_argument("--measure", type=int, default=None, metavar="PX", help="also measure MACs and params at this input size")
    p.add_argument("--top", type=int, default=None)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("train", help="train one model from scratch; writes a run folder")
    add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="re-evaluate a saved run on a split")
    p.add_argument("run", help="run folder")
    p.add_argument("--split", choices=["test", "val"], default="test")
    _add_data_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify image files, folders or a dataset split with a trained run")
    p.add_argument("run", help="run folder")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files (anything Pillow reads) or folders (recursive)")
    p.add_argument("--dataset", default=None, help="also predict a split of this dataset (e.g. the run's own)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    _add_data_args(p)
    p.add_argument("--top-k", type=int, default=3, help="classes per image, most probable first (default 3)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--device", default="auto")
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="a run's model as ONNX or TorchScript, with a JSON sidecar and a parity check")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--output", "-o", default=None,
                   help="model file (default RUN/model.onnx or RUN/model.torchscript.pt); the sidecar is FILE.json")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="ONNX: any batch size (default: fixed at 1); a TorchScript trace takes any batch anyway")
    _add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("study", help="sweep, select on validation, final seeds, test, report")
    p.add_argument("config", nargs="?", default=None, help="study TOML file")
    p.add_argument("--preset", choices=["paper", "modern", "quick"], default="quick")
    p.add_argument("--output", "-o", default=None, help="study folder (default: studies/<name>)")
    _add_data_args(p)
    p.add_argument("--jobs", type=int, default=None, help="runs side by side as processes (CPU threads split; one per GPU, "
                   "or all on the one GPU; refused when they cannot fit in its memory); default: the study's `jobs`, else 1")
    p.add_argument("--device", default=None)
    p.add_argument("--storage", default=None, help="Optuna storage URL for the sweep (default: SQLite in the study folder)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and stop")
    p.add_argument("--budget", default=None, metavar="TIME",
                   help="wall time for the whole study (30m, 1h30m, 90s, 1800): the finals' epochs are fitted to it "
                        "on this machine (over the study file's `budget`)")
    # deviations from the study file: written to its [override] table, shown in the report and the dry run
    p.add_argument("--epochs-scale", type=float, default=None, metavar="F",
                   help="scale every stage's epochs by F (rounded, at least 1): a deviation from the study file")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N", help="cap every stage's epochs at N: a deviation")
    p.add_argument("--dataset", default=None, help="train on this dataset instead of the study's: a deviation")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a TrainConfig field in every run, over the study file (e.g. resolution=64): a deviation")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="(re)build report.md and report.html from a study folder")
    p.add_argument("study_dir")
    p.add_argument("--overfit-patience", type=int, default=3, metavar="P",
                   help="flag a run whose val loss rose P epochs running while train loss fell (default 3)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="training and inference speed, latency, memory and MACs per model")
    p.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2_x0_5", "shufflenet_v2_x0_5"])
    p.add_argument("--stem", choices=["imagenet", "cifar", "cifar-s2"], default="cifar")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="torch.compile the model; MODE as for train (reduce-overhead: CUDA graphs)")
    p.add_argument("--export", choices=["onnx"], default=None,
                   help="also export to ONNX (opset 17) and time batch-1 latency in ONNX Runtime on the CPU")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5, help="timed windows after warm-up; figures are their median")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("sweep", help="run a study's sweep on an Optuna storage with N local workers")
    p.add_argument("config", help="study TOML file")
    p.add_argument("--storage", default=None, help="sqlite:///..., postgresql://..., mysql://... or journal:PATH")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--output", "-o", default=None)
    _add_data_args(p)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("worker", help="pull trials of a shared sweep until none is left")
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True, help="the sweep's study name")
    p.add_argument("--output", "-o", default=None)
    _add_data_args(p)
    p.add_argument("--device", default=None)
    p.add_argument("--max-trials", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cifarbench import log

    log.set_quiet(args.quiet)  # set either way: main() may be called more than once in a process
    try:
        return args.func(args)
    except CifarbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cifarbench ... | head`: the reader left; not an error worth a traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
