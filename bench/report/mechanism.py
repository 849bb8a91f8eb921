"""The numbers under Fig. 7 and the mechanism page (``mechanism.md``): PIE runs by their settings."""

from __future__ import annotations

import json

import pandas as pd

from bench.metrics import names as N
from bench.metrics.table import T2_SUFFIX
from bench.report.markdown import eps_label, fmt_num, md_table
from bench.report.selection import FIG7_MODEL, REAL, run_frame
from bench.report.values import REFERENCE_RECON, per_run_values, reference_rows_md, run_epochs

FIG7_NUMBERS = (N.RECON_MSE, N.PROBE_ACCURACY, N.SHARPNESS, N.SHARPNESS_T05, N.FD_LENET, N.FD_LENET + T2_SUFFIX,
                N.PRECISION, N.PRECISION + T2_SUFFIX, N.BITS_PER_DIM)


def fig7_numbers_md(table: pd.DataFrame, runs: list[tuple[float, str]], refs: dict[str, float]) -> list[str]:
    """Per eps² (``runs``: eps², the drawn run's id), the drawn run's numbers and its model
    diagnostics (``diag_*`` rows), with the code-free reconstruction references below: a
    recon_mse above them means the code helps less than predicting the mean image."""
    if not runs:
        return []
    ids = [r for _, r in runs]
    diag = sorted(m for m in table.loc[table["run_id"].isin(ids), "metric"].unique()
                  if str(m).startswith(N.DIAG_PREFIX))
    metrics = (*FIG7_NUMBERS, *diag)
    vals = per_run_values(table, ids, metrics).set_index(["run_id", "metric"])["value"]
    header = ["eps²", *metrics]
    rows = [[eps_label(e), *(fmt_num(vals.get((r, m), float("nan"))) for m in metrics)] for e, r in runs]
    rows += reference_rows_md(refs, len(header), header.index(N.RECON_MSE))
    return ["Numbers of the drawn runs (diag_*: the model's own diagnostics, `models/pie.py` "
            "`PIE.diagnostics`):", "", md_table(header, rows), ""]


def mechanism_markdown(table: pd.DataFrame, configs: dict[str, dict] | None = None,
                       logs: dict[str, pd.DataFrame] | None = None) -> str | None:
    """``mechanism.md``: every finished PIE run with diagnostics, one row each, by the ``pie.*``
    settings that differ between them (swept, or set with --set and read from each run's
    config.json) — the mechanism sweep of README "Does eps² matter?", with the epochs each run
    trained (:func:`run_epochs`: runs of different lengths share the page); None if there is none."""
    runs = run_frame(table)
    with_diag = set(table.loc[table["metric"].astype(str).str.startswith(N.DIAG_PREFIX), "run_id"])
    pie = runs[(runs["model"] == FIG7_MODEL) & (runs["status"] == "ok") & runs["run_id"].isin(with_diag)].copy()
    if pie.empty:
        return None
    settings = [(configs or {}).get(r, {}).get(FIG7_MODEL) or {} for r in pie["run_id"]]
    for key in sorted({k for s in settings for k in s}):
        values = [json.dumps(s.get(key), sort_keys=True) for s in settings]
        if len(set(values)) > 1 and f"{FIG7_MODEL}.{key}" not in pie:
            pie[f"{FIG7_MODEL}.{key}"] = [s.get(key) for s in settings]
    swept = sorted(c for c in pie.columns if c.startswith(f"{FIG7_MODEL}.") and pie[c].notna().any())
    pie = pie.sort_values([*swept, "latent_dim", "seed"], na_position="first", kind="stable")
    diag = sorted(m for m in table.loc[table["run_id"].isin(pie["run_id"]), "metric"].unique()
                  if str(m).startswith(N.DIAG_PREFIX))
    metrics = (*FIG7_NUMBERS, *diag)
    vals = per_run_values(table, pie["run_id"].tolist(), metrics).set_index(["run_id", "metric"])["value"]
    epochs = run_epochs(table, pie["run_id"].tolist(), logs, configs)
    header = ["run", *swept, "latent", "seed", "epochs", *metrics]
    rows = [[f"`{r['run_id']}`", *(str(r[c]) if not pd.isna(r[c]) else "—" for c in swept),
             fmt_num(r["latent_dim"]), str(int(r["seed"])), fmt_num(epochs[r["run_id"]]),
             *(fmt_num(vals.get((r["run_id"], m), float("nan"))) for m in metrics)] for _, r in pie.iterrows()]
    real = runs[(runs["model"] == REAL) & (runs["status"] == "ok")].sort_values("started_at")
    refs = {}
    if len(real):
        ref_vals = per_run_values(table, [real["run_id"].iloc[-1]], tuple(REFERENCE_RECON))
        refs = {REFERENCE_RECON[m]: float(v) for m, v in zip(ref_vals["metric"], ref_vals["value"], strict=True)}
    rows += reference_rows_md(refs, len(header), header.index(N.RECON_MSE))
    return "\n".join([
        "# PIE mechanism: eps², coupling and Householder ablations", "",
        "Every finished PIE run that recorded diagnostics (README \"Does eps² matter?\"). `epochs`: how many "
        "epochs the run trained (runs of different lengths share this page). `diag_resid_ratio_l<l>`: "
        "E‖r − g(z)‖² / (d·eps²) at split l in flow coordinates (near 1: the flow met eps² by scaling r); "
        "`diag_flow_logdet_per_dim`: the flow's log-det per image dimension without the input transform; "
        "`diag_recon_mse_rg`: decoding with r = g(z) (the reconstruction). The reference rows are code-free "
        "reconstructions (mean training image, class-mean image) of the real-data run.", "",
        md_table(header, rows), ""])
