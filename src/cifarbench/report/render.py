"""Assemble the study report from files and write report.md, report.html and figures/*.png.

``render_report(study_dir)`` is the whole API. It reads only files (see load.py), so it can be rerun
at any time: after each stage of a study, on a study still running, or on another machine.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from cifarbench.errors import CifarbenchError
from cifarbench.report import plots
from cifarbench.report.budget import budget_blocks, subset_note
from cifarbench.report.doc import Bullets, Document, Figure, Heading, Para, Pre, Table, to_html, to_markdown
from cifarbench.report.flags import (ALPHA, OVERFIT_PATIENCE, Comparison, FinalStats, check_sweeps, compare_models,
                                     final_stats, find_overfitting, find_problems, mean_std)
from cifarbench.report.load import ModelEntry, Study, load_study
from cifarbench.report.protocol import cost_blocks, deviation_blocks

DASH = "—"
CONVENTIONS = [
    "**Accuracy** is top-1 in %, reported as mean ± sample standard deviation (n−1) over the N seeds of the "
    "final stage, with N shown as (n=N); a single seed has no spread.",
    "**Validation** accuracy comes from a held-out part of the training set and is the only thing used for "
    "selection; **test** accuracy is measured once, on the finals, after selection.",
    "**MACs** are multiply-accumulates per image for one forward pass (torch.utils.flop_counter FLOPs / 2), "
    "at the run's input resolution. 1 GMAC = 10⁹ MACs.",
    "**Times** are wall-clock seconds of the training epochs (sum of the epoch times, evaluation excluded "
    "as the engine records it), mean over seeds; **images/s** is each run's median training epoch, mean over seeds.",
    "**Accuracy per MAC** is test accuracy (%) divided by GMACs per image.",
    "**Plain accuracy is the headline**: one forward pass per image, the figure that selection uses and that is "
    "compared with the study's. When runs asked for test-time augmentation (`tta`: flip = image + mirror, "
    "flip-translate = also 2-pixel shifts), its accuracy is shown beside the plain one, never instead of it.",
    "**Weight EMA**: a run with `model_ema` is evaluated, selected and tested with its averaged weights.",
]


# ---------------------------------------------------------------- formatting
def _num(x, digits: int = 2) -> str:
    return DASH if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _pm(xs: list[float]) -> str:
    m, s, n = mean_std(xs)
    if m is None:
        return DASH
    return f"{m:.2f} ± {s:.2f} (n={n})" if s is not None else f"{m:.2f} (n=1)"


def _si(x) -> str:
    if not x:
        return DASH
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:g}"


def _g(x) -> str:
    return DASH if x is None else f"{x:g}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---------------------------------------------------------------- sections
def _final_table(stats: list[FinalStats], best: FinalStats | None) -> Table:
    tta = any(s.test_tta for s in stats)
    cols = ["Model", "Stem", "Resolution", "Params", "MACs / image", "Val acc (%)", "Test acc, plain (%)",
            *(["Test acc, TTA (%)"] if tta else []), "Train time (s)", "Images/s", "Study's test (%)",
            "Ours (plain) − study (pp)"]
    rows, cls = [], []
    for s in stats:
        test_mean = mean_std(s.test)[0]
        diff = test_mean - s.paper_test_acc if test_mean is not None and s.paper_test_acc is not None else None
        acc = [_pm(s.val), _pm(s.test)]
        if s is best:  # bold in both writers; the HTML row is highlighted too
            k = 1 if s.test else 0
            acc[k] = f"**{acc[k]}**"
        if tta:
            acc.append(f"{_pm(s.test_tta)} ({s.tta})" if s.test_tta else DASH)
        rows.append([s.label, str(s.stem or DASH), str(s.resolution or "native") if s.n_runs else DASH,
                     _si(s.params), _si(s.macs_per_image), *acc,
                     _num(s.train_time_s, 0), _num(s.images_per_sec, 0), _num(s.paper_test_acc),
                     DASH if diff is None else f"{diff:+.2f}"])
        cls.append("winner" if s is best else "")
    return Table(cols, rows, id="final-table", numeric=[False] * 3 + [True] * (len(cols) - 3), row_class=cls)


def _best(stats: list[FinalStats], key) -> FinalStats | None:
    scored = [(key(s), s) for s in stats]
    scored = [(v, s) for v, s in scored if v is not None]
    return max(scored, key=lambda t: t[0])[1] if scored else None


def _acc_per_gmac(s: FinalStats):
    m = mean_std(s.acc)[0]
    return m / (s.macs_per_image / 1e9) if m is not None and s.macs_per_image else None


def _verdict(c: Comparison) -> str:
    if c.significant is None:
        return "cannot tell (fewer than 2 seeds)"
    if c.significant:
        return "significant"
    return "within seed spread" if c.within_spread else f"not significant (p ≥ {ALPHA})"


def _summary(stats: list[FinalStats], comps: list[Comparison], study: Study) -> list[str]:
    have = [s for s in stats if s.acc]
    if not have:
        return ["No final run has finished yet: there is nothing to rank. The sweep tables below show progress."]
    split = "test" if all(s.test for s in have) else "validation"
    out = []
    acc_best = _best(have, lambda s: mean_std(s.acc)[0])
    line = f"**On accuracy**: {acc_best.label} leads with {_pm(acc_best.acc)} % {split} accuracy"
    runner = [c for c in comps if c.a is acc_best]
    if runner:
        c = min(runner, key=lambda c: c.diff)  # the closest rival decides whether the lead is real
        line += f", {c.diff:.2f} pp ahead of {c.b.label}: {_verdict(c)}"
        if c.welch:
            line += f" (Welch t = {c.welch['t']:.2f}, df = {c.welch['df']:.1f}, p = {c.welch['p']:.3g})"
    out.append(line + ".")
    per_mac = _best(have, _acc_per_gmac)
    if per_mac:
        out.append(f"**On accuracy per MAC**: {per_mac.label}, {_acc_per_gmac(per_mac):.1f} % per GMAC "
                   f"({_si(per_mac.macs_per_image)} MACs per image).")
    fastest = _best(have, lambda s: -s.train_time_s if s.train_time_s else None)
    if fastest:
        out.append(f"**On time**: {fastest.label} trains fastest, {fastest.train_time_s:.0f} s per run"
                   f" ({_num(fastest.images_per_sec, 0)} images/s).")
    close = [c for c in comps if c.significant is False]
    if close:
        out.append("**Not distinguishable given the seeds**: " + "; ".join(
            f"{c.a.label} vs {c.b.label} ({c.diff:.2f} pp, spread {c.spread:.2f} pp)" for c in close) + ".")
    elif comps and all(c.significant for c in comps):
        out.append("Every pairwise difference exceeds the seed spread and is significant (Welch, "
                   f"p < {ALPHA}).")
    elif any(c.significant is None for c in comps):
        out.append("With a single seed, no difference can be called significant: rerun with more seeds.")
    vs = [s for s in have if s.test and s.paper_test_acc is not None]
    if vs:
        beat = [s for s in vs if mean_std(s.test)[0] > s.paper_test_acc]
        out.append(f"**Against the study's published numbers**: {len(beat)} of {len(vs)} models beat it (" + ", ".join(
            f"{s.label} {mean_std(s.test)[0] - s.paper_test_acc:+.2f} pp" for s in vs) + ").")
    return out


def _comparison_table(comps: list[Comparison]) -> Table:
    rows = []
    for c in comps:
        rows.append([f"{c.a.label} vs {c.b.label}", c.split, f"{c.diff:.2f}", _num(c.spread),
                     DASH if not c.welch else f"{c.welch['t']:.2f}", DASH if not c.welch else f"{c.welch['df']:.1f}",
                     DASH if not c.welch else f"{c.welch['p']:.3g}", _verdict(c)])
    return Table(["Pair (better first)", "Split", "Δ mean (pp)", "Spread max(std) (pp)", "Welch t", "df", "p",
                  "Verdict"], rows, numeric=[False, False] + [True] * 5 + [False],
                 row_class=["flag" if c.significant is False else "" for c in comps])


def _flag_sections(doc: Document, study: Study, comps: list[Comparison], patience: int) -> None:
    doc.add(Heading(2, "Flags"))
    doc.add(Heading(3, "Overfitting"),
            Para(f"Rule: a run is flagged when its validation loss rose for P = {patience} consecutive epochs "
                 "while its training loss fell in each of them (each epoch compared with the one before). "
                 "Runs with at most P epochs cannot be flagged. The kept checkpoint is the best-validation "
                 "epoch, so overfitting wastes epochs but does not change the selected weights."))
    over = find_overfitting(study, patience)
    short = sum(1 for m in study.models for r in m.sweep + m.finals if 0 < r.epochs <= patience)
    if over:
        doc.add(Table(["Model", "Stage", "Run", "Epochs", "Val loss", "Train loss", "Best epoch"],
                      [[f.model, f.stage, f.run.name, f"{f.start_epoch} → {f.end_epoch}",
                        f"{f.val_loss[0]:.3f} → {f.val_loss[1]:.3f}", f"{f.train_loss[0]:.3f} → {f.train_loss[1]:.3f}",
                        str(f.run.results.get("best_epoch", DASH))] for f in over],
                      numeric=[False] * 3 + [True] * 4, row_class=["flag"] * len(over)))
    else:
        doc.add(Para("No run overfits by this rule."))
    if short:
        doc.add(Para(f"{short} run(s) have too few epochs (≤ {patience}) to be checked."))

    doc.add(Heading(3, "Diverged, pruned, failed or unfinished runs"))
    probs = find_problems(study)
    if probs:
        doc.add(Table(["Model", "Stage", "Run", "Status", "Detail"],
                      [[p.model, p.stage, p.run.name, p.status, p.detail] for p in probs],
                      row_class=["flag"] * len(probs)))
    else:
        doc.add(Para("None: every run finished."))

    doc.add(Heading(3, "Sweeps that decided nothing"),
            Para("Rule: a sweep's choice is informative only when the winner's best validation accuracy beats the "
                 "runner-up's by more than twice the noise, and the winner reached at least twice chance; the noise is the larger of "
                 "the finals' seed-to-seed std of validation accuracy and the binomial std of a difference of two "
                 "accuracies on the same validation images, √(2p(1−p)/n)."))
    checks = check_sweeps(study)
    if checks:
        doc.add(Table(["Model", "Winner", "Runner-up", "Margin (pp)", "Noise (pp)", "Winner val (%)", "Chance (%)",
                       "Verdict"],
                      [[c.model, c.winner, c.runner_up, f"{c.margin:.2f}", f"{c.noise:.2f}", f"{c.winner_acc:.2f}",
                        f"{c.chance:.1f}", "informative" if c.informative else "uninformative: the winner is noise"]
                       for c in checks], numeric=[False] * 3 + [True] * 4 + [False],
                      row_class=["" if c.informative else "flag" for c in checks]))
    else:
        doc.add(Para("No model has two finished sweep runs."))

    doc.add(Heading(3, "Differences within the seed-to-seed spread"),
            Para(f"Rule: two models are **not distinguishable** when |mean_a − mean_b| < max(std_a, std_b) or "
                 f"Welch's unequal-variance t-test gives p ≥ {ALPHA} (two-sided; computed in closed form, "
                 "Student-t tail from the regularized incomplete beta function). With fewer than 2 seeds a side, "
                 "it cannot be told."))
    if comps:
        doc.add(_comparison_table(comps))
    else:
        doc.add(Para("Fewer than two models have final results."))


def _momentum(run) -> str:
    opt = run.get("opt")
    if opt in ("momentum", "nesterov"):
        return _g(run.get("momentum"))
    return "0" if opt == "sgd" else DASH  # plain SGD has none; Adam's betas are not a momentum setting


def _state(run) -> str:
    """The study's state, plus the run's own status when it says more (e.g. "failed (diverged)")."""
    status = run.results.get("status")
    return f"{run.state} ({status})" if status and status not in ("finished", run.state) else run.state


def _sweep_section(doc: Document, m: ModelEntry, figs: Path) -> list[Path]:
    doc.add(Heading(3, m.label))
    if not m.sweep:
        doc.add(Para("No sweep recorded."))
        return []
    core = {"opt", "lr", "momentum", "name"}
    extra_keys = sorted({k for r in m.sweep for k in r.params} - core)
    rows, cls = [], []
    for r in m.sweep:
        win = r.name == m.winner
        planned = r.config.get("epochs")
        epochs = f"{r.results.get('epochs_done', r.epochs)}/{planned}" if planned else str(r.epochs or DASH)
        row = [f"**{r.name} ★ winner**" if win else r.name, str(r.get("opt", DASH)), _g(r.get("lr")), _momentum(r),
               epochs, _num(r.best_val_acc), _state(r)]
        if extra_keys:
            row.append(", ".join(f"{k}={r.params[k]}" for k in extra_keys if k in r.params))
        rows.append(row)
        cls.append("winner" if win else "flag" if r.status in ("diverged", "failed", "pruned") else "")
    cols = ["Config", "Optimizer", "LR", "Momentum", "Epochs", "Best val acc (%)", "State"]
    cols += ["Other params"] if extra_keys else []
    doc.add(Table(cols, rows, numeric=[False, False, True, True, True, True, False, False][:len(cols)],
                  row_class=cls))
    doc.add(Para(f"Winner (highest best validation accuracy): **{m.winner or 'not chosen yet'}**."))
    path = plots.learning_curves([(f"{r.name}{' ★' if r.name == m.winner else ''}", [r]) for r in m.sweep],
                                 figs / f"curves_sweep_{_safe(m.name)}.png")
    doc.add(Figure(path, f"figures/{path.name}",
                   f"{m.label} sweep: loss (log scale) and accuracy (%) per epoch, train vs validation, one panel "
                   "per config; ★ marks the winner."))
    return [path]


def _per_class_section(doc: Document, stats: list[FinalStats], figs: Path) -> list[Path]:
    doc.add(Heading(2, "Per-class accuracy and confusion matrices"))
    have = [s for s in stats if s.per_class_acc]
    if not have:
        doc.add(Para("No final run has been tested yet."))
        return []
    classes = have[0].classes or [str(i) for i in range(len(have[0].per_class_acc))]
    rows = [[c] + [_num(s.per_class_acc[i]) if i < len(s.per_class_acc) else DASH for s in have]
            for i, c in enumerate(classes)]
    doc.add(Para("Test accuracy per class (%), mean over each model's seeds."),
            Table(["Class"] + [s.label for s in have], rows, numeric=[False] + [True] * len(have)))
    out = [plots.per_class(have, figs / "per_class.png")]
    doc.add(Figure(out[0], "figures/per_class.png", "Per-class test accuracy (%), mean over seeds."))
    for s in stats:
        if s.confusion:
            p = plots.confusion(s, figs / f"confusion_{_safe(s.name)}.png")
            how = f"summed over {s.confusion_seeds} seeds" if s.confusion_seeds > 1 else "from its single seed"
            doc.add(Figure(p, f"figures/{p.name}",
                           f"{s.label}: test confusion matrix, {how}; rows are true classes, columns predictions, "
                           "numbers are image counts, colour is the % of the true class.", half=True))
            out.append(p)
    return out


def _dataset_section(doc: Document, study: Study, figs: Path) -> None:
    doc.add(Heading(2, "Dataset"), Para(f"Dataset: `{study.dataset}`."))
    rows = (study.info.get("data") or {}).get("rows") or []
    if rows:
        cols = [k for k in rows[0] if k != "class"]
        doc.add(Table(["Class"] + cols, [[str(r.get("class"))] + [_g(r.get(k)) for k in cols] for r in rows],
                      numeric=[False] + [True] * len(cols)))
    # The study draws these two at its start (cifarbench.data.inspect); any other PNG it lists comes after.
    known = {"figures/data_distribution.png": "Images per class and split.",
             "figures/data_samples.png": "Sample training images."}
    listed = [f for f in (study.info.get("data") or {}).get("files") or [] if str(f).endswith(".png")]
    for rel in list(known) + [f for f in listed if f not in known]:
        path = study.dir / rel
        if not Path(rel).is_absolute() and path.is_file():
            doc.add(Figure(path, rel, known.get(rel, f"Dataset figure {path.name}.")))


def _config_section(doc: Document, study: Study) -> None:
    doc.add(Heading(2, "Study configuration"))
    cfg = study.config
    description = study.info.get("description") or cfg.get("description")
    notes = study.info.get("notes") or cfg.get("notes")
    if description:
        doc.add(Para(str(description)))
    if notes:
        doc.add(Para("Why these choices:"), Bullets([str(n) for n in notes]))
    stages = study.info.get("stages") or {}
    if stages:
        doc.add(Para("Stages: " + ", ".join(f"{k} {v}" for k, v in stages.items()) + "."))
    doc.add(Para("The study file (study.toml):" if study.toml_text else "The study config (from study.json):"),
            Pre(study.toml_text or json.dumps(cfg, indent=2)))


def _env_section(doc: Document, study: Study) -> None:
    doc.add(Heading(2, "Environment"))
    env = study.env
    if env:
        doc.add(Table(["Key", "Value"], [[k, str(v)] for k, v in env.items()]))
    else:
        doc.add(Para("No environment recorded."))
    devices = {r.results["env"].get("device_name") or r.results["env"].get("device")
               for m in study.models for r in m.finals if r.results.get("env")}
    if len(devices) > 1:
        doc.add(Para("The finals ran on several devices: " + ", ".join(sorted(map(str, devices))) +
                     "; their times are not comparable."))


# ---------------------------------------------------------------- the report
def build_document(study: Study, figs: Path, patience: int = OVERFIT_PATIENCE) -> tuple[Document, list[Path]]:
    stats = [final_stats(m) for m in study.models]
    comps = compare_models(stats)
    best = _best([s for s in stats if s.acc], lambda s: mean_std(s.acc)[0])
    written: list[Path] = []
    doc = Document(f"cifarbench study report: {study.name}")
    env = study.env
    doc.add(Para(f"Dataset `{study.dataset}`, {len(study.models)} models; study updated "
                 f"{study.info.get('updated', DASH)}; device {env.get('device_name') or env.get('device', DASH)}."))
    doc.add(*deviation_blocks(study))

    doc.add(Heading(2, "Summary"), Bullets(_summary(stats, comps, study)))
    doc.add(Heading(2, "Conventions"), Bullets(CONVENTIONS))

    doc.add(Heading(2, "Final results", id="final-results"),
            Para("One row per model: the sweep winner retrained with each final seed; the best mean accuracy is "
                 "in bold. The study's published test accuracy is shown beside ours." + subset_note(study)),
            _final_table(stats, best))
    if any(s.acc for s in stats):
        p = plots.tradeoff(stats, figs / "tradeoff.png")
        written.append(p)
        doc.add(Figure(p, "figures/tradeoff.png",
                       "Accuracy (%, mean ± std over seeds) against MACs per image (forward, log scale) and against "
                       "training wall time (s, mean over seeds). Filled green points are on the Pareto front (no other "
                       "model is both cheaper and more accurate)."))

    doc.add(*cost_blocks(study))
    doc.add(*budget_blocks(study))  # a budgeted study: the rule, the epochs it chose, predicted vs actual time
    _flag_sections(doc, study, comps, patience)

    doc.add(Heading(2, "Learning curves of the finals"))
    panels = [(m.label, [r for r in m.finals if r.epochs]) for m in study.models if m.finals]
    if panels:
        p = plots.learning_curves(panels, figs / "curves_final.png")
        written.append(p)
        doc.add(Figure(p, "figures/curves_final.png",
                       "Finals: loss (log scale) and accuracy (%) per epoch, train vs validation, one panel per model; "
                       "thin lines are single seeds, bold lines their mean."))
    else:
        doc.add(Para("No final run yet."))

    doc.add(Heading(2, "Sweeps"),
            Para("Like the study's Figures 6–8: each model's optimizer settings, trained for the sweep epochs and "
                 "ranked by best validation accuracy; the test split is never read here."))
    for m in study.models:
        written += _sweep_section(doc, m, figs)

    written += _per_class_section(doc, stats, figs)
    _dataset_section(doc, study, figs)
    _config_section(doc, study)
    _env_section(doc, study)
    return doc, written


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: a browser or a reader never sees half a report
    return path


def render_report(study_dir: str | Path, overfit_patience: int = OVERFIT_PATIENCE) -> list[Path]:
    """Write STUDY/report.md, STUDY/report.html and STUDY/figures/*.png from the study's files.

    Returns the paths written: report.md, report.html, then the figures."""
    if overfit_patience < 1:
        raise CifarbenchError(f"overfit patience {overfit_patience}: must be at least 1 epoch")
    study = load_study(study_dir)
    figs = study.dir / "figures"
    figs.mkdir(exist_ok=True)
    doc, figures = build_document(study, figs, overfit_patience)
    md = _write_text(study.dir / "report.md", to_markdown(doc))
    page = _write_text(study.dir / "report.html", to_html(doc))
    return [md, page, *figures]
