"""The convergence rule applied to a run's learning curves (``track_*`` columns of train_log.csv).

Rule: a run has converged when, for each judged metric, the mean over the last fifth
of its tracked epochs differs from the mean over the fifth before by at most 5 %
(relative to the earlier mean). Fewer than 10 tracked epochs cannot be judged ("too
short"). The judged metrics are the metric table's ``judged`` entries (bench.metrics.table):
Table 1's sharpness, FD-LeNet and reconstruction MSE. The corner artefact score is tracked
but not judged: for a clean model it sits near 0, where a relative change means nothing.

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
MIN_EPOCHS = 10  # tracked epochs needed to judge (two fifths of at least 2 epochs each)
CONVERGED, NOT_CONVERGED, TOO_SHORT, NOT_TRACKED = "converged", "not converged", "too short", "not tracked"


@dataclass
class Verdict:
    status: str  # CONVERGED, NOT_CONVERGED, TOO_SHORT or NOT_TRACKED
    n_epochs: int  # tracked epochs
    changes: dict[str, float] = field(default_factory=dict)  # metric -> relative change of the last fifth

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


def judge(log: pd.DataFrame, metrics: tuple[str, ...] = RULE_METRICS, tolerance: float = TOLERANCE,
          min_epochs: int = MIN_EPOCHS) -> Verdict:
    """Apply the rule to one run's train_log (columns ``epoch`` and ``track_<metric>``)."""
    cols = [column(m) for m in metrics]
    if log is None or log.empty or any(c not in log.columns for c in cols):
        return Verdict(NOT_TRACKED, 0)
    tracked = log.dropna(subset=cols, how="all").sort_values("epoch")
    n = len(tracked)
    if n == 0:
        return Verdict(NOT_TRACKED, 0)
    if n < min_epochs:
        return Verdict(TOO_SHORT, n)
    changes = {m: relative_change(tracked[c].to_numpy()) for m, c in zip(metrics, cols, strict=True)}
    ok = all(math.isfinite(d) and abs(d) <= tolerance for d in changes.values())
    return Verdict(CONVERGED if ok else NOT_CONVERGED, n, changes)


def first_converged_epoch(log: pd.DataFrame, metrics: tuple[str, ...] = RULE_METRICS) -> int | None:
    """The first epoch at whose end the rule holds on the curves up to it (None if it never does).

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
    return "; ".join(f"{m} {min(moved[m]):+.0%} to {max(moved[m]):+.0%} ({len(moved[m])} run"
                     f"{'s' if len(moved[m]) > 1 else ''})" for m in order)

