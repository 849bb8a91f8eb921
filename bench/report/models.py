"""``models.md``: one registered model against the others of Table 1, metric by metric, with
Welch intervals over seeds and one generated paragraph (no typed numbers).

Written for the newest model (AEF, Silvestri et al. 2022, "Deterministic training of generative
autoencoders using invertible layers") against PIE and the VAE, but every name comes from the
arguments: ``focus`` and ``against`` are registry names.

A difference whose two sides were scored by different feature extractors (the id in the notes of
``fd_lenet``, ``precision``, ...) is not computed: it would measure the extractors, not the models.
A side with unconverged runs makes the paragraph say so: its numbers then describe that training
budget, not the converged models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from bench.report import stats
from bench.report.markdown import fmt_num, md_table
from bench.report.selection import label
from bench.report.verdicts import Runs, fmt_interval, fmt_signed

FOCUS, AGAINST = "aef", ("pie", "vae")
# metric -> the better direction, or None where neither is (sharpness: more Laplacian variance can
# be detail or noise; Table 1's "Gap to real" column).
METRICS = {
    "bits_per_dim": "lower", "fd_lenet": "lower", "precision": "higher", "recall": "higher",
    "recon_mse": "lower", "probe_accuracy": "higher", "sharpness": None,
}
_EXTRACTOR = re.compile(r"extractor ([0-9a-f]{6,})")


def extractors(table: pd.DataFrame, run_ids: list[str], metric: str) -> set[str]:
    """The feature-extractor ids named in ``metric``'s notes of these runs (empty: none named)."""
    notes = table[table["run_id"].isin(run_ids) & (table["metric"] == metric)]["note"].astype(str)
    return {m.group(1) for n in notes if (m := _EXTRACTOR.search(n))}


@dataclass(frozen=True)
class Difference:
    other: str
    metric: str
    focus_values: pd.Series
    other_values: pd.Series
    interval: stats.Interval | None  # None: not computed (see ``why``)
    why: str = ""

    @property
    def reading(self) -> str:
        """What the interval says, in words: which side is better (or larger), or unresolved."""
        iv = self.interval
        if iv is None or not (pd.notna(iv.low) and pd.notna(iv.high)):
            return self.why or "no interval"
        if iv.n < stats.MIN_N:  # the verdicts' rule: fewer seeds than that judge nothing
            return f"too few seeds (n = {iv.n} < {stats.MIN_N})"
        if iv.low <= 0 <= iv.high:
            return "no difference resolved"
        better = METRICS[self.metric]
        if better is None:
            return "higher" if iv.low > 0 else "lower"
        focus_better = (iv.low > 0) == (better == "higher")
        return f"{'better' if focus_better else 'worse'} ({better} is better)"


def compare(r: Runs, focus: str = FOCUS, against: tuple[str, ...] = AGAINST) -> list[Difference]:
    """focus − other for each Table 1 metric and each other model (Welch t, 95 %)."""
    out = []
    a = r.table1(focus)
    for other in against:
        b = r.table1(other)
        for metric in METRICS:
            va, vb = r.values(a, metric), r.values(b, metric)
            ea = extractors(r.table, a["run_id"].tolist(), metric)
            eb = extractors(r.table, b["run_id"].tolist(), metric)
            if va.empty or vb.empty:
                out.append(Difference(other, metric, va, vb, None, "not measured"))
            elif ea != eb:
                why = f"not comparable: extractors {'/'.join(sorted(ea))} vs {'/'.join(sorted(eb))}"
                out.append(Difference(other, metric, va, vb, None, why))
            else:
                out.append(Difference(other, metric, va, vb, stats.welch_interval(va, vb)))
    return out


def fmt_difference(iv: stats.Interval | None) -> str:
    """``+0.12 [+0.05, +0.19], n = 5``; n is the smaller group (Welch)."""
    if iv is None:
        return "—"
    return f"{fmt_signed(iv.effect)} {fmt_interval(iv)}, n = {iv.n}"


def _mean_sd(values: pd.Series) -> str:
    if values.empty:
        return "n/a"
    if len(values) == 1:
        return fmt_num(values.mean())
    return f"{fmt_num(values.mean())} ± {fmt_num(values.std(ddof=1))} (n = {len(values)})"


def _budget(r: Runs, model: str) -> str:
    runs = r.table1(model)
    ids = runs["run_id"].tolist()
    epochs = sorted({r.epochs[i] for i in ids if i in r.epochs})
    span = "?" if not epochs else fmt_num(epochs[0]) + (f"–{fmt_num(epochs[-1])}" if len(epochs) > 1 else "")
    tracked = [i for i in ids if r.tracked.get(i, False)]
    if ids and not tracked:  # no learning curves: the rule cannot say either way
        return f"{label(model)}: {len(ids)} run(s), {span} epochs, convergence not tracked"
    return f"{label(model)}: {len(ids)} run(s), {span} epochs, {r.n_converged(ids)} of {len(ids)} converged"


def paragraph(r: Runs, diffs: list[Difference], focus: str = FOCUS, against: tuple[str, ...] = AGAINST) -> str:
    """One paragraph of prose built from ``diffs`` (every number in it comes from them)."""
    name = label(focus)
    if r.table1(focus).empty:
        return f"No finished {name} run at Table 1's settings in these results."
    parts = []
    for other in against:
        said = []
        for d in (d for d in diffs if d.other == other):
            if d.interval is None or not pd.notna(d.interval.low):
                continue
            said.append(f"{d.metric} {fmt_num(d.focus_values.mean())} vs {fmt_num(d.other_values.mean())} "
                        f"({d.reading}; difference {fmt_difference(d.interval)})")
        if said:
            parts.append(f"Against {label(other)}: " + "; ".join(said) + ".")
        else:
            parts.append(f"Against {label(other)}: no metric with an interval.")
    budgets = "; ".join(_budget(r, m) for m in (focus, *against))
    unconverged = [m for m in (focus, *against)
                   if r.n_converged(r.table1(m)["run_id"].tolist()) < len(r.table1(m))]
    caveat = (f" Runs of {', '.join(label(m) for m in unconverged)} are not all shown to have converged (the rule "
              "did not hold, or was not tracked), so these differences describe this training budget, not the "
              "converged models." if unconverged else "")
    skipped = sorted({f"{d.metric} vs {label(d.other)}" for d in diffs if d.why.startswith("not comparable")})
    skip = (f" Not compared, because the two sides were scored by different feature extractors: "
            f"{', '.join(skipped)}." if skipped else "")
    return (f"{name} − other, means over seeds, Welch 95 % interval of the difference ({budgets}). "
            + " ".join(parts) + caveat + skip)


def models_markdown(r: Runs, title: str, focus: str = FOCUS, against: tuple[str, ...] = AGAINST) -> str:
    diffs = compare(r, focus, against)
    rows = [[label(d.other), d.metric, _mean_sd(d.focus_values), _mean_sd(d.other_values),
             fmt_difference(d.interval), d.reading] for d in diffs]
    header = ["against", "metric", label(focus), "other", f"{label(focus)} − other [95 % CI], n", "reading"]
    return "\n".join([
        f"# {label(focus)} against {', '.join(label(m) for m in against)} ({title}, Table 1 runs)", "",
        "Written by `python -m bench.report` from this directory's runs (Table 1's settings, latent 8). "
        "Intervals: Welch's t over seeds (models do not pair by seed); "
        "'no difference resolved' when the interval spans 0.", "",
        paragraph(r, diffs, focus, against), "",
        md_table(header, rows), "",
    ])
