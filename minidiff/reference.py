"""Reference runs: the multi-seed sweeps a chapter cannot afford to train live, shipped with the package.

A chapter trains live what fits its budget (its models, one comparison at one seed). The comparison over several
seeds comes from a script in ``benchmarks/`` run once on a 2-core CPU machine; it writes its runs, each with the
command, machine and date that produced it, to ``minidiff/assets/reference/<name>.json``, and the chapter plots that
file::

    from minidiff import reference
    runs = reference.load("unet_ablation")["runs"]
    print(reference.mean_ci([r["fid"] for r in runs if r["variant"] == "full"]))

Shipping the files with the package lets a chapter plot them on Colab, where only the package is installed; the
tests check the chapters' sentences against the same files.
"""

from __future__ import annotations

import json
import math
import statistics
from importlib import resources
from typing import NamedTuple

# two-sided 95% quantiles of Student's t by degrees of freedom (scipy.stats.t.ppf(0.975, df))
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def names() -> list[str]:
    """The reference runs shipped with the package."""
    folder = resources.files("minidiff") / "assets" / "reference"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load(name: str) -> dict:
    """The reference file ``name`` (``"unet_ablation"``): a dict with ``"runs"`` (one dict per run) and the header its
    benchmark wrote (the recipe, machine, torch version)."""
    path = resources.files("minidiff") / "assets" / "reference" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no reference run {name!r}; shipped: {', '.join(names()) or 'none'}")
    return json.loads(path.read_text())


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom, tabulated: between tabulated values the next
    smaller df's (larger) quantile, so an interval errs wide, never narrow."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    return _T975[max(k for k in _T975 if k <= df)]


class MeanCI(NamedTuple):
    """``mean`` of ``n`` values and the half-width ``ci95`` of its 95% t-interval (``nan`` for one value)."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return format(self, ".1f")

    def signed(self, digits: int = 1) -> str:
        """A difference: the mean with its sign, then the half-width (``-30.6 ± 6.3``; the mean alone for one value)."""
        mean = f"{self.mean:+.{digits}f}"
        return f"{mean} ± {self.ci95:.{digits}f}" if self.n > 1 else mean

    def __format__(self, spec: str) -> str:
        """``f"{m:.4f}"`` formats the mean and the half-width alike (``str`` is ``".1f"``)."""
        spec = spec or ".1f"
        return f"{self.mean:{spec}} ± {self.ci95:{spec}}" if self.n > 1 else f"{self.mean:{spec}}"


def mean_ci(values) -> MeanCI:
    """Mean and 95% confidence half-width (Student's t, sample standard deviation) of ``values``."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_ci needs at least one value")
    if len(v) == 1:
        return MeanCI(v[0], math.nan, 1)
    return MeanCI(statistics.mean(v), t975(len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v)), len(v))


def min_detectable_difference(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean difference a two-sided paired t-test at level ``alpha`` on ``n`` pairs detects with
    probability ``power``, when the paired differences have standard deviation ``sd``: the :math:`\\delta` with
    :math:`P(|T| > t_{1-\\alpha/2,\\,n-1}) = \\text{power}` for :math:`T` noncentral-t with :math:`n - 1` degrees of
    freedom and noncentrality :math:`\\delta\\sqrt n / \\text{sd}` (exact, not the normal approximation
    :math:`(z_{1-\\alpha/2} + z_\\text{power})\\,\\text{sd}/\\sqrt n`, which it approaches for large ``n``)."""
    from scipy import optimize, stats

    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs, got {n}")
    if not sd > 0 or not math.isfinite(sd):
        raise ValueError(f"sd must be a positive number, got {sd}")
    if not 0 < alpha < 1 or not alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1, got alpha={alpha}, power={power}")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def excess(delta):
        nc = delta * math.sqrt(n) / sd
        left = stats.nct.cdf(-crit, df, nc)          # the wrong-sign rejections: tiny; scipy may give nan there
        return stats.nct.sf(crit, df, nc) + (left if math.isfinite(left) else 0.0) - power

    # at the upper end the power is essentially 1 (a noncentrality crit + 10 standard errors beyond the critical value)
    return float(optimize.brentq(excess, 0.0, (crit + 10) * sd / math.sqrt(n)))
