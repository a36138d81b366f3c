"""Statistics over seeds for a study's tables: what a reviewer asks of "+2.3 mIoU".

A table row (a variant, at given axis values) has one score per seed. It is reported as mean ± sample
std, n, and the 95 % Student-t confidence interval of the mean. A Δ between two rows is *paired* over
seeds: the rows of a study share their seeds' warm-ups (the same node, see proda/chain.py), so seed s of
one row and seed s of the other differ only in what the rows change, and the seed-to-seed noise that both
share cancels in the difference. The Δ is the mean of the per-seed differences over the seeds both rows
have, with the Student-t CI of that mean (the paired t interval, as ``scipy.stats.ttest_rel``), a bias-
corrected and accelerated bootstrap CI as well from :data:`BOOTSTRAP_MIN_N` pairs on (``scipy.stats.
bootstrap``, fixed seed: the same study prints the same table), and a mark when the t CI excludes 0.

scipy does the arithmetic; this module only decides what is paired with what and what is too little data.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_MIN_N = 5  # below that, resampling a handful of values says less than the t interval
BOOTSTRAP_SEED = 0
# scipy >= 1.15 names the generator `rng`; older releases `random_state`
_BOOTSTRAP_RNG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
NAN = math.nan


def _values(values) -> np.ndarray:
    """The non-null values as floats (None, NaN and pd.NA dropped)."""
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").dropna().to_numpy(float)


def t_interval(x) -> tuple[float, float]:
    """The 95 % Student-t CI of the mean of ``x`` (NaN, NaN for fewer than 2 values). Every value equal:
    the interval is that value (scipy's t needs a positive scale)."""
    x = _values(x)
    if len(x) < 2:
        return NAN, NAN
    mean, se = float(x.mean()), float(stats.sem(x))
    if se == 0:
        return mean, mean
    lo, hi = stats.t.interval(CONFIDENCE, len(x) - 1, loc=mean, scale=se)
    return float(lo), float(hi)


def bootstrap_interval(x) -> tuple[float, float]:
    """The 95 % BCa bootstrap CI of the mean of ``x`` from :data:`BOOTSTRAP_MIN_N` values on, else NaN."""
    x = _values(x)
    if len(x) < BOOTSTRAP_MIN_N:
        return NAN, NAN
    if np.ptp(x) == 0:  # every resample has the same mean; BCa is undefined there
        return float(x[0]), float(x[0])
    ci = stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE,
                         **{_BOOTSTRAP_RNG: np.random.default_rng(BOOTSTRAP_SEED)}).confidence_interval
    return float(ci.low), float(ci.high)


def excludes_zero(lo: float, hi: float) -> bool:
    return not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0)


def describe(values) -> dict[str, float | int]:
    """``{"mean", "std", "n", "ci_low", "ci_high"}`` of the non-null values: sample std (ddof=1), t CI;
    NaN where there are too few values (std and CI need 2)."""
    x = _values(values)
    n = len(x)
    lo, hi = t_interval(x)
    return {"mean": float(x.mean()) if n else NAN, "std": float(x.std(ddof=1)) if n > 1 else NAN, "n": n,
            "ci_low": lo, "ci_high": hi}


NO_DELTA = {"delta": NAN, "n": 0, "ci_low": NAN, "ci_high": NAN, "boot_low": NAN, "boot_high": NAN, "sig": False}


def paired_delta(a: pd.Series, b: pd.Series) -> dict[str, float | int | bool]:
    """Δ = a − b paired over seeds: ``a`` and ``b`` are scores indexed by seed; the seeds both have a
    score for are paired. ``{"delta", "n", "ci_low", "ci_high", "boot_low", "boot_high", "sig"}``: the
    mean per-seed difference, the number of pairs, its t CI and bootstrap CI, whether the t CI excludes 0."""
    pairs = pd.concat({"a": pd.to_numeric(a, errors="coerce"), "b": pd.to_numeric(b, errors="coerce")},
                      axis=1, join="inner").dropna()
    d = (pairs["a"] - pairs["b"]).to_numpy(float)  # (n pairs,)
    if len(d) == 0:
        return dict(NO_DELTA)
    lo, hi = t_interval(d)
    blo, bhi = bootstrap_interval(d)
    return {"delta": float(d.mean()), "n": len(d), "ci_low": lo, "ci_high": hi, "boot_low": blo, "boot_high": bhi,
            "sig": excludes_zero(lo, hi)}


# -- the rows of a table ---------------------------------------------------------------------------
def prefixed(d: dict, prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in d.items()}


def by_seed(g: pd.DataFrame, col: str) -> pd.Series:
    return g.groupby("seed")[col].mean()  # seed → score (a group holds each seed once; NaN: no score)


def baseline(groups) -> tuple[int, str]:
    """The row every Δ is also taken against: the first source-only row, else the first row."""
    i = next((i for i, (k, _) in enumerate(groups) if k["variant"] == "source-only"), None)
    return (0, "first row") if i is None else (i, "source-only")


def group_stats(groups, col: str, axes: list[str], prefix: str) -> list[dict]:
    """Per group of study rows ``(key, rows)`` (:func:`proda.ablation.results.group_rows`), in order: the
    key (variant, axis values), :func:`describe` of column ``col`` (``<prefix>_mean``, ``_std``, ``_n``,
    ``_ci_low``, ``_ci_high``) and the paired Δ of ``col`` against the row above (``vs_above_*``) and
    against the :func:`baseline` (``vs_base_*``), each with the keys of :func:`paired_delta`."""
    b, _ = baseline(groups)
    rows = []
    for i, (k, g) in enumerate(groups):
        above = paired_delta(by_seed(g, col), by_seed(groups[i - 1][1], col)) if i else NO_DELTA
        base = paired_delta(by_seed(g, col), by_seed(groups[b][1], col)) if i != b else NO_DELTA
        rows.append({"variant": k["variant"], **{a: k.get(a) for a in axes}, **prefixed(describe(g[col]), prefix),
                     **prefixed(above, "vs_above"), **prefixed(base, "vs_base")})
    return rows
