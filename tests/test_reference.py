"""minidiff.reference: the shipped reference runs and the confidence intervals the chapters quote."""

import math

import pytest

from minidiff import reference


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 10, 15, 20, 30, 40, 60, 120):
        assert reference.t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    # between and beyond tabulated values the next smaller df is used: the interval errs wide, never narrow
    for df in (11, 17, 25, 31, 45, 100, 1000):
        assert reference.t975(df) >= stats.t.ppf(0.975, df)
    with pytest.raises(ValueError, match="df"):
        reference.t975(0)


def test_mean_ci_is_the_student_t_interval():
    stats = pytest.importorskip("scipy.stats")
    values = [61.2, 57.8, 77.4]
    m = reference.mean_ci(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values))
    assert m.n == 3 and m.mean == pytest.approx(sum(values) / 3)
    assert m.ci95 == pytest.approx((hi - lo) / 2, rel=1e-3)
    assert str(m) == f"{m.mean:.1f} ± {m.ci95:.1f}" == f"{m}"
    assert f"{m:.3f}" == f"{m.mean:.3f} ± {m.ci95:.3f}" and f"{reference.mean_ci([2.0]):.2f}" == "2.00"
    one = reference.mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.ci95) and str(one) == "5.0"
    with pytest.raises(ValueError, match="at least one"):
        reference.mean_ci([])


def test_shipped_reference_runs_load_and_unknown_names_are_named():
    shipped = reference.names()
    assert "unet_ablation" in shipped
    for name in shipped:
        d = reference.load(name)
        assert d["runs"] and all("command" in r and "date" in r for r in d["runs"]), name
        assert "machine" in d and "torch" in d
    with pytest.raises(FileNotFoundError, match="unet_ablation"):
        reference.load("no_such_run")


def test_min_detectable_difference_has_the_power_it_claims():
    """Simulated paired t-tests at the returned difference reject in 80% of trials (n = 3 and n = 6), and for many
    pairs the difference approaches the normal approximation (z_0.975 + z_0.8) sd / sqrt(n)."""
    import numpy as np

    from minidiff.reference import min_detectable_difference, t975

    rng = np.random.default_rng(0)
    for n in (3, 6):
        delta = min_detectable_difference(2.0, n)
        d = rng.normal(delta, 2.0, size=(40000, n))
        t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
        crit = t975(n - 1)                          # tabulated, independent of scipy's nct
        assert abs((np.abs(t) > crit).mean() - 0.8) < 0.01, n
    assert min_detectable_difference(1.0, 400) == pytest.approx((1.959964 + 0.841621) / 20, rel=0.01)
    assert min_detectable_difference(3.0, 3) == pytest.approx(3 * min_detectable_difference(1.0, 3), rel=1e-6)
    with pytest.raises(ValueError, match="n >= 2"):
        min_detectable_difference(1.0, 1)
