"""``train_seconds``: the training time of a run, summed over every process that trained it.

A run killed and resumed, or continued from a shorter run's checkpoint, trained its epochs in
several processes. Its ``train_log.csv`` (the checkpoint's history) keeps, per epoch,
``seconds`` (since its process started training) and, from newer code on, ``epoch_seconds``
(that epoch alone). An epoch's time is its ``epoch_seconds``; in rows of older code, which
lack it, the difference of ``seconds`` to the previous row of the same process (a process
starts where ``seconds`` falls back). A run trained in one process records its wall time; a
resumed one the sum of its epochs' times. An epoch cut short by a kill counts nowhere: it was
trained again.

Older code recorded only the last process's wall time. ``python -m bench.train_time --results DIR``
recomputes those ``train_seconds`` rows from the runs' logs, in each run's ``metrics.csv``
(only that row's value and note change) and in the table (rebuilt from the run directories, as
the runner does); run again, it changes nothing.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cli import Parser, user_errors_exit_2
from bench.errors import UserError
from bench.results import RUNS, TABLE, atomic_write_bytes, locked
from bench.sync import sync_table

TRAIN_SECONDS = "train_seconds"
# Notes of train_seconds rows that counted the last process only (bench.runner before this module).
LAST_PROCESS_NOTES = ("wall time of training in this process", "wall time in this process only")


def _column(log: pd.DataFrame, name: str) -> np.ndarray:
    if name not in log:
        return np.full(len(log), np.nan)
    return pd.to_numeric(log[name], errors="coerce").to_numpy(dtype=np.float64)


def process_starts(log: pd.DataFrame) -> list[int]:
    """Row positions of ``log`` (sorted by epoch) where a training process started."""
    seconds, epoch_seconds = _column(log, "seconds"), _column(log, "epoch_seconds")
    starts = [0] if len(log) else []
    for i in range(1, len(log)):
        if np.isfinite(epoch_seconds[i]):
            # seconds - epoch_seconds is when the epoch began, since its process started: ~0 in a new
            # process, at least the previous row's seconds in the same one.
            new = seconds[i] - epoch_seconds[i] < 0.5 * seconds[i - 1]
        else:
            new = seconds[i] < seconds[i - 1]
        if new:
            starts.append(i)
    return starts


def epoch_times(log: pd.DataFrame) -> np.ndarray:
    """Seconds of each row's epoch: ``epoch_seconds``, else the rise of ``seconds`` within its process.

    A process that trained a single epoch followed by one whose first epoch took longer cannot be
    told apart from one process in a log without ``epoch_seconds``; that epoch then counts as the
    difference (too little).
    """
    seconds, epoch_seconds = _column(log, "seconds"), _column(log, "epoch_seconds")
    starts = set(process_starts(log))
    out = np.empty(len(log))
    for i in range(len(log)):
        if np.isfinite(epoch_seconds[i]):
            out[i] = epoch_seconds[i]
        else:
            out[i] = seconds[i] if i in starts else seconds[i] - seconds[i - 1]
    return out


def total_train_seconds(log: pd.DataFrame, resumed_from: int, this_process: float) -> tuple[float, str]:
    """(seconds, note) of a run's training: this process's wall time if it trained every epoch
    (``resumed_from`` = 0), else the sum of every epoch's time in ``log`` (its whole history)."""
    if resumed_from == 0:
        return this_process, "wall time of training"
    log = log.sort_values("epoch") if "epoch" in log else log
    n_proc = len(process_starts(log[log["epoch"] <= resumed_from])) + 1 if "epoch" in log else 2
    how = (f"sum of the per-epoch times over {len(log)} epochs trained in {n_proc} processes, resumed at epoch "
           f"{resumed_from}")
    if _column(log, "epoch_seconds").size and np.isnan(_column(log, "epoch_seconds")).any():
        how += " (epochs logged without epoch_seconds: the rise of seconds, which counts since each process started)"
    return float(epoch_times(log).sum()), how


def recomputed(run_dir: Path) -> tuple[float, str] | None:
    """The run's corrected (train_seconds, note) if its recorded row counts its last process only
    while its log shows more than one; else None."""
    try:
        log = pd.read_csv(run_dir / "train_log.csv").sort_values("epoch").reset_index(drop=True)
        rows = pd.read_csv(run_dir / TABLE, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, KeyError):
        return None
    notes = rows.loc[rows["metric"] == TRAIN_SECONDS, "note"]
    if notes.empty or not notes.iloc[0].startswith(LAST_PROCESS_NOTES):
        return None
    starts = process_starts(log)
    if len(starts) < 2:
        return None
    return total_train_seconds(log, int(log["epoch"].iloc[starts[-1] - 1]), float("nan"))


def rewrite_row(path: Path, metric: str, value: float, note: str, run_id: str | None = None) -> None:
    """Replace the value and note of ``metric``'s row(s) (of ``run_id``'s, if given) in a tidy CSV;
    every other byte of the file stays as it was (rewritten as pandas wrote it: minimal quoting)."""
    text = path.read_text()
    records = list(csv.reader(io.StringIO(text, newline="")))
    header = records[0]
    i_metric, i_value, i_note = header.index("metric"), header.index("value"), header.index("note")
    i_run = header.index("run_id")
    for rec in records[1:]:
        if rec and rec[i_metric] == metric and (run_id is None or rec[i_run] == run_id):
            rec[i_value], rec[i_note] = repr(float(value)), note
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(records)
    atomic_write_bytes(path, buf.getvalue().encode())


def fix_results(out: Path, log=print) -> list[str]:
    """Correct every finished run of ``out`` whose train_seconds counts its last process only;
    returns their run ids. The table's rows are corrected in place (its row order kept), then
    checked against the run directories as the runner does (:func:`bench.sync.sync_table`)."""
    fixed = []
    with locked(out / TABLE):
        for run_dir in sorted((out / RUNS).glob("*")):
            found = recomputed(run_dir) if (run_dir / "done.json").is_file() else None
            if found is None:
                continue
            old = pd.read_csv(run_dir / TABLE).set_index("metric").loc[TRAIN_SECONDS, "value"]
            rewrite_row(run_dir / TABLE, TRAIN_SECONDS, *found)
            if (out / TABLE).is_file():
                rewrite_row(out / TABLE, TRAIN_SECONDS, *found, run_id=run_dir.name)
            log(f"{run_dir.name}: train_seconds {float(old):.1f} -> {found[0]:.1f} ({found[1]})")
            fixed.append(run_dir.name)
    sync_table(out)
    return fixed


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m bench.train_time", description=__doc__.splitlines()[0])
    p.add_argument("--results", action="append", required=True, metavar="DIR",
                   help="results directory (repeatable)")
    args = p.parse_args(argv)
    for text in args.results:
        out = Path(text)
        if not (out / RUNS).is_dir():
            raise UserError(f"'{out}' is no results directory (it has no {RUNS}/ folder)")
    for text in args.results:
        fixed = fix_results(Path(text))
        print(f"{text}: {len(fixed)} run(s) corrected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
