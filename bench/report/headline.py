"""The README's headline block, written by the report, never typed.

``python -m bench.report --results DIR --readme README.md`` writes, between the markers
:data:`START` and :data:`END` of README.md, Table 1's headline numbers and one line per claim
(verdict, effect, interval, n) of DIR's MNIST runs. The block is a function of the results alone
(no paths, dates or timings), so a test can rebuild it from the committed ``results/long`` and
compare it with the committed README.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import UserError
from bench.metrics import names as N
from bench.protocol import Protocol, StepProgress, summary
from bench.report.markdown import fmt_mean_std, fmt_num, md_table, write_text
from bench.report.paper import paper_numbers
from bench.report.selection import REAL, Selection, load_table, run_frame, select_runs
from bench.report.table import REFERENCE_RECON, Table1, build_table1, reference_rows_md, run_epochs, run_logs
from bench.report.verdicts import Verdicts, build_verdicts, claim_lines
from bench.results import DamageLog
from bench.rundir import read_config

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
METRICS = (N.FD_LENET, N.PRECISION, N.RECALL, N.RECON_MSE, N.BITS_PER_DIM, N.PROBE_ACCURACY)


def report_inputs(results: Path, table: pd.DataFrame, dataset: str, damage: DamageLog | None = None):
    """configs, selection and train logs of one dataset's part of the tidy table (damaged
    ``config.json`` / ``train_log.csv`` files read as absent and named in ``damage``)."""
    configs = {r: read_config(results / "runs" / r, damage) for r in table["run_id"].unique()
               if not r.startswith(f"{REAL}-")}
    sel = select_runs(table, configs)
    sel.dataset = dataset
    logs = run_logs(results, run_frame(table).query("status == 'ok'"), damage)
    return configs, sel, logs


def headline_markdown(table: pd.DataFrame, t1: Table1, sel: Selection, verdicts: Verdicts,
                      configs: dict[str, dict], logs: dict[str, pd.DataFrame]) -> str:
    """Table 1 (latent 8, mean ± std over seeds, epochs trained, convergence) and the claims."""
    extra = ["epochs to converge"] if "epochs_to_converge" in t1.frame else []  # issue 23 item 1, when present
    header = ["", "n", "epochs", N.SHARPNESS, "paper", *METRICS, "converged", *extra]
    rows = []
    for _, r in t1.frame.iterrows():
        ids = r["run_ids"].split()
        epochs = sorted(set(run_epochs(table, ids, logs, configs).values())) if r["model"] != REAL else []
        span = "—" if not epochs else fmt_num(epochs[0]) + (f"–{fmt_num(epochs[-1])}" if len(epochs) > 1 else "")
        cells = [f"**{r['row']}**", str(r["n_runs"]), span,
                 fmt_mean_std(r[f"{N.SHARPNESS}_mean"], r[f"{N.SHARPNESS}_std"], r[f"{N.SHARPNESS}_n"]),
                 fmt_num(r[f"paper_{N.SHARPNESS}"], 3)]
        cells += [fmt_mean_std(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"]) for m in METRICS]
        cells += [r["converged"]] + [str(r[c]) for c in ("epochs_to_converge",) if extra]
        rows.append(cells)
    rows += reference_rows_md({k: v for k, v in t1.references.items() if k in REFERENCE_RECON.values()},
                              len(header), header.index(N.RECON_MSE))
    why = [f"{r['row']} {r['unconverged_metrics']}" for _, r in t1.frame.iterrows() if r.get("unconverged_metrics")]
    paper = paper_numbers()
    n_samples = f"{paper.table1_n_samples:,}".replace(",", " ")
    lines = [f"Table 1 (latent {paper.table1_latent}; mean ± std over seeds; sample metrics on {n_samples} samples "
             "at T = 1; paper: its Table 1):", "",
             md_table(header, rows), ""]
    if why:
        lines += ["Not converged by the rule (relative change between the last two fifths): " + "; ".join(why) + ".",
                  ""]
    lines += ["The paper's claims, each judged by the rule of verdicts.md (95 % interval over seeds):", "",
              *claim_lines(verdicts)]
    return "\n".join(lines)


def protocol_line(protocol: Protocol, steps: list[StepProgress]) -> str:
    """The headline's first line when the report is given the protocol behind the results."""
    return (f"Protocol progress (`{protocol.path}`, run by `python -m bench.protocol`): {summary(steps)}; "
            "each step's runs in protocol.md beside verdicts.md.")


def headline_from_results(results: Path, progress_line: str | None = None) -> str:
    """The headline block of a results directory's MNIST runs (the paper's dataset), after
    ``progress_line`` (:func:`protocol_line`) when given."""
    table = load_table(results)
    dataset = paper_numbers().dataset
    table = table[table["dataset"].fillna(dataset).astype(str) == dataset]
    if table.empty:
        raise UserError(f"'{results}' holds no {dataset} runs: the headline is about the paper's dataset")
    configs, sel, logs = report_inputs(results, table, dataset)
    t1 = build_table1(table, sel, configs, logs)
    block = headline_markdown(table, t1, sel, build_verdicts(table, sel, configs, logs), configs, logs)
    return f"{progress_line}\n\n{block}" if progress_line else block


def readme_block(text: str, where: str = "README") -> str:
    """The text between the markers (without the newlines next to them); UserError without them."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise UserError(f"{where} needs one '{START}' line and one '{END}' line after it, where the headline goes")
    return text[text.index(START) + len(START):text.index(END)].strip("\n")


def write_headline(readme: Path, block: str) -> None:
    if not readme.is_file():
        raise UserError(f"--readme '{readme}' is not a file")
    text = readme.read_text()
    readme_block(text, str(readme))
    head, tail = text[:text.index(START) + len(START)], text[text.index(END):]
    write_text(readme, f"{head}\n{block}\n{tail}")
