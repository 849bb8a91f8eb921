"""The one results schema: a tidy long table, written atomically under a file lock.

``DIR/metrics.csv`` holds one row per (run_id, dataset, model, seed, split, metric).
Swept config values appear as extra columns named by their key (e.g. ``pie.eps2``).

The record of a run is its directory: ``DIR/runs/<run_id>/`` holds its own
``metrics.csv`` and, once it has finished, ``done.json``. The tidy table is an index
over those directories, so it can always be rebuilt from them: :func:`sync_table`
(called by the runner on every invocation) drops malformed lines, moves a table that
cannot be read at all aside, and restores the rows of every finished run that the
table lacks or holds differently.
"""

from __future__ import annotations

import csv
import fcntl
import io
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

COLUMNS = (
    "run_id", "dataset", "model", "seed", "split", "metric", "value", "note", "status",
    "latent_dim", "preset", "config_hash", "git_commit", "started_at", "elapsed_s",
)
REQUIRED = ("run_id", "model", "split", "metric", "value", "status")  # a table without these is not one
# Read as text whatever they look like: a commit "5e77292" or a config hash "0123456789" is not a number.
TEXT_COLUMNS = ("run_id", "dataset", "model", "split", "metric", "note", "status", "preset", "config_hash",
                "git_commit", "started_at")
INT_COLUMNS = ("seed", "latent_dim")  # integers, written without ".0" even next to empty cells
STATUSES = ("ok", "failed")
TABLE = "metrics.csv"
RUNS = "runs"
DONE = "done.json"  # written last: its presence marks a finished run
# The committed results are the reference; a user's runs go to a git-ignored folder of their own.
REFERENCE_ROOT = Path("results")
LOCAL_ROOT = REFERENCE_ROOT / "local"


def reference_dir(preset: str, dataset: str = "mnist") -> Path:
    """The committed results of a preset and dataset: ``results`` (the default preset on MNIST),
    ``results/<preset>``, ``results/<dataset>``, ``results/<dataset>/<preset>``."""
    out = REFERENCE_ROOT if dataset == "mnist" else REFERENCE_ROOT / dataset
    return out if preset == "default" else out / preset


def local_dir(preset: str, dataset: str = "mnist") -> Path:
    """Where a user's runs go by default: ``results/local/<preset>``, ``results/local/<dataset>/<preset>``."""
    return (LOCAL_ROOT if dataset == "mnist" else LOCAL_ROOT / dataset) / preset


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.results --config F --dataset D``: the local and the reference results
    directory, one per line (``run_all.sh`` asks here, so the layout lives in one place)."""
    from bench.cli import Parser, user_errors_exit_2

    @user_errors_exit_2
    def run() -> int:
        p = Parser(prog="python -m bench.results", description=main.__doc__.splitlines()[0])
        p.add_argument("--config", default="configs/default.yaml")
        p.add_argument("--dataset", default="mnist")
        args = p.parse_args(argv)
        preset = Path(args.config).stem
        print(local_dir(preset, args.dataset))
        print(reference_dir(preset, args.dataset))
        return 0

    return run()


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def locked(path: Path):
    """Exclusive advisory lock on ``path.lock`` (one machine, or a POSIX-locking FS)."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_csv_atomic(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


# ----------------------------------------------------------------------------- reading


@dataclass
class TableRead:
    """A tidy CSV as far as it could be read."""

    frame: pd.DataFrame
    dropped: list[str] = field(default_factory=list)  # "line N: why" per malformed line left out
    broken: str = ""  # why the file is no table at all ("" when it is one)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _row_problem(rec: list[str], header: list[str]) -> str:
    """Why one record of the table is malformed ("" when it is a row)."""
    if len(rec) != len(header):
        return f"{len(rec)} fields where the header has {len(header)}"
    if any("\udc80" <= ch <= "\udcff" for text in rec for ch in text):  # undecodable bytes
        return "bytes that are not UTF-8 text"
    row = dict(zip(header, rec, strict=True))
    if not row["run_id"] or not row["metric"]:
        return "no run_id or metric"
    if row["status"] not in STATUSES:
        return f"status '{row['status'][:20]}' is not one of {', '.join(STATUSES)}"
    for col in ("value", *[c for c in INT_COLUMNS if c in row]):
        if row[col] and not _is_number(row[col]):
            return f"{col} '{row[col][:20]}' is not a number"
    return ""


def parse_table(path: Path) -> TableRead:
    """Read a tidy CSV line by line, leaving out (and naming) every malformed line.

    A line is malformed if it has the wrong number of fields, bytes that are not text,
    a status, value or seed that cannot be one, or if it is the last line and lacks its
    line end (a write cut short: its last field may be cut too). A missing or empty file
    is an empty table; a file whose first line is not a header with the columns
    ``REQUIRED`` is ``broken``.
    """
    if not path.is_file():
        return TableRead(_empty())
    data = path.read_bytes()
    if not data.strip():
        return TableRead(_empty())
    text = data.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    unreadable = ""
    try:
        for rec in reader:
            records.append((reader.line_num, rec))
    except csv.Error as e:  # the rest of the file cannot be split into records
        unreadable = f"line {reader.line_num} and after: {e}"
    dropped: list[str] = []
    if not records:
        return TableRead(_empty(), [], "no header line")
    header = records[0][1]
    missing = [c for c in REQUIRED if c not in header]
    if missing or len(set(header)) != len(header) or _row_problem(header, header).startswith("bytes"):
        what = f"no column(s) {', '.join(missing)}" if missing else "a header that is not one"
        return TableRead(_empty(), [], f"its first line has {what}")
    good = []
    for i, (line, rec) in enumerate(records[1:], start=1):
        if not rec:
            continue  # a blank line
        problem = _row_problem(rec, header)
        if not problem and i == len(records) - 1 and not text.endswith("\n") and not unreadable:
            problem = "cut short (no line end)"
        if problem:
            dropped.append(f"line {line}: {problem}")
        else:
            good.append(rec)
    if unreadable:
        dropped.append(unreadable)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(good)
    frame = pd.read_csv(io.StringIO(buf.getvalue()), keep_default_na=True,
                        dtype={c: str for c in TEXT_COLUMNS if c in header})
    return TableRead(frame, dropped)


def read_table(path: Path) -> pd.DataFrame:
    """The well-formed rows of a tidy CSV (empty if it is missing or no table)."""
    read = parse_table(path)
    return _empty() if read.broken else read.frame


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    extra = sorted(c for c in frame.columns if c not in COLUMNS)
    for c in COLUMNS:
        if c not in frame.columns:
            frame[c] = pd.NA
    frame = frame[list(COLUMNS) + extra].copy()
    for c in INT_COLUMNS:  # concat with empty cells (real rows) would otherwise make 1 -> 1.0
        numbers = pd.to_numeric(frame[c], errors="coerce")
        if ((numbers % 1 == 0) | numbers.isna()).all():
            frame[c] = numbers.astype("Int64")
    return frame


# ----------------------------------------------------------------------------- the table as an index


def finished_runs(out: Path) -> list[Path]:
    """Run directories under ``out/runs`` that hold ``done.json``."""
    runs = out / RUNS
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if (p / DONE).is_file())


def _fingerprint(frame: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """What must agree between a run's own rows and its rows in the table."""
    values = pd.to_numeric(frame["value"], errors="coerce")
    return sorted(
        (str(s), str(m), str(st), "nan" if math.isnan(v) else repr(float(v)))
        for s, m, st, v in zip(frame["split"], frame["metric"], frame["status"], values, strict=True)
    )


def runs_missing_rows(out: Path, table: pd.DataFrame) -> list[str]:
    """Finished runs whose rows in ``table`` differ from (usually: fall short of) their own."""
    lagging = []
    ids = table["run_id"].astype(str)
    for run_dir in finished_runs(out):
        own = parse_table(run_dir / TABLE)
        if own.broken or own.frame.empty:
            continue
        if _fingerprint(table[ids == run_dir.name]) != _fingerprint(own.frame):
            lagging.append(run_dir.name)
    return lagging


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    os.replace(path, aside)
    return aside


def _verified(path: Path, every_run: bool) -> tuple[pd.DataFrame, bool]:
    """The table at ``path`` cleaned and completed from the run directories; (table, changed).

    Call under the table's lock. Malformed lines are dropped (one warning); an unreadable
    table is moved aside (one warning). Then, if ``every_run`` or anything was wrong, every
    finished run's rows are checked against its own ``metrics.csv`` and restored where they
    differ (one line).
    """
    read = parse_table(path)
    table, changed = read.frame, False
    if read.broken:
        aside = _move_aside(path)
        warn(f"warning: {path} is not a results table ({read.broken}); moved it to {aside.name} "
             f"and rebuilt it from {path.parent / RUNS}")
        changed = True
    if read.dropped:
        more = f" and {len(read.dropped) - 2} more" if len(read.dropped) > 2 else ""
        warn(f"warning: dropped {len(read.dropped)} malformed line(s) of {path} "
             f"({'; '.join(read.dropped[:2])}{more})")
        changed = True
    if not (every_run or changed):
        return table, False
    lagging = set(runs_missing_rows(path.parent, table))
    if lagging:
        restored = [parse_table(path.parent / RUNS / r / TABLE).frame for r in sorted(lagging)]
        kept = table[~table["run_id"].astype(str).isin(lagging)]
        table = pd.concat([f for f in (kept, *restored) if len(f)], ignore_index=True)
        warn(f"note: restored the rows of {len(lagging)} finished run(s) to {path} from their run directories")
        changed = True
    return table, changed


def sync_table(out: Path) -> None:
    """Make ``out/metrics.csv`` agree with the finished runs under ``out/runs`` (see module doc)."""
    path = out / TABLE
    if not path.exists() and not finished_runs(out):
        return
    with locked(path):
        table, changed = _verified(path, every_run=True)
        if changed:
            write_csv_atomic(path, order_columns(table))


def replace_run_rows(path: Path, rows: pd.DataFrame) -> None:
    """Put ``rows`` into the table, replacing any rows with the same run_id(s).

    Read-modify-write under the lock and an atomic rename: concurrent runners lose no
    rows, readers never see a partial line, and a re-run never duplicates a run. A table
    found damaged is repaired first (see :func:`_verified`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        table, _ = _verified(path, every_run=False)
        table = table[~table["run_id"].astype(str).isin(set(rows["run_id"].astype(str)))]
        frames = [f for f in (table, rows) if len(f)]
        merged = pd.concat(frames, ignore_index=True) if frames else rows
        write_csv_atomic(path, order_columns(merged))


@contextmanager
def claim(run_dir: Path, wait: bool, log=print):
    """Hold ``run_dir/.lock`` for the duration of a run; yields False if another process holds it.

    An ``fcntl`` lock, so the OS releases it when its holder dies: a killed runner never
    leaves a run claimed. With ``wait``, block until the holder lets go instead.
    """
    with open(run_dir / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            log(f"waiting for {run_dir.name}: another runner is on it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


if __name__ == "__main__":
    sys.exit(main())
