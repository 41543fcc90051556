"""The report's analyses, checked against closed forms and hand-made cases."""
import math

import pytest

from cifarbench.report.flags import (FinalStats, betainc, compare_models, mean_std, overfit_streak, pareto_front,
                                     t_two_sided_p, welch_test)


def test_mean_std_is_sample_std_and_skips_missing():
    m, s, n = mean_std([1.0, 2.0, None, 3.0, float("nan")])
    assert (m, n) == (2.0, 3) and s == pytest.approx(1.0)
    assert mean_std([5.0]) == (5.0, None, 1)
    assert mean_std([]) == (None, None, 0)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 12.706, 40.0])
def test_t_tail_matches_closed_forms(t):
    # df = 1 is Cauchy; df = 2 and 3 have elementary closed forms too.
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-9, abs=1e-12)
    assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9, abs=1e-12)
    u = t / math.sqrt(3)
    p3 = 1 - 2 / math.pi * (math.atan(u) + u / (1 + u * u))
    assert t_two_sided_p(t, 3) == pytest.approx(p3, rel=1e-8, abs=1e-12)


def test_t_tail_known_table_values_and_normal_limit():
    assert t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0


def test_welch_by_hand():
    w = welch_test([1, 2, 3, 4], [2, 4, 6, 8])
    va, vb = (5 / 3) / 4, (20 / 3) / 4
    assert w["t"] == pytest.approx(-2.5 / math.sqrt(va + vb))
    assert w["df"] == pytest.approx((va + vb) ** 2 / (va * va / 3 + vb * vb / 3))
    assert 0.1 < w["p"] < 0.2
    assert welch_test([1.0], [2.0, 3.0]) is None  # one seed: no variance, no test
    assert welch_test([1.0, 1.0], [2.0, 2.0])["p"] == 0.0


def test_overfit_streak_needs_p_rising_val_epochs_with_falling_train():
    ep = list(range(1, 8))
    train = [2.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5]
    val = [2.0, 1.6, 1.4, 1.5, 1.6, 1.7, 1.6]          # rises at epochs 4, 5, 6
    assert overfit_streak(ep, train, val, patience=3) == (2, 5)  # from epoch 3 (index 2) to epoch 6
    assert overfit_streak(ep, train, val, patience=4) is None
    flat_train = [2.0, 1.5, 1.2, 1.3, 1.4, 1.5, 1.5]   # train loss rising too: underfitting noise, not overfitting
    assert overfit_streak(ep, flat_train, val, patience=2) is None
    with_nan = [2.0, 1.6, 1.4, 1.5, float("nan"), 1.7, 1.8]  # a missing value breaks the streak
    assert overfit_streak(ep, train, with_nan, patience=2) is None
    assert overfit_streak(ep, train, with_nan, patience=1) == (2, 3)


def test_pareto_front():
    # (cost, acc): b is dominated by a (cheaper and more accurate); c is the accurate end of the front.
    assert pareto_front([(1, 80), (2, 79), (10, 90)]) == [True, False, True]
    assert pareto_front([(1, 80), (1, 80)]) == [True, True]  # ties dominate nobody


def _stats(name, test):
    return FinalStats(name=name, label=name, n_runs=len(test), val=list(test), test=list(test))


def test_compare_models_verdicts():
    comps = {(c.a.name, c.b.name): c for c in compare_models(
        [_stats("a", [90.1, 90.5]), _stats("b", [80.5, 81.5]), _stats("c", [81.2, 81.8]), _stats("d", [70.0])])}
    assert comps[("a", "b")].significant is True
    close = comps[("c", "b")]  # better first
    assert close.diff == pytest.approx(0.5) and close.within_spread and close.significant is False
    assert comps[("a", "d")].significant is None  # a single seed cannot be judged


def _sweep_study(accs, n_val=5000, final_vals=()):
    from types import SimpleNamespace as NS

    sweep = [NS(name=f"p{i}", best_val_acc=a, results={"val_images": n_val, "classes": list("abcdefghij")})
             for i, a in enumerate(accs)]
    finals = [NS(results={"val_acc": v}) for v in final_vals]
    return NS(models=[NS(name="m", sweep=sweep, finals=finals)])


def test_a_sweep_decides_only_beyond_twice_the_noise_and_above_chance():
    from cifarbench.report.flags import check_sweeps

    # the quick preset's old ResNet18 sweep: 13.98 vs 11.64 on 5,000 images, next to chance
    (c,) = check_sweeps(_sweep_study([11.64, 13.98]))
    assert c.winner == "p1" and c.margin == pytest.approx(2.34) and not c.informative
    assert c.noise == pytest.approx(100 * (2 * 0.1398 * 0.8602 / 5000) ** 0.5)
    (c,) = check_sweeps(_sweep_study([60.0, 70.0]))
    assert c.informative
    # a margin inside the finals' seed spread decides nothing, whatever the binomial noise says
    (c,) = check_sweeps(_sweep_study([68.0, 70.0], final_vals=[66.0, 70.0]))
    assert c.noise == pytest.approx(2 ** 0.5 * 2) and not c.informative
    assert check_sweeps(_sweep_study([70.0])) == []
