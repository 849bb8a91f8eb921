"""Intervals over seeds and the one verdict rule of ``verdicts.md`` (pure functions, no I/O).

An effect is a mean difference oriented so that a positive value is the direction the paper
claims. Its 95 % interval is a Student t interval: over the per-seed differences where runs
pair (the same seed at two eps² levels, two temperatures of one run), Welch's where they do not
(two models), one-sample where the other side is a single measured constant (the real digits).

The rule (:func:`judge`), applied in this order:

1. **underpowered** when fewer than ``MIN_N`` seeds (pairs, or the smaller of two groups) carry
   the effect, the metric was not measured, or any run behind it has not converged;
2. **opposite** when the whole interval lies below 0;
3. **reproduced** when the whole interval lies above 0;
4. **underpowered** when the interval spans both 0 and the paper-sized effect;
5. **not reproduced** otherwise: the interval spans 0 but excludes an effect of the paper's size.

A claim of several comparisons (:func:`combine`) needs all of them: it is reproduced when every
one is, opposite when every one is, not reproduced when any one is opposite or not reproduced,
and underpowered otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MIN_N = 3
REPRODUCED, NOT_REPRODUCED, OPPOSITE, UNDERPOWERED = "reproduced", "not reproduced", "opposite", "underpowered"
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, OPPOSITE, UNDERPOWERED)
NOT_MEASURED = "metric not measured in these runs"


@dataclass(frozen=True)
class Interval:
    effect: float  # mean difference, positive = the paper's direction
    low: float
    high: float
    n: int  # pairs; the smaller group for Welch; seeds for one-sample
    method: str


def _t_interval(mean: float, se: float, df: float, n: int, method: str) -> Interval:
    if n < 2 or not np.isfinite(se) or df <= 0:
        return Interval(mean, math.nan, math.nan, n, method)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    return Interval(mean, mean - half, mean + half, n, method)


def paired_interval(a, b) -> Interval:
    """Mean of a_i − b_i over pairs (same seed), t interval with n − 1 degrees of freedom."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "paired t")
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return _t_interval(float(d.mean()), se, n - 1, n, "paired t")


def welch_interval(a, b) -> Interval:
    """mean(a) − mean(b), Welch's t interval (unequal variances, Welch–Satterthwaite df)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = min(len(a), len(b))
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "Welch t")
    mean = float(a.mean() - b.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, "Welch t")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else math.inf
    return _t_interval(mean, se, df, n, "Welch t")


def one_sample_interval(a, reference: float) -> Interval:
    """mean(a) − reference for a constant reference (one measurement without seeds)."""
    iv = paired_interval(a, np.full(len(np.asarray(a)), reference))
    return dataclasses.replace(iv, method="one-sample t")


def by_interval(low: float, high: float, paper_effect: float) -> tuple[str, str]:
    """Steps 2–5 of the rule: what the interval alone says."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return UNDERPOWERED, "no interval"
    if high < 0:
        return OPPOSITE, "the interval lies below 0"
    if low > 0:
        size = "reaches" if high >= paper_effect else "stays below"
        return REPRODUCED, f"the interval lies above 0 (and {size} the paper-sized {paper_effect:.3g})"
    if not np.isfinite(paper_effect) or high >= paper_effect:
        return UNDERPOWERED, f"the interval spans 0 and the paper-sized {paper_effect:.3g}"
    return NOT_REPRODUCED, f"the interval spans 0 and excludes the paper-sized {paper_effect:.3g}"


def judge(iv: Interval | None, paper_effect: float, n_runs: int, n_converged: int) -> tuple[str, str]:
    """The verdict rule (module docstring): outcome and a one-line reason. ``iv`` None: the
    metric was not measured."""
    if iv is None:
        return UNDERPOWERED, NOT_MEASURED
    if iv.n < MIN_N:
        return UNDERPOWERED, ("no runs" if iv.n == 0 else f"n = {iv.n} < {MIN_N}") + _alone(iv, paper_effect)
    if n_converged < n_runs:
        return UNDERPOWERED, f"{n_runs - n_converged} of {n_runs} runs not converged" + _alone(iv, paper_effect)
    return by_interval(iv.low, iv.high, paper_effect)


def _alone(iv: Interval, paper_effect: float) -> str:
    outcome, _ = by_interval(iv.low, iv.high, paper_effect)
    return "" if not np.isfinite(iv.low) else f"; the interval alone: {outcome}"


def combine(outcomes: list[str]) -> str:
    """A claim's verdict from its comparisons' (module docstring): every part must hold."""
    if not outcomes:
        return UNDERPOWERED
    if all(o == REPRODUCED for o in outcomes):
        return REPRODUCED
    if all(o == OPPOSITE for o in outcomes):
        return OPPOSITE
    if any(o in (OPPOSITE, NOT_REPRODUCED) for o in outcomes):
        return NOT_REPRODUCED
    return UNDERPOWERED


RULE_TEXT = [
    f"Effect: a mean difference over seeds, oriented so that a positive value is the direction the paper claims; "
    f"{CONFIDENCE * 100:g} % Student t interval: paired by seed where runs pair (eps² levels at equal seeds, the two "
    "temperatures of one run), Welch's between models, one-sample against the real images (one measurement).",
    f"1. **{UNDERPOWERED}** when n < {MIN_N} (pairs, or the smaller of two groups), the metric was not measured, "
    "or any run behind the effect has not converged by the rule of bench/convergence.py (a run too short to judge "
    "or without learning curves counts as not converged); its reason then adds what the interval alone gives;",
    f"2. **{OPPOSITE}** when the whole interval lies below 0;",
    f"3. **{REPRODUCED}** when the whole interval lies above 0;",
    f"4. **{UNDERPOWERED}** when the interval spans both 0 and the paper-sized effect;",
    f"5. **{NOT_REPRODUCED}** otherwise: the interval spans 0 but excludes an effect of the paper's size.",
    f"A claim of several primary comparisons needs all of them: {REPRODUCED} when every one is, {OPPOSITE} when "
    f"every one is, {NOT_REPRODUCED} when any one is {OPPOSITE} or {NOT_REPRODUCED}, else {UNDERPOWERED}.",
]
