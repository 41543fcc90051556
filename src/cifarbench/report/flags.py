"""The report's analyses: per-model final statistics, overfitting, diverged or failed runs,
whether two models really differ given their seed-to-seed spread, and the Pareto front.

Pure Python on the numbers read from files (no numpy needed, no scipy): Welch's t-test is
computed by hand, with the Student-t tail from the regularized incomplete beta function.
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from cifarbench.report.load import ModelEntry, Run, Study

OVERFIT_PATIENCE = 3   # P: consecutive epochs of rising val loss with falling train loss
ALPHA = 0.05           # Welch's test level


# ---------------------------------------------------------------- statistics
def mean_std(xs: Sequence[float]) -> tuple[float | None, float | None, int]:
    """Mean and *sample* standard deviation (n-1); std is None below 2 values."""
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float] | None:
    """Welch's unequal-variance t-test: {t, df, p} (two-sided), or None with fewer than 2 values a side."""
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    if na < 2 or nb < 2:
        return None
    va, vb = sa * sa / na, sb * sb / nb
    if va + vb == 0.0:  # identical seeds on both sides: any difference is exact
        return {"t": math.inf if ma != mb else 0.0, "df": float(na + nb - 2), "p": 0.0 if ma != mb else 1.0}
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return {"t": t, "df": df, "p": t_two_sided_p(t, df)}


# ---------------------------------------------------------------- per-model finals
@dataclass
class FinalStats:
    """One row of the final table, from the finals' results.json files."""
    name: str
    label: str
    n_runs: int                    # finals with results
    val: list[float]               # per seed, %
    test: list[float]              # per seed, % (empty before the test stage)
    test_tta: list[float] = field(default_factory=list)  # per seed, % with the runs' --tta (empty without it)
    tta: str | None = None         # the TTA mode of test_tta
    stem: Any = None
    resolution: Any = None
    params: int | None = None
    macs_per_image: int | None = None
    train_time_s: float | None = None     # mean over seeds
    images_per_sec: float | None = None   # mean over seeds of each run's median epoch
    paper_test_acc: float | None = None
    classes: list[str] = field(default_factory=list)
    per_class_acc: list[float] | None = None   # mean over seeds, %
    confusion: list[list[int]] | None = None   # summed over seeds
    confusion_seeds: int = 0

    @property
    def acc(self) -> list[float]:
        """The accuracy that ranks models: test when the test stage ran, else validation."""
        return self.test or self.val

    @property
    def acc_split(self) -> str:
        return "test" if self.test else "val"


def _per_class(res: dict[str, Any], classes: list[str]) -> list[float] | None:
    """per_class_acc may be a list (in class order) or a {class: acc} dict; else derive it from the confusion."""
    pca = res.get("per_class_acc")
    if isinstance(pca, dict):
        return [float(pca.get(c, math.nan)) for c in classes]
    if isinstance(pca, list):
        return [float(x) for x in pca]
    conf = res.get("confusion")
    if conf:
        return [100.0 * row[i] / sum(row) if sum(row) else math.nan for i, row in enumerate(conf)]
    return None


def final_stats(m: ModelEntry) -> FinalStats:
    runs = [r for r in m.finals if r.results]
    first = runs[0] if runs else None
    st = FinalStats(name=m.name, label=m.label, n_runs=len(runs), val=[], test=[], paper_test_acc=m.paper_test_acc)
    for r in m.finals:
        v = r.results.get("val_acc", r.results.get("best_val_acc")) if r.results else r.study_val_acc
        if v is not None:
            st.val.append(float(v))
        if r.results.get("test_acc") is not None:
            st.test.append(float(r.results["test_acc"]))
        if r.results.get("test_acc_tta") is not None:
            st.test_tta.append(float(r.results["test_acc_tta"]))
            st.tta = r.config.get("tta")
    if first is None:
        return st
    st.stem, st.resolution = first.get("stem"), first.get("resolution")
    st.params, st.macs_per_image = first.results.get("params"), first.results.get("macs_per_image")
    st.train_time_s = mean_std([r.results.get("train_time_s") for r in runs])[0]
    st.images_per_sec = mean_std([r.results.get("images_per_sec") for r in runs])[0]
    st.classes = list(first.results.get("classes") or [])
    pcs = [p for p in (_per_class(r.results, st.classes) for r in runs) if p]
    if pcs:
        st.per_class_acc = [mean_std(col)[0] for col in zip(*pcs)]
    confs = [r.results["confusion"] for r in runs if r.results.get("confusion")]
    if confs:
        st.confusion = [[sum(c[i][j] for c in confs) for j in range(len(confs[0][i]))] for i in range(len(confs[0]))]
        st.confusion_seeds = len(confs)
    return st


# ---------------------------------------------------------------- flags
@dataclass
class SweepCheck:
    """Whether a model's sweep separated its winner from the runner-up by more than noise."""
    model: str
    winner: str
    runner_up: str
    margin: float         # winner's best val acc - runner-up's, pp
    noise: float          # pp: the larger of the finals' seed std and the binomial std of a difference
    chance: float         # 100 / classes
    winner_acc: float

    @property
    def informative(self) -> bool:
        return self.margin > 2 * self.noise and self.winner_acc >= 2 * self.chance


def check_sweeps(study: Study) -> list[SweepCheck]:
    """Rule, fixed in advance: a sweep decides something only when the winner's validation accuracy beats the
    runner-up's by more than twice the noise, and the winner has reached at least twice chance (a run that has
    barely left chance has not learned enough for its ranking to speak for the settings at full length). The noise is the larger of
    (a) the finals' seed-to-seed std of validation accuracy (how much a rerun moves a number) and (b) the binomial
    std of the difference of two accuracies measured on the same n validation images, sqrt(2 p (1 - p) / n)."""
    out = []
    for m in study.models:
        scored = sorted(((r.best_val_acc, r) for r in m.sweep if r.best_val_acc is not None),
                        key=lambda t: t[0], reverse=True)
        if len(scored) < 2:
            continue
        (a, ra), (b, rb) = scored[0], scored[1]
        n = ra.results.get("val_images") or 0
        classes = len(ra.results.get("classes") or []) or 10
        p = min(max(a / 100, 1e-3), 1 - 1e-3)
        binomial = 100 * math.sqrt(2 * p * (1 - p) / n) if n else 0.0
        seed_std = mean_std([r.results.get("val_acc", r.results.get("best_val_acc")) for r in m.finals if r.results])[1]
        out.append(SweepCheck(m.name, ra.name, rb.name, a - b, max(binomial, seed_std or 0.0), 100 / classes, a))
    return out


@dataclass
class OverfitFlag:
    model: str
    stage: str        # sweep | final
    run: Run
    start_epoch: int  # last epoch before val loss started rising
    end_epoch: int    # last epoch of the streak
    val_loss: tuple[float, float]
    train_loss: tuple[float, float]


def overfit_streak(epochs: Sequence[float], train_loss: Sequence[float], val_loss: Sequence[float],
                   patience: int = OVERFIT_PATIENCE) -> tuple[int, int] | None:
    """The first streak of >= patience consecutive epochs in which validation loss rose and training
    loss fell (each compared with the epoch before). Returns (index before the streak, last index)."""
    n = min(len(train_loss), len(val_loss), len(epochs))
    i = 1
    while i < n:
        j = i
        while (j < n and val_loss[j] > val_loss[j - 1] and train_loss[j] < train_loss[j - 1]
               and math.isfinite(val_loss[j]) and math.isfinite(train_loss[j])):
            j += 1
        if j - i >= patience:
            return i - 1, j - 1
        i = j + 1  # step j broke the streak; the next one can start after it
    return None


def find_overfitting(study: Study, patience: int = OVERFIT_PATIENCE) -> list[OverfitFlag]:
    flags = []
    for m in study.models:
        for stage, runs in (("sweep", m.sweep), ("final", m.finals)):
            for r in runs:
                mt = r.metrics
                s = overfit_streak(mt["epoch"], mt["train_loss"], mt["val_loss"], patience)
                if s:
                    a, b = s
                    flags.append(OverfitFlag(m.name, stage, r, int(mt["epoch"][a]), int(mt["epoch"][b]),
                                             (mt["val_loss"][a], mt["val_loss"][b]),
                                             (mt["train_loss"][a], mt["train_loss"][b])))
    return flags


@dataclass
class ProblemFlag:
    model: str
    stage: str
    run: Run
    status: str    # diverged | pruned | failed | interrupted | running
    detail: str


PROBLEM_STATES = ("diverged", "pruned", "failed", "interrupted", "running")


def find_problems(study: Study) -> list[ProblemFlag]:
    """Runs that diverged, were pruned or failed, or have not finished."""
    out = []
    for m in study.models:
        for stage, runs in (("sweep", m.sweep), ("final", m.finals)):
            for r in runs:
                status = r.results.get("status") if r.results.get("status") in PROBLEM_STATES else None
                status = status or (r.state if r.state in PROBLEM_STATES else None)
                if not status:
                    continue
                done = r.results.get("epochs_done", r.epochs)
                planned = r.config.get("epochs")
                detail = f"{done} of {planned} epochs" if planned else f"{done} epochs"
                if status == "diverged":
                    bad = [e for e, x in zip(r.metrics["epoch"], r.metrics["train_loss"]) if not math.isfinite(x)]
                    losses = r.metrics["train_loss"]
                    detail += (f"; training loss non-finite at epoch {int(bad[0])}" if bad else
                               f"; last training loss {losses[-1]:.3g}" if losses else "")
                out.append(ProblemFlag(m.name, stage, r, status, detail))
    return out


@dataclass
class Comparison:
    a: FinalStats
    b: FinalStats
    split: str
    diff: float             # mean_a - mean_b, percentage points
    spread: float | None    # max(std_a, std_b)
    welch: dict[str, float] | None

    @property
    def within_spread(self) -> bool | None:
        return None if self.spread is None else abs(self.diff) < self.spread

    @property
    def significant(self) -> bool | None:
        """True only when the gap exceeds both seed spreads AND Welch's p < ALPHA; None if it cannot be told."""
        if self.spread is None or self.welch is None:
            return None
        return not self.within_spread and self.welch["p"] < ALPHA


def compare_models(stats: list[FinalStats]) -> list[Comparison]:
    """Every pair of models that has results, best first within each pair."""
    out = []
    have = [s for s in stats if s.acc]
    for x, y in itertools.combinations(have, 2):
        split = "test" if (x.test and y.test) else "val"
        ax, ay = (x.test, y.test) if split == "test" else (x.val, y.val)
        (mx, sx, _), (my, sy, _) = mean_std(ax), mean_std(ay)
        if my > mx:
            x, y, ax, ay, mx, my, sx, sy = y, x, ay, ax, my, mx, sy, sx
        spread = max(sx, sy) if sx is not None and sy is not None else None
        out.append(Comparison(x, y, split, mx - my, spread, welch_test(ax, ay)))
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """points are (cost, accuracy); a point is on the front when no other point is at least as cheap
    and at least as accurate, and strictly better in one of the two."""
    out = []
    for i, (c, a) in enumerate(points):
        dominated = any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i)
        out.append(not dominated)
    return out
