"""The report's figures: Table 1's sharpness bars and samples, Fig. 7's panels, training and
learning curves. Drawn by ``bench.plots`` from the arrays the runs saved (``figures.npz``, else
``artefacts.npz``); a figure whose inputs are gone keeps the PNG of an earlier build.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.datasets import DATASETS
from bench.figure_data import UMAP_POINTS, UMAP_SEED, load_figure_data
from bench.metrics import names as N
from bench.registry import MODELS
from bench.report.markdown import and_list, eps_label, fmt_mean_std, fmt_num
from bench.report.paper import paper_numbers
from bench.report.selection import FIG7_MODEL, Selection, label
from bench.report.table import CONVERGENCE_RULE, Table1
from bench.results import DamageLog
from bench.rundir import read_train_log

UMAP_MAX_POINTS = UMAP_POINTS  # figures.npz keeps this many test latents
UMAP_RANDOM_STATE = UMAP_SEED
FIG_DIR = "figures"


@dataclass
class Output:
    name: str  # path relative to the results dir
    title: str
    caption: str = ""
    missing: str = ""  # reason, when the figure could not be drawn from the inputs
    kept: str = ""  # reason, when the inputs are missing and the PNG of an earlier build was kept


class Report:
    """Collects outputs, missing panels and errors while the figures are drawn."""

    def __init__(self, results: Path, out: Path | None = None, dataset: str = "mnist",
                 damage: DamageLog | None = None):
        self.results = results  # where the runs are read
        self.damage = damage if damage is not None else DamageLog()  # damaged run files met while drawing
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
        return f"the paper's second temperature, N(0, {paper_numbers().fig7_second_temperature:g})"
    if kind == "variance":
        return f"z ~ N(0, {t:g}) with {t:g} read as a variance (std {math.sqrt(t):.3g})"
    if kind == "std":
        return f"z ~ N(0, {t:g}²): {t:g} read as a std"
    return f"z ~ N(0, {t:g})"


def protocol_tag(configs: dict[str, dict], runs: pd.DataFrame) -> str:
    """What a figure shows, for its title: "preset default, 1 epoch, seeds 0–4" (from the runs'
    config.json; a figure out of context then still says how long its models trained)."""
    cfgs = [configs.get(r, {}) for r in runs["run_id"]] if len(runs) else []
    presets = sorted({str(c["preset"]) for c in cfgs if c.get("preset")})
    epochs = sorted({int(c["train"]["epochs"]) for c in cfgs
                     if isinstance(c.get("train"), dict) and isinstance(c["train"].get("epochs"), int)})
    seeds = sorted({int(s) for s in runs["seed"].dropna()}) if len(runs) else []
    parts = [f"preset {', '.join(presets)}" if presets else "preset not recorded"]
    parts.append(f"{epochs[0]} epoch{'s' if epochs[0] != 1 else ''}" if len(epochs) == 1 else
                 f"epochs {', '.join(map(str, epochs))}" if epochs else "epochs not recorded")
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        parts.append(f"seeds {seeds[0]}–{seeds[-1]}")
    elif seeds:
        parts.append(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")
    return ", ".join(parts)


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
    for eps2 in sorted(set(paper_numbers().fig7_eps2) | set(sel.fig7)):
        run = sel.fig7.get(eps2)
        if run is None:
            reason = f"no finished pie run with latent_dim {paper_numbers().fig7_latent} and eps² = {eps_label(eps2)}"
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
    arrays, err = load_figure_data(rep.results / "runs" / rid, FIG7_ARRAYS, rep.damage)
    head = f"{label(FIG7_MODEL)}, eps² = {eps_label(eps2)}: {protocol_tag({rid: cfg}, run.to_frame().T)}"
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


def training_logs(results: Path, sel: Selection, damage: DamageLog | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Long frame of train/val loss per epoch for the Table 1 runs (by model) and the Fig. 7 runs."""
    frames = []
    panels = []
    jobs = [(f"{label(m)} (Table 1, latent {paper_numbers().table1_latent})", f.query("status == 'ok'"), "seed")
            for m, f in sel.table1.items()]
    jobs.append((f"{label(FIG7_MODEL)} (Fig. 7, latent {paper_numbers().fig7_latent})", sel.fig7_all, "eps2"))
    for panel, runs, hue in jobs:
        panels.append(panel)
        for _, run in runs.iterrows():
            log = read_train_log(results / "runs" / run["run_id"], damage)
            if log is None:
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
                    frames.append(pd.DataFrame({"model": label(model), "seed": run["seed"], "epoch": log["epoch"],
                                                "metric": metric,
                                                "value": pd.to_numeric(log[column(metric)], errors="coerce")}))
                if f"{REAL_PREFIX}{metric}" in log:
                    real.setdefault(metric, []).extend(pd.to_numeric(log[f"{REAL_PREFIX}{metric}"],
                                                                     errors="coerce").dropna().tolist())
    frame = pd.concat(frames, ignore_index=True).dropna(subset=["value"]) if frames else pd.DataFrame(
        columns=["model", "seed", "epoch", "metric", "value"])
    return frame, {m: float(np.mean(v)) for m, v in real.items() if v}


def loss_summary(model: str) -> str:
    """The first line of the model's ``loss`` docstring (what its training curves plot)."""
    doc = (MODELS[model].model_cls.loss.__doc__ or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else "see its loss"


def build_figures(rep: Report, table: pd.DataFrame, sel: Selection, t1: Table1, configs: dict[str, dict],
                  umap_points: int, run_logs_by_id: dict[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    from bench import plots

    out: dict[str, Any] = {}
    t1_tag = protocol_tag(configs, pd.concat([f.query("status == 'ok'") for f in sel.table1.values()])
                          if sel.table1 else pd.DataFrame(columns=["run_id", "seed"]))
    # Bar chart of Table 1 sharpness.
    sharp = t1.per_run[t1.per_run["metric"] == N.SHARPNESS].dropna(subset=["value"])
    per_run = sharp.assign(row=sharp["row"].map(label))[["row", "value"]]
    paper = {label(k): v for k, v in paper_numbers().sharpness.items()} if sel.has_paper else {}
    item = rep.dataset.item
    out["bars"] = rep.draw(
        "table1_sharpness.png", "Table 1 sharpness: this reproduction vs the paper" if paper else
        f"Table 1 sharpness on {rep.dataset.title}",
        "Bars: mean over seeds, whiskers ± std, dots: single runs; "
        + ("red diamonds: the paper's Table 1; " if paper else "")
        + f"dashed: the real test {item}s measured here.",
        lambda p: plots.sharpness_bars(per_run, paper, p, t1.real_sharpness, [label(r) for r in sel.rows],
                                       rep.dataset, t1_tag))

    # The models' samples side by side (lowest seed of the Table 1 runs).
    entries = []
    unavailable = []  # runs whose figure arrays are gone: keep the earlier picture rather than lose it
    for model in sel.table1:
        ok = sel.table1[model].query("status == 'ok'")
        if ok.empty:
            entries.append({"title": label(model), "samples": None, "reason": "no finished Table 1 run"})
            continue
        run = ok.sort_values("seed").iloc[0]
        arrays, err = load_figure_data(rep.results / "runs" / run["run_id"], ("samples_t1",), rep.damage)
        if err:
            unavailable.append(err)
        vals = t1.per_run[(t1.per_run["run_id"] == run["run_id"]) & (t1.per_run["metric"] == N.SHARPNESS)]
        this = fmt_num(vals["value"].iloc[0]) if len(vals) else "n/a"
        row = t1.frame[t1.frame["model"] == model].iloc[0]
        mean = fmt_mean_std(row[f"{N.SHARPNESS}_mean"], row[f"{N.SHARPNESS}_std"], row[f"{N.SHARPNESS}_n"])
        title = f"{label(model)}, seed {int(run['seed'])}: sharpness {this}\n(all seeds: {mean}, n={row['n_runs']})"
        entries.append({"title": title, "samples": arrays.get("samples_t1"),
                        "reason": err or "samples_t1 not in figures.npz or artefacts.npz"})
    side = (f"samples_{'_'.join(sel.table1)}.png",
            f"Samples of {and_list([label(m) for m in sel.table1])} (T = 1, latent {paper_numbers().table1_latent})",
            "Lowest seed of each model's Table 1 runs; the title gives that run's sharpness and the "
            "mean ± std over all seeds.")
    out["side"] = (unavailable and rep.keep(*side, "; ".join(unavailable))) or \
        rep.draw(*side, lambda p: plots.samples_side_by_side(entries, p, t1_tag))

    # Figure 7.
    fig7 = build_fig7(rep, sel, configs, umap_points)
    out["fig7"] = fig7
    rows = [{"label": f"eps² = {eps_label(e.eps2)}", "panels": e.overview} for e in fig7]
    overview = ("fig7_overview.png", "Figure 7 overview: PIE at latent 10, one row per eps²",
                "Columns as in the paper: (a) test images / reconstructions in alternating rows, (b) samples at "
                "T = 1, (c) samples at the second temperature, (d) interpolations, (e) UMAP of the test latents.")
    unavailable = [e.unavailable for e in fig7 if e.unavailable]
    out["fig7_overview"] = (unavailable and rep.keep(*overview, "; ".join(unavailable))) or \
        rep.draw(*overview, lambda p: plots.fig7_overview(rows, p, rep.dataset, protocol_tag(configs, sel.fig7_all)))

    # Training curves.
    logs, panels = training_logs(rep.results, sel, rep.damage)
    out["curves"] = rep.draw(
        "training_curves.png", "Training curves",
        "Train loss (mean over each epoch) and validation loss vs epoch; Table 1 panels average over seeds "
        "(band: ± std), the Fig. 7 panel has one line per eps². Loss units differ by model, each its own `loss` ("
        + "; ".join(f"{label(m)}: {loss_summary(m)}" for m in sel.table1) + ").",
        lambda p: plots.training_curves(logs, p, panels, f"Table 1: {t1_tag}; Fig. 7: "
                                        f"{protocol_tag(configs, sel.fig7_all)}"))

    # Learning curves of Table 1's metrics (bench.tracking) and the convergence rule.
    from bench.tracking import TRACKED

    curves, real = tracking_frame(run_logs_by_id or {}, sel)
    out["convergence"] = rep.draw(
        "convergence.png", "Convergence: Table 1's metrics against the epoch",
        "Measured after each tracked epoch on fixed inputs (eval.track_samples latent draws at T = 1 and as many "
        "validation images); line: mean over seeds, band: ± std; dashed: the real digits at the same sample size "
        f"(validation images as samples). Table 1's converged column applies the rule: {CONVERGENCE_RULE}.",
        lambda p: plots.convergence_curves(curves, real, p, TRACKED, t1_tag))
    return out


