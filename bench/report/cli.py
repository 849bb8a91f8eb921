"""``python -m bench.report --results DIR``: every page and figure of a results directory.

Reads only ``DIR/metrics.csv`` and the files the runner saved under ``DIR/runs/<run_id>/``
(``config.json``, ``train_log.csv``, ``figures.npz``, else ``artefacts.npz``): no checkpoints,
no models, no training. Writes ``DIR/table1.md``, ``DIR/table1.csv``, PNGs in ``DIR/figures/``,
``DIR/index.md``, ``DIR/verdicts.md`` and ``DIR/verdicts.csv`` (each claim of the paper judged by one
rule, :mod:`bench.report.verdicts`), ``DIR/models.md`` (AEF against PIE and the VAE, :mod:`bench.report.models`)
and, when PIE runs recorded diagnostics, ``DIR/mechanism.md``; one such set per
dataset (MNIST at the top, any other in ``DIR/<dataset>/``); with ``--compare-with REF`` also
``DIR/compare.md`` (yours vs the committed REF vs the paper, ``bench.report.compare``). Bad input exits 2 with one line
on stderr; a figure that could not be drawn is named on stderr and makes the exit code 1 (the
other outputs are still written). ``--readme README.md`` also writes the headline block of the
README from DIR's MNIST runs (:mod:`bench.report.headline`).

A damaged run file (a truncated ``figures.npz``, a malformed ``config.json`` or ``metrics.csv``,
...) is its run's problem: it is named in one warning line, that run's figure, curve or rows are
kept from another copy or left out, the report is built, ``index.md`` lists it, and the exit
code is 3 (``docs/damage.md``). So is a missing True row (the real test images' run).

The report never deletes or overwrites a figure it cannot rebuild: when a panel's inputs are
missing (e.g. a clone of results saved before ``figures.npz`` existed, whose uncommitted
``artefacts.npz`` is gone), an existing PNG of that name is kept and ``index.md`` says it
comes from an earlier build. A composite figure (the samples side by side, the Fig. 7
overview) is kept the same way when a run it shows has neither ``figures.npz`` nor
``artefacts.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from bench.cli import EXIT_DAMAGED, EXIT_FAILED, EXIT_OK, EXIT_STATUS_HELP, Parser, user_errors_exit_2
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.protocol import progress, progress_markdown, read_protocol
from bench.report.compare import build_comparison
from bench.report.figures import UMAP_MAX_POINTS, Report, build_figures
from bench.report.headline import headline_from_results, protocol_line, report_inputs, write_headline
from bench.report.index import index_markdown
from bench.report.markdown import write_text
from bench.report.models import FOCUS, models_markdown
from bench.report.selection import load_table
from bench.report.table import build_table1, mechanism_markdown, table1_markdown
from bench.report.verdicts import Runs, build_verdicts, verdicts_markdown
from bench.results import DamageLog, remove_stale_temps, write_csv_atomic


def dataset_folders(table: pd.DataFrame) -> dict[str, str]:
    """dataset -> its report's folder relative to the results directory: MNIST (else the only or
    first dataset) at the top, every other dataset in a subfolder of its name."""
    names = sorted(set(table["dataset"].fillna("mnist").astype(str))) or ["mnist"]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise UserError(f"the table names unknown dataset(s) {', '.join(unknown)}; valid: {', '.join(DATASETS)}")
    top = "mnist" if "mnist" in names else names[0]
    return {n: "" if n == top else f"{n}/" for n in names}


def build_report(results: Path, umap_points: int = UMAP_MAX_POINTS, log=print,
                 damage: DamageLog | None = None) -> list[str]:
    """Write every output, one Table 1 and one set of figures per dataset; return the list of
    figure errors (empty when all were drawn). Damaged run files (and a missing True row) are
    named in ``damage``, one warning line each, and listed in each ``index.md``; the report is
    built all the same."""
    damage = damage if damage is not None else DamageLog()
    removed = remove_stale_temps(results)
    if removed:
        print(f"note: removed {len(removed)} temporary file(s) left by killed writers under {results}",
              file=sys.stderr)
    table = load_table(results, damage)
    folders = dataset_folders(table)
    errors = []
    for dataset, folder in folders.items():
        part = table[table["dataset"].fillna("mnist").astype(str) == dataset]
        others = [(d, f"{f}index.md") for d, f in folders.items() if d != dataset]
        errors += _build_dataset_report(results, part, dataset, folder, others, umap_points, log, damage)
    return errors


def _build_dataset_report(results: Path, table: pd.DataFrame, dataset: str, folder: str,
                          others: list[tuple[str, str]], umap_points: int, log, damage: DamageLog) -> list[str]:
    out = results / folder
    out.mkdir(exist_ok=True)
    up = "../" * folder.count("/")
    configs, sel, logs = report_inputs(results, table, dataset, damage)
    if sel.real_run is None and any((f["status"] == "ok").any() for f in sel.table1.values()):
        damage.add(results / "runs", f"holds no finished run of the real {sel.spec.title} test images (Table 1's "
                   "True row)", f"the True row shows n/a; python -m bench.run --out {results} ... records it")
    t1 = build_table1(table, sel, configs, logs)
    write_csv_atomic(out / "table1.csv", t1.frame)
    write_text(out / "table1.md", table1_markdown(t1, sel, up=up))
    verdicts = build_verdicts(table, sel, configs, logs)
    write_csv_atomic(out / "verdicts.csv", verdicts.frame())
    write_text(out / "verdicts.md", verdicts_markdown(verdicts, sel.spec.title))
    rep = Report(results, out, dataset, damage)
    figs = build_figures(rep, table, sel, t1, configs, umap_points, logs)
    write_text(out / "index.md", index_markdown(results, table, sel, t1, figs, rep.errors, up, others,
                                                damage.entries))
    written = ["table1.md", "table1.csv", "index.md", "verdicts.md", "verdicts.csv"]
    if len(sel.table1.get(FOCUS, ())):  # the newest model against PIE and the VAE (bench.report.models)
        write_text(out / "models.md", models_markdown(Runs(table, sel, configs, logs), sel.spec.title))
        written.append("models.md")
    mechanism = mechanism_markdown(table, configs, logs)
    if mechanism is not None:
        write_text(out / "mechanism.md", mechanism)
        written.append("mechanism.md")
    written += rep.drawn
    for name in written:
        log(f"wrote {out / name}")
    for name in rep.kept:
        log(f"kept {out / name} (its inputs are missing; see index.md)")
    return [f"{folder}{e}" for e in rep.errors]


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m bench.report", description=__doc__.splitlines()[0],
               epilog=EXIT_STATUS_HELP.format(failed="a figure could not be drawn (named on stderr; the other "
                                              "outputs are written)", where=" and listed in index.md; a "
                                              "missing True row counts too"))
    p.add_argument("--results", required=True, help="results directory written by python -m bench.run")
    p.add_argument("--umap-points", type=int, default=UMAP_MAX_POINTS,
                   help="most test latents embedded per UMAP panel (default and most: %(default)s, "
                   "the number figures.npz keeps)")
    p.add_argument("--readme", type=Path, default=None,
                   help="also write the headline block (Table 1 and one line per claim, from this directory's "
                   "MNIST runs) into this file between '<!-- headline:start -->' and '<!-- headline:end -->'")
    p.add_argument("--compare-with", default=None, metavar="DIR",
                   help="also write RESULTS/compare.md: yours vs this committed results directory vs the paper, "
                   "with a within-spread mark per metric (./run_all.sh passes the preset's committed directory)")
    p.add_argument("--protocol", default=None, metavar="FILE",
                   help="also write RESULTS/protocol.md: the steps of this protocol file (python -m bench.protocol) "
                   "and how many of their runs are done; with --readme, the total goes into the headline")
    args = p.parse_args(argv)
    if args.umap_points < 10:
        raise UserError(f"--umap-points must be at least 10, got {args.umap_points}")
    if args.readme is not None and not args.readme.is_file():
        raise UserError(f"--readme '{args.readme}' is not a file")
    if args.compare_with is not None and Path(args.compare_with).resolve() == Path(args.results).resolve():
        raise UserError("--compare-with names the results directory itself; give the committed one")
    progress_line = None
    if args.protocol is not None:  # checked before anything is written
        protocol = read_protocol(args.protocol)
        steps = progress(protocol, list(protocol.steps), args.results)
    damage = DamageLog()
    errors = build_report(Path(args.results), args.umap_points, damage=damage)
    if args.protocol is not None:
        write_text(Path(args.results) / "protocol.md", progress_markdown(protocol, steps))
        print(f"wrote {Path(args.results) / 'protocol.md'}")
        progress_line = protocol_line(protocol, steps)
    if args.readme is not None:
        write_headline(args.readme, headline_from_results(Path(args.results), progress_line))
        print(f"wrote the headline block of {args.readme}")
    if args.compare_with is not None:
        text, _ = build_comparison(Path(args.results), Path(args.compare_with))
        write_text(Path(args.results) / "compare.md", text)
        print(f"wrote {Path(args.results) / 'compare.md'}\n")
        print(text.split("Marks: ")[0].rstrip() + "\n")  # the header lines; the table follows
        print(text[text.index("Summary: "):].split("\n\nmean ± sample std")[0])
    if errors:
        for e in errors:
            print(f"warning: {e}", file=sys.stderr)
        return EXIT_FAILED
    if damage:
        print(f"report built; {len(damage.entries)} damaged or missing input(s) were contained (see the warnings "
              f"above and index.md; exit status {EXIT_DAMAGED})", file=sys.stderr)
        return EXIT_DAMAGED
    return EXIT_OK
