"""Table 1 (``table1.csv``, ``table1.md``); the numbers under Fig. 7 and the mechanism page are
:mod:`bench.report.mechanism`'s, the shared readers :mod:`bench.report.values`'.

Computed from the tidy table alone (``bench.results``): per run one value per metric (the
preferred split first), then mean ± std over the seeds of each row. Its metric columns are the
metric table's (``table1`` in :mod:`bench.metrics.table`), sharpness first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench import convergence
from bench.config import SECTION_TYPES
from bench.identity import field_defaults
from bench.metrics import names as N
from bench.metrics.table import table1_metrics
from bench.registry import MODELS
from bench.report.markdown import and_list, fmt_mean_std, fmt_num, list_text, md_table
from bench.report.mechanism import FIG7_NUMBERS, fig7_numbers_md, mechanism_markdown
from bench.report.paper import paper_numbers
from bench.report.selection import REAL, Selection, label
from bench.report.values import (
    REFERENCE_RECON,
    SPLIT_PRIORITY,
    per_run_values,
    reference_recon,
    reference_rows_md,
    run_epochs,
    run_logs,
)

__all__ = ["FIG7_NUMBERS", "REFERENCE_RECON", "SPLIT_PRIORITY", "Table1", "build_table1", "fig7_numbers_md",
           "mechanism_markdown", "per_run_values", "reference_recon", "reference_rows_md", "run_epochs", "run_logs",
           "table1_markdown", "table1_metrics"]
SHARP = N.SHARPNESS  # Table 1's first column, beside the paper's value and the gap to the real digits
GAP = "gap_to_real"  # a column derived from SHARP (model − real digits), not a metric row
# Artefact flag: sharper than the real digits *and* corner Laplacian energy (black in real digits,
# ~3e-4) above this fraction of the real digits' whole-image sharpness: the sharpness is artefact.
ARTEFACT_FLAG_FRACTION = 0.1
DEFAULT_RECIPE = ("grey images in [0, 1], 3×3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] with no padding ('valid'), "
                  "variance of the activations per image, mean over images "
                  "(WAE reference code; Tolstikhin et al. 2018)")
CONVERGENCE_RULE = (f"for each of {', '.join(convergence.RULE_METRICS)}, the mean over the last fifth of the tracked "
                    f"epochs is within {convergence.TOLERANCE:.0%} of the mean over the fifth before, and this held at "
                    f"each of the last {convergence.PATIENCE} tracked epochs (on the curves up to each); at least "
                    f"{convergence.MIN_EPOCHS + convergence.PATIENCE - 1} tracked epochs, else 'too short'; "
                    "'not tracked' without learning curves")
EPOCHS_TO_CONVERGE = ("epochs to converge: the first epoch at whose end the rule held on the curves up to it, "
                      "median (range) over the converged seeds; 'at cap N': runs trained until converged "
                      "(train.until_converged) that stopped at train.max_epochs N without the rule holding, "
                      "counted as not converged")


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
    others: list[list[str]] = field(default_factory=list)  # markdown rows of other_configurations


def converged_epoch_entry(log: pd.DataFrame | None, config: dict | None) -> str:
    """One run's epochs to converge: the first epoch the rule held ("17"), "cap 150" for a run
    trained until converged that stopped at its cap unconverged, else "-" (not converged)."""
    if convergence.judge(log).converged:
        return str(convergence.first_converged_epoch(log))
    train = (config or {}).get("train") or {}
    if train.get("until_converged") and log is not None and len(log) and log["epoch"].max() >= train["max_epochs"]:
        return f"cap {int(train['max_epochs'])}"
    return "-"


def epochs_to_converge_cell(entries: list[str]) -> str:
    """Table 1's cell from :func:`converged_epoch_entry` of each run: "17 (12–25)", "; 2 at cap 150"."""
    epochs = sorted(int(e) for e in entries if e.isdigit())
    caps = sorted({e for e in entries if e.startswith("cap")})
    parts = []
    if epochs:
        parts.append(f"{np.median(epochs):g}" + (f" ({epochs[0]}–{epochs[-1]})" if epochs[0] != epochs[-1] else ""))
    if caps:
        n_cap = sum(e.startswith("cap") for e in entries)
        parts.append(f"{n_cap} at {', '.join(caps)}")
    return "; ".join(parts) or "—"


def artefact_flags(frame: pd.DataFrame) -> list[str]:
    """Models sharper than the real digits whose corner artefact score is large (see ARTEFACT_FLAG_FRACTION)."""
    real, art = frame[frame["model"] == REAL], f"{N.ARTEFACT_CORNER}_mean"
    if real.empty or not np.isfinite(real[f"{SHARP}_mean"].iloc[0]):
        return []
    real_sharp = float(real[f"{SHARP}_mean"].iloc[0])
    real_art = real[art].iloc[0]
    flags = []
    for _, r in frame[frame["model"] != REAL].iterrows():
        limit = ARTEFACT_FLAG_FRACTION * real_sharp
        if r[f"{SHARP}_mean"] > real_sharp and r[art] > limit:
            flags.append(f"{r['row']}: sharpness {fmt_num(r[f'{SHARP}_mean'])} exceeds the real digits' "
                         f"{fmt_num(real_sharp)}, but its corner artefact score is "
                         f"{fmt_num(r[art])} (real digits {fmt_num(real_art)}; flag above "
                         f"{fmt_num(limit)}): "
                         "the extra Laplacian energy is pattern where real digits are black, not detail.")
    return flags


def build_table1(table: pd.DataFrame, sel: Selection, configs: dict[str, dict],
                 logs: dict[str, pd.DataFrame] | None = None) -> Table1:
    row_runs: dict[str, list[str]] = {m: sel.table1[m].query("status == 'ok'")["run_id"].tolist()
                                      for m in sel.table1}
    row_runs[REAL] = [sel.real_run] if sel.real_run else []
    metrics = table1_metrics()
    per_run = []
    for row in sel.rows:
        vals = per_run_values(table, row_runs[row], metrics)
        per_run.append(vals.assign(row=row))
    per_run = pd.concat(per_run, ignore_index=True)

    real_vals = per_run[(per_run["row"] == REAL) & (per_run["metric"] == SHARP)]["value"].dropna()
    real_sharpness = float(real_vals.mean()) if len(real_vals) else float("nan")
    sharp = per_run[per_run["metric"] == SHARP]
    gap = sharp[sharp["row"] != REAL].assign(metric=GAP, value=lambda f: f["value"] - real_sharpness)
    per_run = pd.concat([per_run, gap], ignore_index=True)

    footnotes: list[str] = []
    records = []
    for row in sel.rows:
        runs = sel.table1.get(row)
        rec: dict[str, Any] = {"row": label(row), "model": row, "n_runs": len(row_runs[row])}
        rec["n_failed"] = int((runs["status"] != "ok").sum()) if runs is not None else 0
        rec["seeds"] = " ".join(str(int(s)) for s in runs.query("status == 'ok'")["seed"].dropna()) \
            if runs is not None else ""
        for metric in (SHARP, GAP, *metrics[1:]):
            v = per_run[(per_run["row"] == row) & (per_run["metric"] == metric)]
            vals = v["value"]
            rec[f"{metric}_mean"] = float(vals.mean()) if vals.notna().any() else float("nan")
            rec[f"{metric}_std"] = float(vals.std()) if vals.notna().sum() > 1 else float("nan")
            rec[f"{metric}_n"] = int(vals.notna().sum())
            nan_notes = sorted({n for n in v.loc[vals.isna(), "note"] if n})
            if nan_notes:
                footnotes.append(f"{label(row)} {metric}: " + "; ".join(nan_notes))
            if metric == SHARP:
                rec[f"paper_{SHARP}"] = paper_numbers().sharpness.get(row, np.nan) if sel.has_paper else np.nan
        rec["run_ids"] = " ".join(row_runs[row])
        # the convergence rule on each finished run's learning curves (bench.convergence)
        verdicts = [] if row == REAL else [convergence.judge((logs or {}).get(r)) for r in row_runs[row]]
        rec["converged"] = "—" if row == REAL else convergence.summary(verdicts)
        entries = [] if row == REAL else [converged_epoch_entry((logs or {}).get(r), configs.get(r))
                                          for r in row_runs[row]]
        rec["converged_epochs"] = " ".join(entries)
        rec["epochs_to_converge"] = "—" if row == REAL else epochs_to_converge_cell(entries)
        rec["unconverged_metrics"] = convergence.unmet(verdicts)
        records.append(rec)
    frame = pd.DataFrame(records)
    order = ["row", "model", "n_runs", "n_failed", "seeds", f"{SHARP}_mean", f"{SHARP}_std", f"{SHARP}_n",
             f"paper_{SHARP}"]
    frame = frame[order + [c for c in frame.columns if c not in order]]
    flags = artefact_flags(frame)
    frame["artefact_flag"] = [any(f.startswith(f"{r}:") for f in flags) for r in frame["row"]]

    metric_notes = {}  # each model's most common note (one text if all agree), else the real-data row's
    for metric in metrics:
        rows = per_run[(per_run["metric"] == metric) & (per_run["note"] != "") & per_run["value"].notna()]
        models = rows[rows["row"] != REAL]
        per_model = {r: models[models["row"] == r]["note"].value_counts().index[0]
                     for r in sel.table1 if (models["row"] == r).any()}
        if len(set(per_model.values())) == 1:
            metric_notes[metric] = next(iter(per_model.values()))
        elif per_model:
            metric_notes[metric] = "; ".join(f"{label(r)}: {n}" for r, n in per_model.items())
        elif len(rows):
            metric_notes[metric] = rows["note"].value_counts().index[0]
    return Table1(frame, per_run, real_sharpness, footnotes, protocol_lines(table, sel, configs, metric_notes),
                  metric_notes, flags, reference_recon(table, sel), other_configurations(table, sel, configs))


OTHER_METRICS = (N.BITS_PER_DIM, N.RECON_MSE, N.FD_LENET, SHARP)
SETTING_SECTIONS = ("data", "train", "eval")  # with the model's own section: what a run sets


def settings_diff(config: dict[str, Any], reference: dict[str, Any], model: str) -> str:
    """``section.key=value`` for every setting of ``config`` that differs from ``reference``; a key
    the reference lacks (a run of older code) counts as its default, as in run ids (bench.identity);
    '' when none differs."""
    out = []
    for section in (model, *SETTING_SECTIONS):
        mine, ref = config.get(section), reference.get(section)
        if not isinstance(mine, dict) or not isinstance(ref, dict):
            continue
        cls = MODELS[model].config_cls if section == model and model in MODELS else SECTION_TYPES.get(section)
        ref = {**(field_defaults(cls) if cls is not None else {}), **ref}
        for key in sorted(mine):
            if key in ref and json.dumps(mine[key], sort_keys=True) != json.dumps(ref[key], sort_keys=True):
                out.append(f"{section}.{key}={json.dumps(mine[key])}")
    return ", ".join(out)


def other_configurations(table: pd.DataFrame, sel: Selection, configs: dict[str, dict]) -> list[list[str]]:
    """One markdown row per (model, configuration) of ``sel.others``: what differs from the model's
    Table 1 runs (settings and sweep columns), the seeds, and mean ± std of OTHER_METRICS."""
    if sel.others.empty:
        return []
    sweeps = [c for c in sel.others.columns if "." in c]
    rows = []
    for (model, _), group in sel.others.groupby(["model", "config_hash"], sort=False, dropna=False):
        chosen = sel.table1[model]["run_id"].tolist()
        reference = configs.get(chosen[0], {}) if chosen else {}
        first = group.iloc[0]
        what = [settings_diff(configs.get(first["run_id"], {}), reference, model)]
        what += [f"{c}={first[c]}" for c in sweeps if pd.notna(first[c])]
        what = ", ".join(w for w in what if w) or f"config_hash {first['config_hash']}"
        vals = per_run_values(table, group["run_id"].tolist(), OTHER_METRICS)
        cells = [fmt_mean_std(float(v.mean()) if v.notna().any() else float("nan"),
                              float(v.std()) if v.notna().sum() > 1 else float("nan"), int(v.notna().sum()))
                 for v in (vals.loc[vals["metric"] == m, "value"] for m in OTHER_METRICS)]
        seeds = " ".join(str(int(x)) for x in sorted(group["seed"].dropna()))
        rows.append([f"**{label(model)}**", f"`{what}`", f"{len(group)} (seeds {seeds})", *cells])
    return rows


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
    test_text = list_text(["10000 (all)" if t == 0 else t for t in test_subset]) if test_subset else "see config"
    rows = table[table["run_id"].isin(run_ids)]
    presets = sorted(rows["preset"].dropna().astype(str).unique())
    commits = sorted(rows["git_commit"].dropna().astype(str).unique())
    seeds = {label(m): " ".join(str(int(s)) for s in f.query("status == 'ok'")["seed"].dropna())
             for m, f in sel.table1.items()}
    paper_n, latent = f"{paper_numbers().table1_n_samples:,}".replace(",", " "), paper_numbers().table1_latent
    lines = [
        f"Latent dimension {latent} for {and_list([label(m) for m in sel.table1])} (the paper: \"a sample "
        f"of {latent} dimensions\"); "
        "runs of the default configuration (no sweep).",
        f"Generated samples per run for the sample metrics: {list_text(n_samples) if n_samples else 'see config'} "
        f"(the paper: {paper_n}); test images for reconstruction/probe/True row: " + test_text + ".",
        "Sharpness recipe: " + metric_notes.get(SHARP, DEFAULT_RECIPE).rstrip(".") + ".",
        f"Preset: {list_text(presets)}; seeds: " + "; ".join(f"{k} {v or 'none'}" for k, v in seeds.items()) + ".",
        "mean ± std over seeds (sample std, ddof 1); a single run shows its value alone; n/a = not recorded.",
        "Device / torch: " + _env_info(cfgs) + f"; git commit(s): {list_text(commits)}.",
        f"Gap to real = model sharpness − sharpness of the real test {sel.spec.item}s (same recipe); above 0 means "
        f"more Laplacian variance than real {sel.spec.item}s, which can be detail or noise (added noise raises the "
        "score).",
    ]
    if sel.has_paper:
        lines += paper_numbers().sharpness_notes
    return lines


def table1_markdown(t1: Table1, sel: Selection, heading: str = "#", up: str = "") -> str:
    """``up``: the path from the page to the results directory ("../" for a dataset's subfolder)."""
    metrics = table1_metrics()
    header = ["", "n", "Sharpness", "Paper", "Gap to real", *metrics[1:], "converged", "epochs to converge"]
    rows = []
    for _, r in t1.frame.iterrows():
        n = f"{r['n_runs']}" + (f" ({r['n_failed']} failed)" if r["n_failed"] else "")
        gap = "—" if r["model"] == REAL else fmt_mean_std(r[f"{GAP}_mean"], r[f"{GAP}_std"], r[f"{GAP}_n"])
        cells = [f"**{r['row']}**", n, fmt_mean_std(r[f"{SHARP}_mean"], r[f"{SHARP}_std"], r[f"{SHARP}_n"]),
                 fmt_num(r[f"paper_{SHARP}"], 3), gap]
        cells += [fmt_mean_std(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"]) for m in metrics[1:]]
        cells += [r["converged"], r["epochs_to_converge"]]
        if not sel.has_paper:
            del cells[3]
        rows.append(cells)
    if not sel.has_paper:
        header.remove("Paper")
    rows += reference_rows_md(t1.references, len(header), header.index(N.RECON_MSE))
    what = "MNIST digits" if sel.dataset == "mnist" else f"{sel.spec.title} images"
    parts = [f"{heading} Table 1: sharpness of generated {what} (latent {paper_numbers().table1_latent})", "",
             "Protocol:", ""]
    parts += [f"- {line}" for line in t1.protocol]
    parts += ["", md_table(header, rows), ""]
    parts += [f"converged: runs meeting the convergence rule ({CONVERGENCE_RULE}); {EPOCHS_TO_CONVERGE}.", ""]
    why = [f"- {r['row']}: {r['unconverged_metrics']} between the last two fifths"
           for _, r in t1.frame.iterrows() if r.get("unconverged_metrics")]
    if why:
        parts += ["Not converged, and why (relative change beyond the rule's tolerance):", "", *why, ""]
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
    if t1.others:
        parts += [f"Other configurations at latent {paper_numbers().table1_latent} (finished runs of Table 1's models "
                  "that are not its rows, e.g. `--set` variants; mean ± std over their seeds):", "",
                  md_table(["", "differs from the Table 1 row by", "n", *OTHER_METRICS], t1.others), ""]
    if sel.notes:
        parts += ["Selection notes:", ""] + [f"- {n}" for n in sel.notes] + [""]
    parts.append(f"Machine-readable: [table1.csv](table1.csv); every row of every run: [metrics.csv]({up}metrics.csv).")
    return "\n".join(parts) + "\n"


