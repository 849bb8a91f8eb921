"""Values of runs read from the tidy table, shared by Table 1, the mechanism page and the verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics import names as N
from bench.report.markdown import fmt_num
from bench.report.selection import Selection
from bench.results import DamageLog
from bench.rundir import read_train_log

SPLIT_PRIORITY = ("test", "val", "train")  # if a metric exists in several splits
# Code-free reconstruction baselines, measured on the real-data run (bench.evaluate_real).
REFERENCE_RECON = {N.RECON_MSE_MEAN_IMAGE: "Mean image (reference)",
                   N.RECON_MSE_CLASS_MEAN: "Class-mean image (reference)"}


def per_run_values(table: pd.DataFrame, run_ids: list[str], metrics: tuple[str, ...]) -> pd.DataFrame:
    """Long frame run_id, metric, value, note: one value per (run, metric), preferred split first."""
    rows = table[table["run_id"].isin(run_ids) & table["metric"].isin(metrics)].copy()
    rank = {s: i for i, s in enumerate(SPLIT_PRIORITY)}
    rows["_rank"] = rows["split"].map(lambda s: rank.get(s, len(rank)))
    rows = rows.sort_values("_rank", kind="stable").drop_duplicates(["run_id", "metric"])
    return rows[["run_id", "model", "seed", "metric", "value", "note"]]


def reference_recon(table: pd.DataFrame, sel: Selection) -> dict[str, float]:
    """label -> recon_mse of the code-free references (mean image, class-mean image) of the
    real-data run; absent when that run predates them."""
    if not sel.real_run:
        return {}
    vals = per_run_values(table, [sel.real_run], tuple(REFERENCE_RECON))
    return {REFERENCE_RECON[m]: float(v) for m, v in zip(vals["metric"], vals["value"], strict=True)}


def reference_rows_md(refs: dict[str, float], n_columns: int, recon_column: int) -> list[list[str]]:
    """Markdown rows with only the recon_mse cell filled (at ``recon_column``)."""
    rows = []
    for name, value in refs.items():
        cells = [f"*{name}*"] + ["—"] * (n_columns - 1)
        cells[recon_column] = fmt_num(value)
        rows.append(cells)
    return rows


def run_logs(results: Path, runs: pd.DataFrame, damage: DamageLog | None = None) -> dict[str, pd.DataFrame]:
    """run_id -> its train_log.csv (absent logs are left out; damaged ones too, named in ``damage``)."""
    out = {}
    for rid in runs["run_id"]:
        log = read_train_log(results / "runs" / rid, damage)
        if log is not None:
            out[rid] = log
    return out


def run_epochs(table: pd.DataFrame, run_ids: list[str], logs: dict[str, pd.DataFrame] | None = None,
               configs: dict[str, dict] | None = None) -> dict[str, float]:
    """run_id -> epochs trained: its ``epochs_trained`` row, else the last epoch of its
    train_log.csv (an extended run's log holds every epoch), else its config's ``train.epochs``;
    NaN when none of them says."""
    rows = per_run_values(table, list(run_ids), (N.EPOCHS_TRAINED,)).set_index("run_id")["value"]
    out = {}
    for rid in run_ids:
        value = float(rows.get(rid, np.nan))
        log = (logs or {}).get(rid)
        if not np.isfinite(value) and log is not None and "epoch" in log and log["epoch"].notna().any():
            value = float(log["epoch"].max())
        if not np.isfinite(value):
            value = float(((configs or {}).get(rid, {}).get("train") or {}).get("epochs", np.nan))
        out[rid] = value
    return out
