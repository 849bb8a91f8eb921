"""``index.md``: one page with Table 1, every figure, Fig. 7's numbers and the runs used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.datasets import DATASETS
from bench.report.figures import Output
from bench.report.markdown import eps_label, md_table
from bench.report.paper import paper_numbers
from bench.report.selection import (
    FIG7_MODEL,
    REAL_LABEL,
    Selection,
    label,
    run_frame,
)
from bench.report.table import Table1, fig7_numbers_md, mechanism_markdown, table1_markdown
from bench.results import Damage


def figure_md(o: Output, heading: str = "###") -> list[str]:
    lines = [f"{heading} {o.title}", ""]
    if o.missing:
        lines += [f"**missing**: {o.missing}", ""]
    else:
        lines += [f"![{o.title}]({o.name})", "", f"[{o.name}]({o.name})" + (f": {o.caption}" if o.caption else ""),
                  ""]
    if o.kept:
        lines += [f"**from an earlier build** (not redrawn: {o.kept}).", ""]
    return lines


def damage_md(results: Path, damage: list[Damage]) -> list[str]:
    """The "Damaged inputs" section: one row per damaged file (or missing input) and what was done."""
    def where(path: Path) -> str:
        try:
            return str(path.relative_to(results))
        except ValueError:
            return str(path)

    rows = [[f"`{where(d.path)}`", f"`{d.run_id}`" if d.run_id else "", d.what, d.done] for d in damage]
    return ["## Damaged inputs", "",
            f"{len(damage)} damaged or missing input(s) were contained: each is its run's problem, and the rest "
            "of the report is built from what is intact (`python -m bench.report` exits with status 3).", "",
            md_table(["file", "run", "what is wrong", "what was done"], rows), ""]


def index_markdown(results: Path, table: pd.DataFrame, sel: Selection, t1: Table1, figs: dict[str, Any],
                   errors: list[str], up: str = "", others: list[tuple[str, str]] | None = None,
                   damage: list[Damage] | None = None) -> str:
    """``up``: path from the page to ``results``; ``others``: pages of the other datasets in ``results``;
    ``damage``: the damaged inputs met while building (listed in their own section)."""
    runs = run_frame(table)
    n_ok = int((runs["status"] == "ok").sum())
    failed = runs[runs["status"] != "ok"]
    lines = [
        f"# pie-bench report: {' vs '.join(label(m) for m in sel.table1)} on {sel.spec.title}",
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
              "Also as its own page: [table1.md](table1.md). Each of the paper's claims judged by one rule, with "
              "its effect and interval over seeds: [verdicts.md](verdicts.md).", ""]
    lines += figure_md(figs["bars"])
    lines += figure_md(figs["side"])
    paper = paper_numbers()
    lines += ['<a id="figure-7"></a>', "", f"## Figure 7: {label(FIG7_MODEL)} at latent {paper.fig7_latent}, eps² ∈ "
              f"{{{', '.join(eps_label(e) for e in paper.fig7_eps2)}}}", "",
              "The paper's Fig. 7 per eps² (a variance): (a) test images and reconstructions, (b) samples at T = 1, "
              "(c) samples at the second temperature, (d) linear interpolations in z between pairs of test images, "
              f"(e) UMAP of the test latents coloured by {sel.spec.item}. All images are decoded from z.", ""]
    lines += figure_md(figs["fig7_overview"])
    lines += fig7_numbers_md(table, [(e.eps2, e.run["run_id"]) for e in figs["fig7"] if e.run is not None],
                             t1.references)
    for entry in figs["fig7"]:
        lines += [f"### eps² = {eps_label(entry.eps2)}", ""]
        if entry.run is None:
            kept = [o for o in entry.panels if o.kept]
            lines += [f"**missing**: {entry.panels[0].missing or entry.panels[0].kept}", ""]
            for o in kept:
                lines += figure_md(o, heading="####")
            continue
        lines += [f"Run `{entry.run['run_id']}` (seed {int(entry.run['seed'])}; "
                  f"[config]({up}runs/{entry.run['run_id']}/config.json)).", ""]
        for o in entry.panels:
            lines += figure_md(o, heading="####")
    lines += ['<a id="training-curves"></a>', "", "## Training curves", ""]
    lines += figure_md(figs["curves"], heading="###")
    lines += figure_md(figs["convergence"], heading="###")
    lines += ['<a id="runs-used"></a>', "", "## Runs used", ""]
    used = []
    for model, frame in sel.table1.items():
        for _, r in frame.iterrows():
            used.append([f"`{r['run_id']}`", label(model), str(int(r["seed"])) if pd.notna(r["seed"]) else "",
                         f"Table 1 (latent {paper_numbers().table1_latent})", str(r["status"])])
    if sel.real_run:
        used.append([f"`{sel.real_run}`", REAL_LABEL, "", f"Table 1 (real test {sel.spec.item}s)", "ok"])
    for _, r in sel.fig7_all.sort_values(["eps2", "seed"]).iterrows():
        drawn = any(e.run is not None and e.run["run_id"] == r["run_id"] for e in figs["fig7"])
        used.append([f"`{r['run_id']}`", label(FIG7_MODEL), str(int(r["seed"])),
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
    if damage:
        lines += damage_md(results, damage)
    if mechanism_markdown(table) is not None:
        lines += ["PIE runs with diagnostics, one row each (eps², coupling, Householder ablations): "
                  "[mechanism.md](mechanism.md).", ""]
    lines += ["Every run's own records: `runs/<run_id>/` (config.json, train_log.csv, metrics.csv, samples.png, "
              "figures.npz; artefacts.npz is not committed). Rebuild this page: "
              "`python -m bench.report --results DIR`.", ""]
    return "\n".join(lines)

