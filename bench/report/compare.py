"""``compare.md``: your results next to the committed reference and the paper, per metric.

The answer to "did I reproduce it?": for every row of Table 1 (the real data and each model)
and every Table 1 metric, three columns side by side (yours, the committed reference of the
same preset and dataset, the paper where it states the number) and a mark:

- ``identical``: every run both directories hold (same run id, so the same configuration and
  seed) has exactly the same value (with no run id in common: the same values);
- ``within``: the mean over your seeds lies within the reference's mean ± 2 sample standard
  deviations (ddof 1) over its seeds (:data:`SPREAD_SDS`);
- ``outside``: neither; ``no spread`` when the reference has a single run that differs
  (nothing to measure the spread with); ``n/a`` when either side has no finite value.

With five seeds on both sides and seed-to-seed noise that is normal, a faithful reproduction
lands outside for about 3 % of the metrics (simulated: a 5-seed mean falls within mean ± 2 sd
of 5 other seeds 96.6 % of the time). FD, KID and precision/recall are comparable only when
both sides used the same feature extractor; a different extractor id is named in the row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics import names as N
from bench.report.markdown import fmt_mean_std, fmt_num, list_text, md_table
from bench.report.paper import paper_numbers
from bench.report.selection import REAL, label, load_table, read_json, select_runs
from bench.report.table import per_run_values, table1_metrics

SPREAD_SDS = 2.0
RULE = (f"**within**: the mean over your seeds lies within the reference's mean ± {SPREAD_SDS:g} sample standard "
        "deviations over its seeds (5 seeds each and normal seed-to-seed noise: a faithful reproduction is marked "
        "outside for about 3 % of the metrics); **identical**: every run both hold (same run id: same configuration "
        "and seed) has exactly the same value (no run id in common: the same values); **outside**: neither; "
        "**no spread**: the reference has one run, and yours differs from it; **n/a**: no finite value on one side.")
FEATURE_METRICS = (N.FD_LENET, N.PRECISION, N.RECALL, N.KID_LENET)
_EXTRACTOR = re.compile(r"extractor ([0-9a-f]{12})")


def spread_mark(yours: Sequence[float], reference: Sequence[float], identical: bool = False) -> str:
    """The mark of one metric (module docstring): ``yours`` and ``reference`` are per-seed values."""
    if identical:
        return "identical"
    mine = np.asarray([v for v in yours if math.isfinite(v)], dtype=float)
    ref = np.asarray([v for v in reference if math.isfinite(v)], dtype=float)
    if not len(mine) or not len(ref):
        return "n/a"
    if len(ref) < 2:
        return "no spread"
    centre, sd = ref.mean(), ref.std(ddof=1)
    return "within" if abs(mine.mean() - centre) <= SPREAD_SDS * sd else "outside"


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _identical(mine: pd.DataFrame, ref: pd.DataFrame) -> bool:
    """Every one of your runs has exactly the value of the reference run with its id; or, with
    no run id in common (e.g. another evaluation config for the real data), the same values."""
    if not mine["value"].notna().any():
        return False
    common = mine.merge(ref, on="run_id", suffixes=("", "_ref"))
    if len(common):
        return len(common) == len(mine) and all(
            _same(a, b) for a, b in zip(common["value"], common["value_ref"], strict=True))
    a, b = sorted(mine["value"].dropna()), sorted(ref["value"].dropna())
    return len(mine) == len(ref) and a == b


def _extractors(frame: pd.DataFrame) -> list[str]:
    return sorted({m.group(1) for n in frame["note"] for m in [_EXTRACTOR.search(str(n))] if m})


@dataclass
class Side:
    """One results directory's Table 1 runs: long frame row, run_id, metric, value, note."""

    per_run: pd.DataFrame
    commits: list[str]
    presets: list[str]


def table1_side(table: pd.DataFrame, configs: dict[str, dict]) -> Side:
    """The runs Table 1 would use (``bench.report.selection``) and their per-run values."""
    sel = select_runs(table, configs)
    frames = []
    for row, runs in [(REAL, [sel.real_run] if sel.real_run else []),
                      *((m, f.query("status == 'ok'")["run_id"].tolist()) for m, f in sel.table1.items())]:
        frames.append(per_run_values(table, runs, table1_metrics()).assign(row=row))
    per_run = pd.concat(frames, ignore_index=True)
    used = table[table["run_id"].isin(per_run["run_id"])]
    return Side(per_run, sorted(used["git_commit"].dropna().astype(str).unique()),
                sorted(used["preset"].dropna().astype(str).unique()))


def compare_sides(yours: Side, reference: Side | None, has_paper: bool) -> pd.DataFrame:
    """One row per (Table 1 row, metric): yours, the reference, the paper and the mark."""
    rows = []
    ref_all = reference.per_run if reference is not None else yours.per_run.iloc[0:0]
    row_order = list(dict.fromkeys([*yours.per_run["row"], *ref_all["row"]]))
    for row in row_order:
        for metric in table1_metrics():
            mine = yours.per_run[(yours.per_run["row"] == row) & (yours.per_run["metric"] == metric)]
            ref = ref_all[(ref_all["row"] == row) & (ref_all["metric"] == metric)]
            if mine.empty and ref.empty:
                continue
            identical = _identical(mine, ref)
            if reference is None:
                mark = "no reference"
            elif mine.empty:
                mark = "not run"
            else:
                mark = spread_mark(mine["value"].tolist(), ref["value"].tolist(), identical)
            note = ""
            if metric in FEATURE_METRICS and reference is not None:
                mx, rx = _extractors(mine), _extractors(ref)
                if mx and rx and mx != rx:
                    note = f"other extractor: yours {list_text(mx)}, reference {list_text(rx)}"
            paper = paper_numbers().sharpness.get(row, math.nan) if has_paper and metric == N.SHARPNESS else math.nan
            rows.append({
                "row": label(row), "metric": metric,
                "yours_mean": _mean(mine), "yours_std": _std(mine), "yours_n": _n(mine),
                "reference_mean": _mean(ref), "reference_std": _std(ref), "reference_n": _n(ref),
                "paper": paper, "mark": mark, "note": note,
            })
    return pd.DataFrame(rows)


def _mean(f: pd.DataFrame) -> float:
    v = f["value"].dropna()
    return float(v.mean()) if len(v) else math.nan


def _n(f: pd.DataFrame) -> int:
    return int(f["value"].notna().sum())


def _std(f: pd.DataFrame) -> float:
    v = f["value"].dropna()
    return float(v.std(ddof=1)) if len(v) > 1 else math.nan


def compare_markdown(frame: pd.DataFrame, yours_dir: str, reference_dir: str | None, yours: Side,
                     reference: Side | None, has_paper: bool) -> str:
    lines = ["# Yours vs the committed reference vs the paper", ""]
    lines.append(f"- Yours: `{yours_dir}` (preset {list_text(yours.presets)}; code at commit(s) "
                 f"{list_text(yours.commits)}).")
    if reference is None:
        lines.append(f"- Reference: none committed for this preset and dataset (looked in `{reference_dir}`); "
                     "the marks need one.")
    else:
        same = set(reference.commits) == set(yours.commits)
        lines.append(f"- Reference: `{reference_dir}` (preset {list_text(reference.presets)}; committed runs of "
                     f"commit(s) {list_text(reference.commits)}" + ("" if same else
                     "; your code is another version, so numbers may also move because the code changed: "
                     f"`git diff {reference.commits[-1] if reference.commits else 'REF'} -- bench models baselines "
                     "configs`") + ").")
        shared = len(set(yours.per_run["run_id"]) & set(reference.per_run["run_id"]))
        lines.append(f"- Same run ids (same configuration and seed): {shared} of "
                     f"{yours.per_run['run_id'].nunique()} of yours.")
    lines.append("- Paper: Table 1's sharpness (the only Table 1 number the paper prints)" if has_paper
                 else "- Paper: reports MNIST only; no paper column for this dataset.")
    lines += ["", "Marks: " + RULE, ""]
    counts = frame["mark"].value_counts()
    lines += ["Summary: " + ", ".join(f"{k} {int(v)}" for k, v in counts.items()) + f" of {len(frame)} metric(s).",
              ""]
    header = ["row", "metric", "yours", "reference", "paper", "mark", "note"]
    body = [[r["row"], r["metric"], _cell(r, "yours"), _cell(r, "reference"),
             fmt_num(r["paper"], 3) if np.isfinite(r["paper"]) else "—", r["mark"], r["note"]]
            for _, r in frame.iterrows()]
    lines += [md_table(header, body), ""]
    lines += ["mean ± sample std over seeds; n = finished runs with a value. Rebuild: "
              f"`python -m bench.report --results {yours_dir} --compare-with {reference_dir}`.", ""]
    return "\n".join(lines)


def _cell(r: pd.Series, side: str) -> str:
    return fmt_mean_std(r[f"{side}_mean"], r[f"{side}_std"], r[f"{side}_n"]) + f" (n={r[f'{side}_n']})"


def _side(results: Path, dataset: str | None = None) -> tuple[Side, str]:
    """``results``' Table 1 runs of ``dataset`` (None: its first dataset) and that dataset."""
    table = load_table(results)
    names = table["dataset"].fillna("mnist").astype(str)
    dataset = dataset or (sorted(set(names)) or ["mnist"])[0]
    table = table[names == dataset]
    configs = {r: read_json(results / "runs" / r / "config.json") for r in table["run_id"].unique()
               if not r.startswith("real-")}
    return table1_side(table, configs), dataset


def build_comparison(results: Path, reference: Path) -> tuple[str, pd.DataFrame]:
    """``compare.md``'s text and its frame for ``results`` against ``reference`` (which may
    not exist: then yours and the paper only)."""
    yours, dataset = _side(results)
    ref = _side(reference, dataset)[0] if (reference / "metrics.csv").is_file() else None
    if ref is not None and ref.per_run.empty:
        ref = None
    has_paper = dataset == paper_numbers().dataset
    frame = compare_sides(yours, ref, has_paper)
    return compare_markdown(frame, str(results), str(reference), yours, ref, has_paper), frame
