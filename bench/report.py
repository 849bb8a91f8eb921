"""Report: ``python -m bench.report --results DIR`` builds Table 1, Figure 7 and an index.

Reads only ``DIR/metrics.csv`` and the files the runner saved under ``DIR/runs/<run_id>/``
(``config.json``, ``train_log.csv``, ``figures.npz``, else ``artefacts.npz``): no checkpoints,
no models, no training. Writes ``DIR/table1.md``, ``DIR/table1.csv``, PNGs in ``DIR/figures/``
and ``DIR/index.md``. Bad input exits 2 with one line on stderr; a figure that could not be
drawn is named on stderr and makes the exit code 1 (the other outputs are still written).

The report never deletes or overwrites a figure it cannot rebuild: when a panel's inputs are
missing (e.g. a clone of results saved before ``figures.npz`` existed, whose uncommitted
``artefacts.npz`` is gone), an existing PNG of that name is kept and ``index.md`` says it
comes from an earlier build. A composite figure (the samples side by side, the Fig. 7
overview) is kept the same way when a run it shows has neither ``figures.npz`` nor
``artefacts.npz``.

Which runs are used:

- Table 1: finished runs of vae, wae and pie with latent_dim 8 and no value in any sweep
  column (PIE at its config's own eps²). If a model has runs of several configurations
  (config_hash), the one with the most finished seeds is used (ties: the newest). The
  "True" row is the ``real-*`` run whose evaluation config matches the Table 1 runs'.
- Figure 7: finished pie runs with latent_dim 10, grouped by eps² (the ``pie.eps2`` sweep
  column, else the run's config); per eps² the lowest seed is drawn.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import convergence
from bench.datasets import DATASETS, DatasetSpec
from bench.errors import UserError
from bench.figure_data import UMAP_POINTS, UMAP_SEED, load_figure_data
from bench.results import COLUMNS, TABLE, atomic_write_bytes, parse_table, runs_missing_rows, write_csv_atomic

ROWS = ("real", "vae", "wae", "pie")  # Table 1 row order
LABELS = {"real": "True", "vae": "VAE", "wae": "WAE", "pie": "PIE"}
PAPER_SHARPNESS = {"real": 0.18, "vae": 0.08, "wae": 0.07, "pie": 0.49}
TABLE1_LATENT = 8
TABLE1_METRICS = ("sharpness", "fd_lenet", "recon_mse", "bits_per_dim", "probe_accuracy", "artefact_corner")
# Artefact flag: sharper than the real digits *and* corner Laplacian energy (black in real digits,
# ~3e-4) above this fraction of the real digits' whole-image sharpness: the sharpness is artefact.
ARTEFACT_FLAG_FRACTION = 0.1
FIG7_MODEL = "pie"
FIG7_LATENT = 10
FIG7_EPS2 = (0.01, 0.1, 1.0)
EPS2_COLUMN = "pie.eps2"
SPLIT_PRIORITY = ("samples", "test", "val", "train")  # if a metric exists in several splits
DEFAULT_RECIPE = ("grey images in [0, 1], 3×3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] with no padding ('valid'), "
                  "variance of the activations per image, mean over images "
                  "(WAE reference code; Tolstikhin et al. 2018)")
PAPER_SIGN_NOTE = ("The paper prints the True row as −0.18. A variance cannot be negative and the same recipe "
                   "measures 0.1825 on the real MNIST test digits, so we read it as 0.18 (a stray minus sign).")
CONVERGENCE_RULE = (f"for each of {', '.join(convergence.RULE_METRICS)}, the mean over the last fifth of the tracked "
                    f"epochs is within {convergence.TOLERANCE:.0%} of the mean over the fifth before; at least "
                    f"{convergence.MIN_EPOCHS} tracked epochs, else 'too short'; 'not tracked' without learning curves")
# Code-free reconstruction baselines, measured on the real-data run (bench.evaluate).
REFERENCE_RECON = {"recon_mse_mean_image": "Mean image (reference)",
                   "recon_mse_class_mean_image": "Class-mean image (reference)"}
UMAP_MAX_POINTS = UMAP_POINTS  # figures.npz keeps this many test latents
UMAP_RANDOM_STATE = UMAP_SEED
FIG_DIR = "figures"


# ----------------------------------------------------------------------------- loading


def load_table(results: Path) -> pd.DataFrame:
    """The tidy table of a results directory, or UserError with one line."""
    if not results.exists():
        raise UserError(f"results directory '{results}' does not exist")
    if not results.is_dir():
        raise UserError(f"'{results}' is not a directory")
    path = results / TABLE
    if not path.is_file():
        raise UserError(f"'{results}' holds no {TABLE} (run python -m bench.run --out {results} first)")
    read = parse_table(path)  # malformed lines are left out, never read as data
    if read.broken:
        raise UserError(f"'{path}' is not a pie-bench results table ({read.broken}); "
                        f"python -m bench.run --out {results} ... rebuilds it from {results / 'runs'}")
    table = read.frame
    if read.dropped:
        print(f"warning: left out {len(read.dropped)} malformed line(s) of {path} ({read.dropped[0]})",
              file=sys.stderr)
    lagging = runs_missing_rows(results, table)
    if lagging:
        print(f"warning: {path} lacks rows of {len(lagging)} finished run(s) in {results / 'runs'} (e.g. "
              f"{lagging[0]}); re-run the same python -m bench.run command to rebuild it", file=sys.stderr)
    for col in COLUMNS:
        if col not in table.columns:
            table[col] = pd.NA
    table["run_id"] = table["run_id"].astype(str)
    table["model"] = table["model"].astype(str)
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    table["seed"] = pd.to_numeric(table["seed"], errors="coerce")
    table["latent_dim"] = pd.to_numeric(table["latent_dim"], errors="coerce")
    table["note"] = table["note"].fillna("").astype(str)
    return table


def sweep_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in COLUMNS]


def run_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run_id (the run-level columns of its first row)."""
    cols = ["run_id", "model", "seed", "status", "latent_dim", "preset", "config_hash", "git_commit", "started_at",
            *sweep_columns(table)]
    runs = table[cols].drop_duplicates("run_id").reset_index(drop=True)
    runs["started_at"] = runs["started_at"].fillna("").astype(str)
    return runs


def read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


def eval_hash(config: dict[str, Any]) -> str | None:
    """The hash the runner puts in the real-data run id (``real-<data>-<eval hash>``)."""
    if not isinstance(config.get("eval"), dict):
        return None
    return hashlib.sha256(json.dumps(config["eval"], sort_keys=True).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- formatting


def fmt_num(x: float, digits: int = 4) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def fmt_mean_std(mean: float, std: float, n: int) -> str:
    """``mean ± std`` (4 and 2 significant digits); just the mean for a single run; n/a for none."""
    if n == 0 or mean is None or not np.isfinite(mean):
        return "n/a"
    if n < 2 or std is None or not np.isfinite(std):
        return fmt_num(mean)
    return f"{fmt_num(mean)} ± {fmt_num(std, 2)}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def eps_label(eps2: float) -> str:
    return repr(float(eps2))


def _list(values) -> str:
    vals = [str(v) for v in values]
    return ", ".join(vals) if vals else "none"


# ----------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """The runs behind Table 1 and Figure 7, and what was set aside."""

    table1: dict[str, pd.DataFrame]  # model -> its chosen runs (ok and failed), one row per run
    real_run: str | None
    fig7: dict[float, pd.Series]  # eps² -> the run drawn
    fig7_all: pd.DataFrame  # all finished latent-10 PIE runs with their eps²
    notes: list[str] = field(default_factory=list)
    dataset: str = "mnist"  # the table's runs are all of this dataset (build_report splits by it)

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS[self.dataset]

    @property
    def has_paper(self) -> bool:
        """The paper reports MNIST only: its column and markers appear for MNIST alone."""
        return self.dataset == "mnist"


def _pick_config(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the config_hash with the most finished runs (ties: newest start)."""
    if runs.empty or runs["config_hash"].nunique(dropna=False) <= 1:
        return runs, []
    stats = runs.assign(ok=runs["status"] == "ok").groupby("config_hash", dropna=False).agg(
        ok=("ok", "sum"), newest=("started_at", "max"))
    best = stats.sort_values(["ok", "newest"], ascending=False).index[0]
    dropped = [str(h) for h in stats.index if h != best]
    return runs[runs["config_hash"] == best], dropped


def select_runs(table: pd.DataFrame, configs: dict[str, dict]) -> Selection:
    runs = run_frame(table)
    sweeps = sweep_columns(table)
    unswept = runs[sweeps].isna().all(axis=1) if sweeps else pd.Series(True, index=runs.index)
    notes: list[str] = []

    table1: dict[str, pd.DataFrame] = {}
    for model in ROWS[1:]:
        cand = runs[(runs["model"] == model) & (runs["latent_dim"] == TABLE1_LATENT) & unswept]
        chosen, dropped = _pick_config(cand)
        if dropped:
            notes.append(f"{LABELS[model]}: runs of other configurations were set aside (config_hash "
                         f"{_list(dropped)}); Table 1 uses config_hash {chosen['config_hash'].iloc[0]}.")
        table1[model] = chosen.sort_values("seed")

    real = runs[(runs["model"] == "real") & (runs["status"] == "ok")]
    real_run = None
    if len(real):
        wanted = [eval_hash(configs.get(r, {})) for m in table1.values() for r in m["run_id"]]
        wanted = [h for h in wanted if h]
        match = real[real["run_id"].str.split("-").str[-1].isin(wanted)] if wanted else real.iloc[0:0]
        if len(match):
            real_run = match.sort_values("started_at")["run_id"].iloc[-1]
        else:
            real_run = real.sort_values("started_at")["run_id"].iloc[-1]
            if wanted:
                notes.append(f"True row: no real-data run matches the Table 1 runs' evaluation config; "
                             f"using the newest one ({real_run}).")

    fig7_runs = runs[(runs["model"] == FIG7_MODEL) & (runs["latent_dim"] == FIG7_LATENT)
                     & (runs["status"] == "ok")].copy()
    eps_col = pd.to_numeric(fig7_runs[EPS2_COLUMN], errors="coerce") if EPS2_COLUMN in fig7_runs else \
        pd.Series(np.nan, index=fig7_runs.index)
    fig7_runs["swept"] = eps_col.notna()
    from_config = fig7_runs["run_id"].map(
        lambda r: (configs.get(r, {}).get(FIG7_MODEL) or {}).get("eps2", np.nan))
    fig7_runs["eps2"] = eps_col.fillna(pd.to_numeric(from_config, errors="coerce"))
    fig7_runs = fig7_runs.dropna(subset=["eps2"])
    fig7: dict[float, pd.Series] = {}
    for eps2, group in fig7_runs.groupby("eps2"):
        # Swept runs first, then the lowest seed, then the newest.
        group = group.assign(_unswept=~group["swept"])
        group = group.sort_values(["_unswept", "seed", "started_at"], ascending=[True, True, False])
        fig7[float(eps2)] = group.iloc[0]
    return Selection(table1, real_run, fig7, fig7_runs, notes)


# ----------------------------------------------------------------------------- Table 1


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
    for label, value in refs.items():
        cells = [f"*{label}*"] + ["—"] * (n_columns - 1)
        cells[recon_column] = fmt_num(value)
        rows.append(cells)
    return rows


@dataclass
class Table1:
    frame: pd.DataFrame  # the CSV
    per_run: pd.DataFrame  # row, run_id, seed, metric, value (for figures and checks)
    real_sharpness: float
    footnotes: list[str]
    protocol: list[str]
    metric_notes: dict[str, str]
    artefact_flags: list[str] = field(default_factory=list)
    references: dict[str, float] = field(default_factory=dict)  # label -> recon_mse, reference_recon


def run_logs(results: Path, runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """run_id -> its train_log.csv (unreadable or absent logs are left out)."""
    out = {}
    for rid in runs["run_id"]:
        try:
            out[rid] = pd.read_csv(results / "runs" / rid / "train_log.csv")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
    return out


def artefact_flags(frame: pd.DataFrame) -> list[str]:
    """Models sharper than the real digits whose corner artefact score is large (see ARTEFACT_FLAG_FRACTION)."""
    real = frame[frame["model"] == "real"]
    if real.empty or not np.isfinite(real["sharpness_mean"].iloc[0]):
        return []
    real_sharp = float(real["sharpness_mean"].iloc[0])
    real_art = real["artefact_corner_mean"].iloc[0]
    flags = []
    for _, r in frame[frame["model"] != "real"].iterrows():
        limit = ARTEFACT_FLAG_FRACTION * real_sharp
        if r["sharpness_mean"] > real_sharp and r["artefact_corner_mean"] > limit:
            flags.append(f"{r['row']}: sharpness {fmt_num(r['sharpness_mean'])} exceeds the real digits' "
                         f"{fmt_num(real_sharp)}, but its corner artefact score is "
                         f"{fmt_num(r['artefact_corner_mean'])} (real digits {fmt_num(real_art)}; flag above "
                         f"{fmt_num(limit)}): "
                         "the extra Laplacian energy is pattern where real digits are black, not detail.")
    return flags


def build_table1(table: pd.DataFrame, sel: Selection, configs: dict[str, dict],
                 logs: dict[str, pd.DataFrame] | None = None) -> Table1:
    row_runs: dict[str, list[str]] = {m: sel.table1[m].query("status == 'ok'")["run_id"].tolist()
                                      for m in ROWS[1:]}
    row_runs["real"] = [sel.real_run] if sel.real_run else []
    per_run = []
    for row in ROWS:
        vals = per_run_values(table, row_runs[row], TABLE1_METRICS)
        per_run.append(vals.assign(row=row))
    per_run = pd.concat(per_run, ignore_index=True)

    real_vals = per_run[(per_run["row"] == "real") & (per_run["metric"] == "sharpness")]["value"].dropna()
    real_sharpness = float(real_vals.mean()) if len(real_vals) else float("nan")
    sharp = per_run[per_run["metric"] == "sharpness"]
    gap = sharp[sharp["row"] != "real"].assign(metric="gap_to_real", value=lambda f: f["value"] - real_sharpness)
    per_run = pd.concat([per_run, gap], ignore_index=True)

    footnotes: list[str] = []
    records = []
    for row in ROWS:
        runs = sel.table1.get(row)
        rec: dict[str, Any] = {"row": LABELS[row], "model": row, "n_runs": len(row_runs[row])}
        rec["n_failed"] = int((runs["status"] != "ok").sum()) if runs is not None else 0
        rec["seeds"] = " ".join(str(int(s)) for s in runs.query("status == 'ok'")["seed"].dropna()) \
            if runs is not None else ""
        for metric in ("sharpness", "gap_to_real", *TABLE1_METRICS[1:]):
            v = per_run[(per_run["row"] == row) & (per_run["metric"] == metric)]
            vals = v["value"]
            rec[f"{metric}_mean"] = float(vals.mean()) if vals.notna().any() else float("nan")
            rec[f"{metric}_std"] = float(vals.std()) if vals.notna().sum() > 1 else float("nan")
            rec[f"{metric}_n"] = int(vals.notna().sum())
            nan_notes = sorted({n for n in v.loc[vals.isna(), "note"] if n})
            if nan_notes:
                footnotes.append(f"{LABELS[row]} {metric}: " + "; ".join(nan_notes))
            if metric == "sharpness":
                rec["paper_sharpness"] = PAPER_SHARPNESS[row] if sel.has_paper else float("nan")
        rec["run_ids"] = " ".join(row_runs[row])
        # the convergence rule on each finished run's learning curves (bench.convergence)
        rec["converged"] = "—" if row == "real" else convergence.summary(
            [convergence.judge((logs or {}).get(r)) for r in row_runs[row]])
        records.append(rec)
    frame = pd.DataFrame(records)
    order = ["row", "model", "n_runs", "n_failed", "seeds", "sharpness_mean", "sharpness_std", "sharpness_n",
             "paper_sharpness"]
    frame = frame[order + [c for c in frame.columns if c not in order]]
    flags = artefact_flags(frame)
    frame["artefact_flag"] = [any(f.startswith(f"{r}:") for f in flags) for r in frame["row"]]

    metric_notes = {}  # each model's most common note (one text if all agree), else the real-data row's
    for metric in TABLE1_METRICS:
        rows = per_run[(per_run["metric"] == metric) & (per_run["note"] != "") & per_run["value"].notna()]
        models = rows[rows["row"] != "real"]
        per_model = {r: models[models["row"] == r]["note"].value_counts().index[0]
                     for r in ROWS[1:] if (models["row"] == r).any()}
        if len(set(per_model.values())) == 1:
            metric_notes[metric] = next(iter(per_model.values()))
        elif per_model:
            metric_notes[metric] = "; ".join(f"{LABELS[r]}: {n}" for r, n in per_model.items())
        elif len(rows):
            metric_notes[metric] = rows["note"].value_counts().index[0]
    return Table1(frame, per_run, real_sharpness, footnotes, protocol_lines(table, sel, configs, metric_notes),
                  metric_notes, flags, reference_recon(table, sel))


def _env_info(configs: list[dict]) -> str:
    """Device and torch version as each run's config.json records them (bench.run writes both)."""
    found = {k: sorted({str(c[k]) for c in configs if c.get(k) is not None}) for k in ("device", "torch_version")}
    if not any(found.values()):
        return "not recorded in the run records (see each run's config.json)"
    return "; ".join(f"{k} {', '.join(v)}" for k, v in found.items() if v)


def protocol_lines(table: pd.DataFrame, sel: Selection, configs: dict[str, dict],
                   metric_notes: dict[str, str]) -> list[str]:
    run_ids = [r for m in sel.table1.values() for r in m["run_id"]]
    cfgs = [configs[r] for r in run_ids if r in configs]
    ev = [c.get("eval", {}) for c in cfgs]
    n_samples = sorted({e.get("n_samples") for e in ev if e.get("n_samples") is not None})
    test_subset = sorted({e.get("test_subset") for e in ev if e.get("test_subset") is not None})
    test_text = _list(["10000 (all)" if t == 0 else t for t in test_subset]) if test_subset else "see config"
    rows = table[table["run_id"].isin(run_ids)]
    presets = sorted(rows["preset"].dropna().astype(str).unique())
    commits = sorted(rows["git_commit"].dropna().astype(str).unique())
    seeds = {LABELS[m]: " ".join(str(int(s)) for s in f.query("status == 'ok'")["seed"].dropna())
             for m, f in sel.table1.items()}
    lines = [
        f"Latent dimension {TABLE1_LATENT} for VAE, WAE and PIE (the paper: \"a sample of 8 dimensions\"); "
        "runs of the default configuration (no sweep).",
        f"Generated samples per run for the sample metrics: {_list(n_samples) if n_samples else 'see config'} "
        "(the paper: 10 000); test images for reconstruction/probe/True row: " + test_text + ".",
        "Sharpness recipe: " + metric_notes.get("sharpness", DEFAULT_RECIPE).rstrip(".") + ".",
        f"Preset: {_list(presets)}; seeds: " + "; ".join(f"{k} {v or 'none'}" for k, v in seeds.items()) + ".",
        "mean ± std over seeds (sample std, ddof 1); a single run shows its value alone; n/a = not recorded.",
        "Device / torch: " + _env_info(cfgs) + f"; git commit(s): {_list(commits)}.",
        f"Gap to real = model sharpness − sharpness of the real test {sel.spec.item}s (same recipe); above 0 means "
        f"more Laplacian variance than real {sel.spec.item}s, which can be detail or noise (added noise raises the "
        "score).",
    ]
    if sel.has_paper:
        lines.append(PAPER_SIGN_NOTE)
    return lines


def table1_markdown(t1: Table1, sel: Selection, heading: str = "#", up: str = "") -> str:
    """``up``: the path from the page to the results directory ("../" for a dataset's subfolder)."""
    header = ["", "n", "Sharpness", "Paper", "Gap to real", *TABLE1_METRICS[1:], "converged"]
    rows = []
    for _, r in t1.frame.iterrows():
        n = f"{r['n_runs']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "")
        gap = "—" if r["model"] == "real" else fmt_mean_std(r["gap_to_real_mean"], r["gap_to_real_std"],
                                                             r["gap_to_real_n"])
        cells = [f"**{r['row']}**", n, fmt_mean_std(r["sharpness_mean"], r["sharpness_std"], r["sharpness_n"]),
                 fmt_num(r["paper_sharpness"], 3), gap]
        cells += [fmt_mean_std(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"]) for m in TABLE1_METRICS[1:]]
        cells.append(r["converged"])
        if not sel.has_paper:
            del cells[3]
        rows.append(cells)
    if not sel.has_paper:
        header.remove("Paper")
    rows += reference_rows_md(t1.references, len(header), header.index("recon_mse"))
    what = "MNIST digits" if sel.dataset == "mnist" else f"{sel.spec.title} images"
    parts = [f"{heading} Table 1: sharpness of generated {what} (latent {TABLE1_LATENT})", "",
             "Protocol:", ""]
    parts += [f"- {line}" for line in t1.protocol]
    parts += ["", md_table(header, rows), ""]
    parts += [f"converged: runs meeting the convergence rule ({CONVERGENCE_RULE}).", ""]
    if t1.artefact_flags:
        parts += ["**Artefact flag** (sharper than real digits with a large corner artefact score):", ""]
        parts += [f"- {f}" for f in t1.artefact_flags] + [""]
    else:
        parts += ["Artefact check: no model is both sharper than the real digits and above the corner artefact "
                  f"threshold ({ARTEFACT_FLAG_FRACTION:g} × the real digits' sharpness).", ""]
    if t1.metric_notes:
        parts += ["Metrics (as recorded by the runner):", ""]
        parts += [f"- `{k}`: {v}" for k, v in t1.metric_notes.items()]
        parts.append("")
    if t1.footnotes:
        parts += ["n/a with a reason:", ""] + [f"- {f}" for f in t1.footnotes] + [""]
    if sel.notes:
        parts += ["Selection notes:", ""] + [f"- {n}" for n in sel.notes] + [""]
    parts.append(f"Machine-readable: [table1.csv](table1.csv); every row of every run: [metrics.csv]({up}metrics.csv).")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- figures


@dataclass
class Output:
    name: str  # path relative to the results dir
    title: str
    caption: str = ""
    missing: str = ""  # reason, when the figure could not be drawn from the inputs
    kept: str = ""  # reason, when the inputs are missing and the PNG of an earlier build was kept


class Report:
    """Collects outputs, missing panels and errors while the figures are drawn."""

    def __init__(self, results: Path, out: Path | None = None, dataset: str = "mnist"):
        self.results = results  # where the runs are read
        self.out = out or results  # where the pages and figures go (a subfolder per non-MNIST dataset)
        self.dataset = DATASETS[dataset]
        self.fig_dir = self.out / FIG_DIR
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self.errors: list[str] = []
        self.drawn: list[str] = []
        self.kept: list[str] = []

    def draw(self, name: str, title: str, caption: str, fn: Callable[[Path], Any]) -> Output:
        path = self.fig_dir / name
        try:
            fn(path)
        except Exception as e:  # a figure bug must not lose the table and the other figures
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            self.errors.append(f"{FIG_DIR}/{name}: {msg}")
            return Output(f"{FIG_DIR}/{name}", title, caption, missing=f"could not be drawn ({msg})")
        self.drawn.append(f"{FIG_DIR}/{name}")
        return Output(f"{FIG_DIR}/{name}", title, caption)

    def keep(self, name: str, title: str, caption: str, why: str) -> Output | None:
        """The existing PNG ``name``, left untouched because its inputs are missing; None if there is none."""
        if not (self.fig_dir / name).is_file():
            return None
        self.kept.append(f"{FIG_DIR}/{name}")
        return Output(f"{FIG_DIR}/{name}", title, caption, kept=why)


def _grid_size(config: dict, n: int) -> int:
    g = (config.get("eval") or {}).get("grid_size")
    if isinstance(g, int) and g > 0 and g * g <= max(n, 1) * 4:
        return g
    return max(1, int(math.ceil(math.sqrt(max(n, 1)))))


def _second_temperature_text(config: dict) -> str:
    ev = config.get("eval") or {}
    t = ev.get("second_temperature")
    kind = ev.get("second_temperature_is")
    if not isinstance(t, int | float):
        return "the paper's second temperature, N(0, 0.5)"
    if kind == "variance":
        return f"z ~ N(0, {t:g}) with {t:g} read as a variance (std {math.sqrt(t):.3g})"
    if kind == "std":
        return f"z ~ N(0, {t:g}²): {t:g} read as a std"
    return f"z ~ N(0, {t:g})"


@dataclass
class Fig7Entry:
    eps2: float
    run: pd.Series | None
    panels: list[Output]
    overview: list[tuple]  # for plots.fig7_overview
    unavailable: str = ""  # why the run's figures.npz / artefacts.npz could not be read, if so


FIG7_ARRAYS = ("recon_inputs", "recon_outputs", "samples_t1", "samples_t2", "interpolations", "test_latents",
               "test_labels")


PANELS = (("a", "reconstructions"), ("b", "samples_t1"), ("c", "samples_t2"), ("d", "interpolations"),
          ("e", "umap"))


def build_fig7(rep: Report, sel: Selection, configs: dict[str, dict], umap_points: int) -> list[Fig7Entry]:
    """Figure 7 panels for each eps² in the paper's list and any other one found."""
    entries = []
    for eps2 in sorted(set(FIG7_EPS2) | set(sel.fig7)):
        run = sel.fig7.get(eps2)
        if run is None:
            reason = f"no finished pie run with latent_dim {FIG7_LATENT} and eps² = {eps_label(eps2)}"
            panels = [rep.keep(fig7_name(eps2, letter, what), f"({letter})", "", reason)
                      or Output(f"{FIG_DIR}/{fig7_name(eps2, letter, what)}", f"({letter})", missing=reason)
                      for letter, what in PANELS]
            entries.append(Fig7Entry(eps2, None, panels, [("missing", reason, f"({x})") for x, _ in PANELS]))
        else:
            entries.append(fig7_entry(rep, eps2, run, configs.get(run["run_id"], {}), umap_points))
    return entries


def fig7_name(eps2: float, letter: str, what: str) -> str:
    return f"fig7_eps2-{eps_label(eps2)}_{letter}_{what}.png"


def fig7_entry(rep: Report, eps2: float, run: pd.Series, cfg: dict, umap_points: int) -> Fig7Entry:
    """The five panels of one eps² from one run's figure arrays; an absent array keeps the panel of an
    earlier build if there is one, else gives a 'missing' panel."""
    from bench import plots

    rid = run["run_id"]
    arrays, err = load_figure_data(rep.results / "runs" / rid, FIG7_ARRAYS)
    head = f"PIE, eps² = {eps_label(eps2)}, seed {int(run['seed'])}"
    panels: list[Output] = []
    overview: list[tuple] = []

    def absent(*keys: str) -> str:
        gone = [k for k in keys if k not in arrays]
        return (err or f"{', '.join(gone)} not in runs/{rid}/figures.npz or artefacts.npz") if gone else ""

    def grid_panel(letter: str, what: str, title: str, short: str, keys: tuple[str, ...],
                   images: Callable[[], np.ndarray], nrow: Callable[[], int]) -> None:
        name = fig7_name(eps2, letter, what)
        why = absent(*keys)
        if why:
            panels.append(rep.keep(name, title, "", why) or Output(f"{FIG_DIR}/{name}", title, missing=why))
            overview.append(("missing", why, short))
            return
        imgs, k = images(), nrow()
        panels.append(rep.draw(name, title, "", lambda p: plots.save_image_grid(imgs, p, k, f"{head}\n{title}")))
        overview.append(("grid", plots.make_grid(imgs, k), short))

    def recon_row_len() -> int:  # twice the sample grid's width: half as many alternating rows
        n = min(len(arrays["recon_inputs"]), len(arrays["recon_outputs"]))
        return max(1, min(2 * _grid_size(cfg, n), n))

    grid_panel("a", "reconstructions", "(a) test images (rows 1, 3, …) and their reconstructions (rows 2, 4, …)",
               "(a) reconstructions", ("recon_inputs", "recon_outputs"),
               lambda: plots.alternate_rows(plots.as_images(arrays["recon_inputs"]),
                                            plots.as_images(arrays["recon_outputs"]), recon_row_len()),
               recon_row_len)
    grid_panel("b", "samples_t1", "(b) samples, z ~ N(0, I) (T = 1)", "(b) samples T = 1", ("samples_t1",),
               lambda: arrays["samples_t1"], lambda: _grid_size(cfg, len(arrays["samples_t1"])))
    grid_panel("c", "samples_t2", f"(c) samples, {_second_temperature_text(cfg)}", "(c) second temperature",
               ("samples_t2",), lambda: arrays["samples_t2"], lambda: _grid_size(cfg, len(arrays["samples_t2"])))
    grid_panel("d", "interpolations", "(d) linear interpolation in z between two test images per row",
               "(d) interpolations", ("interpolations",), lambda: arrays["interpolations"],
               lambda: plots.interpolation_steps(len(arrays["interpolations"]),
                                                 (cfg.get("eval") or {}).get("interp_steps")))

    name = fig7_name(eps2, "e", "umap")
    title = f"(e) UMAP of the test latents, coloured by {rep.dataset.item}"
    why = absent("test_latents", "test_labels")
    if not why:
        try:
            emb, labels = plots.umap_embedding(arrays["test_latents"], arrays["test_labels"], umap_points,
                                               UMAP_RANDOM_STATE)
        except Exception as e:  # reported on stderr and in the index, not fatal
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            rep.errors.append(f"{FIG_DIR}/{name}: {msg}")
            why = f"UMAP failed ({msg})"
    if why:
        panels.append(rep.keep(name, title, "", why) or Output(f"{FIG_DIR}/{name}", title, missing=why))
        overview.append(("missing", why, "(e) UMAP"))
    else:
        title = f"{title} ({len(emb)} points, random_state {UMAP_RANDOM_STATE})"
        panels.append(rep.draw(name, title, "",
                               lambda p: plots.umap_figure(emb, labels, p, f"{head}\n{title}", rep.dataset)))
        overview.append(("umap", (emb, labels), "(e) UMAP"))
    return Fig7Entry(eps2, run, panels, overview, err)
def training_logs(results: Path, sel: Selection) -> tuple[pd.DataFrame, list[str]]:
    """Long frame of train/val loss per epoch for the Table 1 runs (by model) and the Fig. 7 runs."""
    frames = []
    panels = []
    jobs = [(f"{LABELS[m]} (Table 1, latent {TABLE1_LATENT})", f.query("status == 'ok'"), "seed")
            for m, f in sel.table1.items()]
    jobs.append((f"PIE (Fig. 7, latent {FIG7_LATENT})", sel.fig7_all, "eps2"))
    for panel, runs, hue in jobs:
        panels.append(panel)
        for _, run in runs.iterrows():
            path = results / "runs" / run["run_id"] / "train_log.csv"
            try:
                log = pd.read_csv(path)
            except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
                continue
            if "epoch" not in log:
                continue
            hue_val = f"eps² {eps_label(run['eps2'])}" if hue == "eps2" else f"seed {int(run['seed'])}"
            for col, curve in (("train_loss", "train"), ("val_loss", "val")):
                if col in log:
                    frames.append(pd.DataFrame({"panel": panel, "epoch": log["epoch"],
                                                "loss": pd.to_numeric(log[col], errors="coerce"),
                                                "curve": curve, "hue": hue_val if hue == "eps2" else "",
                                                "run_id": run["run_id"]}))
    logs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["panel", "epoch", "loss", "curve", "hue", "run_id"])
    return logs, panels


def tracking_frame(logs: dict[str, pd.DataFrame], sel: Selection) -> tuple[pd.DataFrame, dict[str, float]]:
    """Long frame model, seed, epoch, metric, value of the Table 1 runs' learning curves, and the
    real data's value of each tracked metric at the same sample size (mean over the runs' logs)."""
    from bench.tracking import REAL_PREFIX, TRACKED, column

    frames, real = [], {}
    for model, runs in sel.table1.items():
        for _, run in runs.query("status == 'ok'").iterrows():
            log = logs.get(run["run_id"])
            if log is None or "epoch" not in log:
                continue
            for metric in TRACKED:
                if column(metric) in log:
                    frames.append(pd.DataFrame({"model": LABELS[model], "seed": run["seed"], "epoch": log["epoch"],
                                                "metric": metric,
                                                "value": pd.to_numeric(log[column(metric)], errors="coerce")}))
                if f"{REAL_PREFIX}{metric}" in log:
                    real.setdefault(metric, []).extend(pd.to_numeric(log[f"{REAL_PREFIX}{metric}"],
                                                                     errors="coerce").dropna().tolist())
    frame = pd.concat(frames, ignore_index=True).dropna(subset=["value"]) if frames else pd.DataFrame(
        columns=["model", "seed", "epoch", "metric", "value"])
    return frame, {m: float(np.mean(v)) for m, v in real.items() if v}


def build_figures(rep: Report, table: pd.DataFrame, sel: Selection, t1: Table1, configs: dict[str, dict],
                  umap_points: int, run_logs_by_id: dict[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    from bench import plots

    out: dict[str, Any] = {}
    # Bar chart of Table 1 sharpness.
    sharp = t1.per_run[t1.per_run["metric"] == "sharpness"].dropna(subset=["value"])
    per_run = sharp.assign(row=sharp["row"].map(LABELS))[["row", "value"]]
    paper = {LABELS[k]: v for k, v in PAPER_SHARPNESS.items()} if sel.has_paper else {}
    item = rep.dataset.item
    out["bars"] = rep.draw(
        "table1_sharpness.png", "Table 1 sharpness: this reproduction vs the paper" if paper else
        f"Table 1 sharpness on {rep.dataset.title}",
        "Bars: mean over seeds, whiskers ± std, dots: single runs; "
        + ("red diamonds: the paper's Table 1; " if paper else "")
        + f"dashed: the real test {item}s measured here.",
        lambda p: plots.sharpness_bars(per_run, paper, p, t1.real_sharpness, [LABELS[r] for r in ROWS],
                                       rep.dataset))

    # VAE, WAE, PIE samples side by side (lowest seed of the Table 1 runs).
    entries = []
    unavailable = []  # runs whose figure arrays are gone: keep the earlier picture rather than lose it
    for model in ROWS[1:]:
        ok = sel.table1[model].query("status == 'ok'")
        if ok.empty:
            entries.append({"title": LABELS[model], "samples": None, "reason": "no finished Table 1 run"})
            continue
        run = ok.sort_values("seed").iloc[0]
        arrays, err = load_figure_data(rep.results / "runs" / run["run_id"], ("samples_t1",))
        if err:
            unavailable.append(err)
        vals = t1.per_run[(t1.per_run["run_id"] == run["run_id"]) & (t1.per_run["metric"] == "sharpness")]
        this = fmt_num(vals["value"].iloc[0]) if len(vals) else "n/a"
        row = t1.frame[t1.frame["model"] == model].iloc[0]
        mean = fmt_mean_std(row["sharpness_mean"], row["sharpness_std"], row["sharpness_n"])
        title = f"{LABELS[model]}, seed {int(run['seed'])}: sharpness {this}\n(all seeds: {mean}, n={row['n_runs']})"
        entries.append({"title": title, "samples": arrays.get("samples_t1"),
                        "reason": err or "samples_t1 not in figures.npz or artefacts.npz"})
    side = ("samples_vae_wae_pie.png", "Samples of VAE, WAE and PIE (T = 1, latent 8)",
            "Lowest seed of each model's Table 1 runs; the title gives that run's sharpness and the "
            "mean ± std over all seeds.")
    out["side"] = (unavailable and rep.keep(*side, "; ".join(unavailable))) or \
        rep.draw(*side, lambda p: plots.samples_side_by_side(entries, p))

    # Figure 7.
    fig7 = build_fig7(rep, sel, configs, umap_points)
    out["fig7"] = fig7
    rows = [{"label": f"eps² = {eps_label(e.eps2)}", "panels": e.overview} for e in fig7]
    overview = ("fig7_overview.png", "Figure 7 overview: PIE at latent 10, one row per eps²",
                "Columns as in the paper: (a) test images / reconstructions in alternating rows, (b) samples at "
                "T = 1, (c) samples at the second temperature, (d) interpolations, (e) UMAP of the test latents.")
    unavailable = [e.unavailable for e in fig7 if e.unavailable]
    out["fig7_overview"] = (unavailable and rep.keep(*overview, "; ".join(unavailable))) or \
        rep.draw(*overview, lambda p: plots.fig7_overview(rows, p, rep.dataset))

    # Training curves.
    logs, panels = training_logs(rep.results, sel)
    out["curves"] = rep.draw(
        "training_curves.png", "Training curves",
        "Train loss (mean over each epoch) and validation loss vs epoch; Table 1 panels average over seeds "
        "(band: ± std), the Fig. 7 panel has one line per eps². Loss units differ by model (VAE: negative ELBO, "
        "WAE: cost + λ·MMD, PIE: negative Eq. 17 log-likelihood as the model reports it).",
        lambda p: plots.training_curves(logs, p, panels))

    # Learning curves of Table 1's metrics (bench.tracking) and the convergence rule.
    from bench.tracking import TRACKED

    curves, real = tracking_frame(run_logs_by_id or {}, sel)
    out["convergence"] = rep.draw(
        "convergence.png", "Convergence: Table 1's metrics against the epoch",
        "Measured after each tracked epoch on fixed inputs (eval.track_samples latent draws at T = 1 and as many "
        "validation images); line: mean over seeds, band: ± std; dashed: the real digits at the same sample size "
        f"(validation images as samples). Table 1's converged column applies the rule: {CONVERGENCE_RULE}.",
        lambda p: plots.convergence_curves(curves, real, p, TRACKED))
    return out


# ----------------------------------------------------------------------------- index


def _figure_md(o: Output, heading: str = "###") -> list[str]:
    lines = [f"{heading} {o.title}", ""]
    if o.missing:
        lines += [f"**missing**: {o.missing}", ""]
    else:
        lines += [f"![{o.title}]({o.name})", "", f"[{o.name}]({o.name})" + (f": {o.caption}" if o.caption else ""),
                  ""]
    if o.kept:
        lines += [f"**from an earlier build** (not redrawn: {o.kept}).", ""]
    return lines


def index_markdown(results: Path, table: pd.DataFrame, sel: Selection, t1: Table1, figs: dict[str, Any],
                   errors: list[str], up: str = "", others: list[tuple[str, str]] | None = None) -> str:
    """``up``: path from the page to ``results``; ``others``: pages of the other datasets in ``results``."""
    runs = run_frame(table)
    n_ok = int((runs["status"] == "ok").sum())
    failed = runs[runs["status"] != "ok"]
    lines = [
        f"# pie-bench report: PIE vs VAE vs WAE-MMD on {sel.spec.title}",
        "",
        "Reproduction of Table 1 and Figure 7 of *PIE: Pseudo-Invertible Encoder* (ICLR 2019 submission). "
        f"Built by `python -m bench.report --results {results.name}` from `metrics.csv` and the artefacts the "
        "runs saved (no checkpoints, no retraining). "
        f"{len(runs)} run(s) in the table: {n_ok} finished, {len(failed)} failed.",
        "",
        "Contents: [Table 1](#table-1) · [Figure 7](#figure-7) · [Training curves](#training-curves) · "
        "[Runs used](#runs-used)",
        "",
        '<a id="table-1"></a>',
        "",
    ]
    if others:
        lines[4:4] = ["Other datasets in this results directory: "
                      + " · ".join(f"[{DATASETS[d].title}]({up}{page})" for d, page in others), ""]
    lines += [table1_markdown(t1, sel, heading="##", up=up).rstrip(), "",
              "Also as its own page: [table1.md](table1.md).", ""]
    lines += _figure_md(figs["bars"])
    lines += _figure_md(figs["side"])
    lines += ['<a id="figure-7"></a>', "", f"## Figure 7: PIE at latent {FIG7_LATENT}, eps² ∈ "
              f"{{{', '.join(eps_label(e) for e in FIG7_EPS2)}}}", "",
              "The paper's Fig. 7 per eps² (a variance): (a) test images and reconstructions, (b) samples at T = 1, "
              "(c) samples at the second temperature, (d) linear interpolations in z between pairs of test images, "
              f"(e) UMAP of the test latents coloured by {sel.spec.item}. All images are decoded from z.", ""]
    lines += _figure_md(figs["fig7_overview"])
    lines += fig7_numbers_md(table, figs["fig7"], t1.references)
    for entry in figs["fig7"]:
        lines += [f"### eps² = {eps_label(entry.eps2)}", ""]
        if entry.run is None:
            kept = [o for o in entry.panels if o.kept]
            lines += [f"**missing**: {entry.panels[0].missing or entry.panels[0].kept}", ""]
            for o in kept:
                lines += _figure_md(o, heading="####")
            continue
        lines += [f"Run `{entry.run['run_id']}` (seed {int(entry.run['seed'])}; "
                  f"[config]({up}runs/{entry.run['run_id']}/config.json)).", ""]
        for o in entry.panels:
            lines += _figure_md(o, heading="####")
    lines += ['<a id="training-curves"></a>', "", "## Training curves", ""]
    lines += _figure_md(figs["curves"], heading="###")
    lines += _figure_md(figs["convergence"], heading="###")
    lines += ['<a id="runs-used"></a>', "", "## Runs used", ""]
    used = []
    for model, frame in sel.table1.items():
        for _, r in frame.iterrows():
            used.append([f"`{r['run_id']}`", LABELS[model], str(int(r["seed"])) if pd.notna(r["seed"]) else "",
                         f"Table 1 (latent {TABLE1_LATENT})", str(r["status"])])
    if sel.real_run:
        used.append([f"`{sel.real_run}`", "True", "", f"Table 1 (real test {sel.spec.item}s)", "ok"])
    for _, r in sel.fig7_all.sort_values(["eps2", "seed"]).iterrows():
        drawn = any(e.run is not None and e.run["run_id"] == r["run_id"] for e in figs["fig7"])
        used.append([f"`{r['run_id']}`", "PIE", str(int(r["seed"])),
                     f"Fig. 7, eps² = {eps_label(r['eps2'])}" + (" (drawn)" if drawn else ""), str(r["status"])])
    lines += [md_table(["run", "model", "seed", "used for", "status"], used) if used else "No runs selected.", ""]
    if len(failed):
        lines += ["Failed runs (not in any mean):", ""]
        for _, r in failed.iterrows():
            reason = table[(table["run_id"] == r["run_id"]) & (table["metric"] == "failed")]["note"]
            lines.append(f"- `{r['run_id']}`: {reason.iloc[0] if len(reason) else 'no reason recorded'}")
        lines.append("")
    if errors:
        lines += ["## Problems while drawing", ""] + [f"- {e}" for e in errors] + [""]
    if mechanism_markdown(table) is not None:
        lines += ["PIE runs with diagnostics, one row each (eps², coupling, Householder ablations): "
                  "[mechanism.md](mechanism.md).", ""]
    lines += ["Every run's own records: `runs/<run_id>/` (config.json, train_log.csv, metrics.csv, samples.png, "
              "figures.npz; artefacts.npz is not committed). Rebuild this page: "
              "`python -m bench.report --results DIR`.", ""]
    return "\n".join(lines)


FIG7_NUMBERS = ("recon_mse", "probe_accuracy", "sharpness", "fd_lenet", "bits_per_dim")


def fig7_numbers_md(table: pd.DataFrame, entries: list[Fig7Entry], refs: dict[str, float]) -> list[str]:
    """Per eps², the drawn run's numbers and its model diagnostics (``diag_*`` rows), with the
    code-free reconstruction references below: a recon_mse above them means the code helps
    less than predicting the mean image."""
    runs = [(e.eps2, e.run["run_id"]) for e in entries if e.run is not None]
    if not runs:
        return []
    ids = [r for _, r in runs]
    diag = sorted(m for m in table.loc[table["run_id"].isin(ids), "metric"].unique() if str(m).startswith("diag_"))
    metrics = (*FIG7_NUMBERS, *diag)
    vals = per_run_values(table, ids, metrics).set_index(["run_id", "metric"])["value"]
    header = ["eps²", *metrics]
    rows = [[eps_label(e), *(fmt_num(vals.get((r, m), float("nan"))) for m in metrics)] for e, r in runs]
    rows += reference_rows_md(refs, len(header), header.index("recon_mse"))
    return ["Numbers of the drawn runs (diag_*: the model's own diagnostics, `models/pie.py` "
            "`PIE.diagnostics`):", "", md_table(header, rows), ""]


def mechanism_markdown(table: pd.DataFrame, configs: dict[str, dict] | None = None) -> str | None:
    """``mechanism.md``: every finished PIE run with diagnostics, one row each, by the ``pie.*``
    settings that differ between them (swept, or set with --set and read from each run's
    config.json) — the mechanism sweep of README "Does eps² matter?"; None if there is none."""
    runs = run_frame(table)
    with_diag = set(table.loc[table["metric"].astype(str).str.startswith("diag_"), "run_id"])
    pie = runs[(runs["model"] == "pie") & (runs["status"] == "ok") & runs["run_id"].isin(with_diag)].copy()
    if pie.empty:
        return None
    settings = [(configs or {}).get(r, {}).get("pie") or {} for r in pie["run_id"]]
    for key in sorted({k for s in settings for k in s}):
        values = [json.dumps(s.get(key), sort_keys=True) for s in settings]
        if len(set(values)) > 1 and f"pie.{key}" not in pie:
            pie[f"pie.{key}"] = [s.get(key) for s in settings]
    swept = sorted(c for c in pie.columns if c.startswith("pie.") and pie[c].notna().any())
    pie = pie.sort_values([*swept, "latent_dim", "seed"], na_position="first", kind="stable")
    diag = sorted(m for m in table.loc[table["run_id"].isin(pie["run_id"]), "metric"].unique()
                  if str(m).startswith("diag_"))
    metrics = (*FIG7_NUMBERS, *diag)
    vals = per_run_values(table, pie["run_id"].tolist(), metrics).set_index(["run_id", "metric"])["value"]
    header = ["run", *swept, "latent", "seed", *metrics]
    rows = [[f"`{r['run_id']}`", *(str(r[c]) if not pd.isna(r[c]) else "—" for c in swept),
             fmt_num(r["latent_dim"]), str(int(r["seed"])),
             *(fmt_num(vals.get((r["run_id"], m), float("nan"))) for m in metrics)] for _, r in pie.iterrows()]
    real = runs[(runs["model"] == "real") & (runs["status"] == "ok")].sort_values("started_at")
    refs = {}
    if len(real):
        ref_vals = per_run_values(table, [real["run_id"].iloc[-1]], tuple(REFERENCE_RECON))
        refs = {REFERENCE_RECON[m]: float(v) for m, v in zip(ref_vals["metric"], ref_vals["value"], strict=True)}
    rows += reference_rows_md(refs, len(header), header.index("recon_mse"))
    return "\n".join([
        "# PIE mechanism: eps², coupling and Householder ablations", "",
        "Every finished PIE run that recorded diagnostics (README \"Does eps² matter?\"). `diag_resid_ratio_l<l>`: "
        "E‖r − g(z)‖² / (d·eps²) at split l in flow coordinates (near 1: the flow met eps² by scaling r); "
        "`diag_flow_logdet_per_dim`: the flow's log-det per image dimension without the input transform; "
        "`diag_recon_mse_rg`: decoding with r = g(z) (the reconstruction). The reference rows are code-free "
        "reconstructions (mean training image, class-mean image) of the real-data run.", "",
        md_table(header, rows), ""])


# ----------------------------------------------------------------------------- CLI


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def dataset_folders(table: pd.DataFrame) -> dict[str, str]:
    """dataset -> its report's folder relative to the results directory: MNIST (else the only or
    first dataset) at the top, every other dataset in a subfolder of its name."""
    names = sorted(set(table["dataset"].fillna("mnist").astype(str))) or ["mnist"]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise UserError(f"the table names unknown dataset(s) {', '.join(unknown)}; valid: {', '.join(DATASETS)}")
    top = "mnist" if "mnist" in names else names[0]
    return {n: "" if n == top else f"{n}/" for n in names}


def build_report(results: Path, umap_points: int = UMAP_MAX_POINTS, log=print) -> list[str]:
    """Write every output, one Table 1 and one set of figures per dataset; return the list of
    figure errors (empty when all were drawn)."""
    table = load_table(results)
    folders = dataset_folders(table)
    errors = []
    for dataset, folder in folders.items():
        part = table[table["dataset"].fillna("mnist").astype(str) == dataset]
        others = [(d, f"{f}index.md") for d, f in folders.items() if d != dataset]
        errors += _build_dataset_report(results, part, dataset, folder, others, umap_points, log)
    return errors


def _build_dataset_report(results: Path, table: pd.DataFrame, dataset: str, folder: str,
                          others: list[tuple[str, str]], umap_points: int, log) -> list[str]:
    out = results / folder
    out.mkdir(exist_ok=True)
    up = "../" * folder.count("/")
    configs = {r: read_json(results / "runs" / r / "config.json") for r in table["run_id"].unique()
               if not r.startswith("real-")}
    sel = select_runs(table, configs)
    sel.dataset = dataset
    logs = run_logs(results, pd.concat([f.query("status == 'ok'") for f in sel.table1.values()]))
    t1 = build_table1(table, sel, configs, logs)
    write_csv_atomic(out / "table1.csv", t1.frame)
    write_text(out / "table1.md", table1_markdown(t1, sel, up=up))
    rep = Report(results, out, dataset)
    figs = build_figures(rep, table, sel, t1, configs, umap_points, logs)
    write_text(out / "index.md", index_markdown(results, table, sel, t1, figs, rep.errors, up, others))
    written = ["table1.md", "table1.csv", "index.md"]
    mechanism = mechanism_markdown(table, configs)
    if mechanism is not None:
        write_text(out / "mechanism.md", mechanism)
        written.append("mechanism.md")
    written += rep.drawn
    for name in written:
        log(f"wrote {out / name}")
    for name in rep.kept:
        log(f"kept {out / name} (its inputs are missing; see index.md)")
    return [f"{folder}{e}" for e in rep.errors]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise UserError(message)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="results directory written by python -m bench.run")
    p.add_argument("--umap-points", type=int, default=UMAP_MAX_POINTS,
                   help="most test latents embedded per UMAP panel (default and most: %(default)s, "
                   "the number figures.npz keeps)")
    try:
        args = p.parse_args(argv)
        if args.umap_points < 10:
            raise UserError(f"--umap-points must be at least 10, got {args.umap_points}")
        errors = build_report(Path(args.results), args.umap_points)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if errors:
        for e in errors:
            print(f"warning: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
