"""The convergence rule applied to a run's learning curves (``track_*`` columns of train_log.csv).

Rule: a run has converged when, for each judged metric, the mean over the last fifth
of its tracked epochs differs from the mean over the fifth before by at most 5 %
(relative to the earlier mean), and this has held at each of its last ``PATIENCE`` (5)
tracked epochs, each judged on the curves up to it. A window test needs at least 10 tracked
epochs, so fewer than 10 + 5 − 1 = 14 cannot be judged ("too short"). The judged metrics are
the metric table's ``judged`` entries (bench.metrics.table): Table 1's sharpness, FD-LeNet and
reconstruction MSE. The corner artefact score is tracked but not judged: for a clean model it
sits near 0, where a relative change means nothing.

Why the patience: ``train.until_converged`` asks the rule after every epoch and stops at the
first yes, so a noisy curve that is still falling stops wherever its noise first brings two
windows within 5 % (optional stopping). PIE's learning curves did so: seed 3 of Table 1 (long
preset) met the window test at epochs 13, 19 and 29 alone and stopped at 29 with its FD still
falling (its siblings fell from ~90 to ~30 by the cap of 150). Asking for five epochs in a row
is the patience of early stopping (Prechelt 1998, "Early stopping — but when?"); the baselines'
window tests held at every epoch from 16 to 20, so they stop where they did.

Pure functions of data frames; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.metrics.table import judged_metrics
from bench.tracking import column

RULE_METRICS = judged_metrics()  # from the metric table, at import
TOLERANCE = 0.05  # largest relative change between the last two fifths
MIN_EPOCHS = 10  # tracked epochs needed for one window test (two fifths of at least 2 epochs each)
PATIENCE = 5  # the window test must hold at this many tracked epochs in a row, the last one included
CONVERGED, NOT_CONVERGED, TOO_SHORT, NOT_TRACKED = "converged", "not converged", "too short", "not tracked"


@dataclass
class Verdict:
    status: str  # CONVERGED, NOT_CONVERGED, TOO_SHORT or NOT_TRACKED
    n_epochs: int  # tracked epochs
    changes: dict[str, float] = field(default_factory=dict)  # metric -> relative change of the last fifth
    streak: int = 0  # tracked epochs in a row, the last one included, at which the window test held

    @property
    def converged(self) -> bool:
        return self.status == CONVERGED


def relative_change(values: np.ndarray | list[float]) -> float:
    """(mean of the last fifth − mean of the fifth before) / |mean of the fifth before|.

    A fifth is ``len(values) // 5`` values (at least 1). NaN in either window gives NaN;
    two all-zero windows give 0.
    """
    v = np.asarray(values, dtype=np.float64)
    k = max(1, len(v) // 5)
    if len(v) < 2 * k:
        raise ValueError(f"need at least {2 * k} values, got {len(v)}")
    last, before = v[len(v) - k:].mean(), v[len(v) - 2 * k:len(v) - k].mean()
    if not (np.isfinite(last) and np.isfinite(before)):
        return math.nan
    if before == 0:
        return 0.0 if last == 0 else math.inf
    return float((last - before) / abs(before))


def _window_changes(curves: np.ndarray, metrics: tuple[str, ...]) -> dict[str, float]:
    """Each metric's :func:`relative_change` over the rows of ``curves`` (tracked epochs × metrics)."""
    return {m: relative_change(curves[:, i]) for i, m in enumerate(metrics)}


def _within(changes: dict[str, float], tolerance: float) -> bool:
    return all(math.isfinite(d) and abs(d) <= tolerance for d in changes.values())


def judge(log: pd.DataFrame, metrics: tuple[str, ...] = RULE_METRICS, tolerance: float = TOLERANCE,
          min_epochs: int = MIN_EPOCHS, patience: int = PATIENCE) -> Verdict:
    """Apply the rule to one run's train_log (columns ``epoch`` and ``track_<metric>``): the window
    test (last fifth against the fifth before, within ``tolerance``) on the curves up to each of the
    last ``patience`` tracked epochs. ``changes`` are those of the last one."""
    cols = [column(m) for m in metrics]
    if log is None or log.empty or any(c not in log.columns for c in cols):
        return Verdict(NOT_TRACKED, 0)
    tracked = log.dropna(subset=cols, how="all").sort_values("epoch")
    n = len(tracked)
    if n == 0:
        return Verdict(NOT_TRACKED, 0)
    if n < min_epochs + patience - 1:
        return Verdict(TOO_SHORT, n)
    curves = tracked[cols].to_numpy(dtype=np.float64)
    changes = _window_changes(curves, metrics)
    streak = 0
    while streak < patience and _within(changes if streak == 0 else _window_changes(curves[:n - streak], metrics),
                                        tolerance):
        streak += 1
    return Verdict(CONVERGED if streak >= patience else NOT_CONVERGED, n, changes, streak)


def first_converged_epoch(log: pd.DataFrame, metrics: tuple[str, ...] = RULE_METRICS) -> int | None:
    """The first epoch at whose end the rule holds on the curves up to it (None if it never does):
    the last of the first ``PATIENCE`` tracked epochs in a row at which the window test held.

    The epochs to converge of a run: scanned over every epoch of its log, so a run trained
    beyond it (a fixed length, or ``train.epochs`` before the rule is first asked) still says
    when its curves settled.
    """
    if log is None or log.empty or "epoch" not in log:
        return None
    log = log.sort_values("epoch")
    for epoch in log["epoch"]:
        if judge(log[log["epoch"] <= epoch], metrics).converged:
            return int(epoch)
    return None


def summary(verdicts: list[Verdict]) -> str:
    """Table 1's ``converged`` cell: "n of m seeds", or why none could be judged."""
    if not verdicts:
        return "n/a"
    judged = [v for v in verdicts if v.status in (CONVERGED, NOT_CONVERGED)]
    if not judged:
        statuses = sorted({v.status for v in verdicts})
        return " / ".join(statuses)
    text = f"{sum(v.converged for v in judged)} of {len(verdicts)} seeds"
    unjudged = len(verdicts) - len(judged)
    return text + (f" ({unjudged} not judged)" if unjudged else "")


def unmet(verdicts: list[Verdict], tolerance: float = TOLERANCE) -> str:
    """Why judged runs missed the rule: each metric that moved more than ``tolerance``, with the
    range of its relative change over those runs ("fd_lenet −14 % to −8 % (4 runs)"); "" if none."""
    moved: dict[str, list[float]] = {}
    for v in verdicts:
        if v.status == NOT_CONVERGED:
            for metric, change in v.changes.items():
                if abs(change) > tolerance:
                    moved.setdefault(metric, []).append(change)
    order = [m for m in RULE_METRICS if m in moved] + sorted(m for m in moved if m not in RULE_METRICS)
    parts = [f"{m} {min(moved[m]):+.0%} to {max(moved[m]):+.0%} ({len(moved[m])} run{'s' if len(moved[m]) > 1 else ''})"
             for m in order]
    impatient = [v for v in verdicts if v.status == NOT_CONVERGED
                 and all(math.isfinite(d) and abs(d) <= tolerance for d in v.changes.values())]
    if impatient:
        parts.append(f"within {tolerance:.0%} at the last epoch but not {PATIENCE} in a row ({len(impatient)} run"
                     f"{'s' if len(impatient) > 1 else ''})")
    return "; ".join(parts)

