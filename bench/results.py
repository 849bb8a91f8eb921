"""The one results schema: a tidy long table, written atomically under a file lock.

``DIR/metrics.csv`` holds one row per (run_id, dataset, model, seed, split, metric).
Swept config values appear as extra columns named by their key (e.g. ``pie.eps2``).

The record of a run is its directory: ``DIR/runs/<run_id>/`` holds its own
``metrics.csv`` and, once it has finished, ``done.json``, which records what "intact" means
for its rows (their count and checksum). The tidy table is an index over those directories,
so it can always be rebuilt from them: :func:`sync_table` (called by the runner on every
invocation) drops malformed lines, moves a table that cannot be read at all aside, and
where a finished run's own copy and the table's disagree, the intact one wins
(:func:`check_run`); a run whose rows no intact copy holds is handed back to be run again.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
import secrets
import sys
import time
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
REAL_RUN_ID = re.compile(r"real-[0-9a-f]{8}-[0-9a-f]{8}")  # real-<data checksum>-<eval hash> (bench.runner)
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


TEMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp" beside the file they become
STALE_TEMP_SECONDS = 60  # a temporary file this old whose writer's lock is gone is a killed writer's


def open_temp(path: Path) -> tuple[int, Path]:
    """A new, locked temporary file beside ``path``: (descriptor, its path).

    Created with mode 0666 less the umask, as ``open()`` creates files (``tempfile.mkstemp``
    would make it 0600, and the rename would keep that: results nobody else can read). Its
    ``flock`` is held until the descriptor is closed, which the OS does if the writer dies, so
    :func:`remove_stale_temps` can tell a killed writer's file from a live one's.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # 48 random bits collided: draw again
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder (:func:`open_temp`), fsync, then rename over ``path``."""
    fd, tmp = open_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:  # closed (and unlocked) only after the rename
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _temp_files(folder: Path, depth: int):
    """Temporary files of this package's writers under ``folder``, ``depth`` levels down."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if entry.is_file(follow_symlinks=False) and name.startswith(".") and (
                name.endswith(TEMP_SUFFIX) or name.startswith(".write-test-")):
            yield Path(entry.path)
        elif depth > 0 and entry.is_dir(follow_symlinks=False):
            yield from _temp_files(Path(entry.path), depth - 1)


def remove_stale_temps(folder: Path, depth: int = 3) -> list[Path]:
    """Remove the temporary files that killed writers left under ``folder``; return them.

    A file is a killed writer's when it is older than ``STALE_TEMP_SECONDS`` and nobody holds
    its lock (:func:`open_temp`; the OS released it when the writer died). Files of live
    writers, on this machine or another sharing the folder, are left alone.
    """
    removed = []
    now = time.time()
    for path in _temp_files(folder, depth):
        try:
            if now - path.stat().st_mtime < STALE_TEMP_SECONDS:
                continue
            fd = os.open(path, os.O_RDWR)  # a writable descriptor: NFS emulates flock with fcntl locks
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its writer is alive
            os.close(fd)
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


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
    return _identity_problem(row)


def _identity_problem(row: dict[str, str]) -> str:
    """Why a row's run_id cannot be its run's: a run id has no blank or control character and is
    ``<model>-<config_hash>-s<seed>`` (``real-...`` for the real images) where those columns are
    filled. A byte changed in any of them (a damaged table) makes the row malformed, so it is
    never read as the row of a run that does not exist."""
    rid = row["run_id"]
    if any(ch.isspace() or not ch.isprintable() for ch in rid):
        return "a run_id with blank or control characters"
    model, config_hash, seed = row.get("model", ""), row.get("config_hash", ""), row.get("seed", "")
    if model == "real":
        return "" if REAL_RUN_ID.fullmatch(rid) else f"run_id '{rid[:40]}' that is not real-<data>-<eval> of its row"
    if model and config_hash and seed:
        number = float(seed)
        if not number.is_integer() or rid != f"{model}-{config_hash}-s{int(number)}":
            return f"run_id '{rid[:40]}' that is not model-config_hash-s<seed> of its row"
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
    try:
        data = path.read_bytes()
    except OSError as e:
        return TableRead(_empty(), [], f"it cannot be read ({e.strerror})")
    return parse_bytes(data)


def parse_bytes(data: bytes) -> TableRead:
    """:func:`parse_table` of a file's bytes."""
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


# ----------------------------------------------------------------------------- damage


@dataclass(frozen=True)
class Damage:
    """One damaged file: what is wrong with it and what was done instead."""

    path: Path
    what: str
    done: str

    @property
    def run_id(self) -> str:
        """The run whose file it is ("" for a file outside ``runs/``, such as the table)."""
        return self.path.parent.name if self.path.parent.parent.name == RUNS else ""


class DamageLog:
    """The damaged files found while reading a results directory: one warning line each.

    A damaged file is its run's problem: the reader names it here, says what it did instead
    (used another copy, left the figure or the rows out, runs the run again) and goes on.
    """

    def __init__(self, echo=None):
        self.echo = echo or warn
        self.entries: list[Damage] = []

    def add(self, path: Path, what: str, done: str) -> None:
        what = " ".join(what.split())[:300]  # one line, whatever a damaged file held
        entry = Damage(Path(path), what, done)
        if any(e.path == entry.path and e.what == what for e in self.entries):
            return  # a file is named once per problem, however many readers meet it
        self.entries.append(entry)
        self.echo(f"warning: {path} {what}; {done}")

    def __bool__(self) -> bool:
        return bool(self.entries)

    def runs(self) -> list[str]:
        """The run ids with a damaged file, sorted."""
        return sorted({e.run_id for e in self.entries if e.run_id})


# ----------------------------------------------------------------------------- a finished run's record


@dataclass
class DoneRecord:
    """What a run's ``done.json`` says about its rows."""

    rows: int | None = None  # how many rows the run wrote (None: done.json of older code)
    digest: str | None = None  # rows_digest of those rows (None: older code)
    problem: str = ""  # why done.json could not be read ("" when it could)

    @property
    def verifiable(self) -> bool:
        return self.rows is not None and self.digest is not None


DIGEST_TEXT = ("split", "metric", "status", "note", "model", "dataset")  # the columns rows_digest covers ...
DIGEST_NUMBERS = ("value", "seed", "latent_dim")  # ... and these, compared as numbers


def rows_digest(frame: pd.DataFrame) -> str:
    """sha256 of a run's rows as the table holds them: the ``DIGEST_TEXT`` and ``DIGEST_NUMBERS``
    cells of every row, sorted (so column order, sweep columns and row order do not matter; an
    empty cell and a missing column count alike)."""
    def text(col: str) -> list[str]:
        cells = frame[col] if col in frame else [None] * len(frame)
        return [c if isinstance(c, str) else "" for c in cells]  # an empty text cell reads back as NaN

    def numbers(col: str) -> list[str]:
        cells = pd.to_numeric(frame[col], errors="coerce") if col in frame else [math.nan] * len(frame)
        return ["" if pd.isna(c) else repr(float(c)) for c in cells]

    columns = [text(c) for c in DIGEST_TEXT] + [numbers(c) for c in DIGEST_NUMBERS]
    rows = sorted("\x1f".join(cells) for cells in zip(*columns, strict=True))
    return hashlib.sha256("\x1e".join(rows).encode("utf-8", "surrogateescape")).hexdigest()


def done_bytes(run_id: str, frame: pd.DataFrame) -> bytes:
    """``done.json`` of a run whose rows are ``frame``: what "intact" means for them (their
    count and :func:`rows_digest`, taken as they read back from CSV)."""
    read = parse_bytes(frame.to_csv(index=False).encode())
    rows = read.frame
    if read.broken or read.dropped or len(rows) != len(frame):  # a writer's bug, not damage
        raise ValueError(f"rows of {run_id} do not read back from CSV ({read.broken or read.dropped})")
    return json.dumps({"run_id": run_id, "finished": True, "rows": len(rows),
                       "rows_sha256": rows_digest(rows)}).encode()


def read_done(run_dir: Path) -> DoneRecord:
    """``run_dir/done.json``; one of older code (no row count or checksum) reads as unverifiable."""
    try:
        data = json.loads((run_dir / DONE).read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        return DoneRecord(problem=f"is unreadable ({type(e).__name__})")
    if not isinstance(data, dict):
        return DoneRecord(problem="is not a JSON object")
    rows, digest = data.get("rows"), data.get("rows_sha256")
    if rows is None and digest is None:
        return DoneRecord()  # older code
    if (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0 or not isinstance(digest, str)
            or len(digest) != 64):
        return DoneRecord(problem="holds no valid row count and checksum")
    return DoneRecord(rows, digest)


# ----------------------------------------------------------------------------- the table as an index


def finished_runs(out: Path) -> list[Path]:
    """Run directories under ``out/runs`` that hold ``done.json``."""
    runs = out / RUNS
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if (p / DONE).is_file())


def _fingerprint(frame: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """What must agree between a run's own rows and its rows in the table, when its done.json
    (of older code) holds no checksum."""
    values = pd.to_numeric(frame["value"], errors="coerce")
    return sorted((str(s), str(m), str(st), "nan" if math.isnan(v) else repr(float(v)))
                  for s, m, st, v in zip(frame["split"], frame["metric"], frame["status"], values, strict=True))


@dataclass
class RunCheck:
    """One finished run's rows: where an intact copy is, and what is damaged."""

    run_dir: Path
    source: str  # "both" (they agree), "run" (only its own copy is intact: the table's is restored),
    # "table" (only the table's is: its own is rewritten), "lost" (neither: the run is re-run)
    rows: pd.DataFrame | None  # the intact rows (None when lost)
    in_table: bool = True  # whether the table held any row of the run (a run copied in from elsewhere has none)
    # (file, what is wrong, which action applies: "done" for done.json, else the source)
    damage: list[tuple[Path, str, str]] = field(default_factory=list)


# What the runner does about a damaged record (RunCheck.damage): by the action's key.
WRITE_ACTION = {
    "done": "its rows are checked without a checksum",
    "table": "kept the table's intact rows and rewrote it from them",
    "lost": "the run is marked unfinished, to be run again",
}


def _own_problem(read: TableRead) -> str:
    if read.broken:
        return f"is not a table ({read.broken})"
    if read.dropped:
        return f"is damaged ({read.dropped[0]}{f' and {len(read.dropped) - 1} more' if len(read.dropped) > 1 else ''})"
    if read.frame.empty:
        return "holds no rows"
    return ""


def check_run(run_dir: Path, table_rows: pd.DataFrame) -> RunCheck:
    """Compare a finished run's own ``metrics.csv`` with its rows in the table; the intact copy wins.

    With a ``done.json`` that records the row count and checksum, a copy is intact when it
    matches them. With one of older code, the run's own copy is intact when it reads whole (no
    malformed line), and the table's is used only when the run's own copy is missing or damaged.
    """
    own_path = run_dir / TABLE
    done = read_done(run_dir)
    damage = []
    if done.problem:
        damage.append((run_dir / DONE, done.problem, "done"))
    read = parse_table(own_path) if own_path.is_file() else None
    own = read.frame if read is not None else None
    problem = "is missing" if read is None else _own_problem(read)
    if not problem and (own["run_id"].astype(str) != run_dir.name).any():
        problem = "holds a row of another run"

    def intact(rows: pd.DataFrame) -> bool:
        return len(rows) == done.rows and rows_digest(rows) == done.digest

    if done.verifiable:
        if not problem and not intact(own):
            problem = f"does not match its done.json ({len(own)} rows, {done.rows} recorded, or other values)"
        own_ok, table_ok = not problem, intact(table_rows)
    else:
        own_ok = not problem
        # Unverifiable: the table's copy agrees if it equals the run's own, and is used if that is damaged.
        table_ok = (_fingerprint(table_rows) == _fingerprint(own)) if own_ok else len(table_rows) > 0
    in_table = len(table_rows) > 0
    if own_ok and table_ok:
        return RunCheck(run_dir, "both", own, in_table, damage)
    if own_ok:
        return RunCheck(run_dir, "run", own, in_table, damage)
    if table_ok:
        damage.append((own_path, problem, "table"))
        return RunCheck(run_dir, "table", table_rows, in_table, damage)
    lacks = "the table's copy is not intact either" if in_table else "the table lacks them too"
    damage.append((own_path, f"{problem} and {lacks}", "lost"))
    return RunCheck(run_dir, "lost", None, in_table, damage)


def reconcile(out: Path, table: pd.DataFrame) -> tuple[pd.DataFrame, list[RunCheck]]:
    """``table`` with every finished run's rows taken from its intact copy (:func:`check_run`),
    and the checks of the runs whose copies disagree or whose record is damaged (the others are left out)."""
    ids = table["run_id"].astype(str)
    checks = [c for c in (check_run(d, table[ids == d.name]) for d in finished_runs(out))
              if c.source != "both" or c.damage]
    restore = [c for c in checks if c.source == "run"]
    if restore:
        names = {c.run_dir.name for c in restore}
        kept = table[~ids.isin(names)]
        table = pd.concat([f for f in (kept, *[c.rows for c in restore]) if len(f)], ignore_index=True)
    return table, checks


def runs_missing_rows(out: Path, table: pd.DataFrame) -> list[str]:
    """Finished runs whose rows in ``table`` differ from (usually: fall short of) their own intact copy."""
    return [c.run_dir.name for c in reconcile(out, table)[1] if c.source == "run"]


def move_aside(path: Path, why: str = "broken") -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    os.replace(path, aside)
    return aside


@dataclass
class SyncResult:
    """What :func:`sync_table` found and did."""

    table: pd.DataFrame
    changed: bool = False
    table_damage: list[str] = field(default_factory=list)  # what was wrong with the table itself
    checks: list[RunCheck] = field(default_factory=list)  # finished runs whose copies disagreed

    @property
    def lost(self) -> list[Path]:
        """Finished runs whose rows no intact copy holds."""
        return [c.run_dir for c in self.checks if c.source == "lost"]


def _verified(path: Path, every_run: bool) -> SyncResult:
    """The table at ``path`` cleaned and completed from the run directories.

    Call under the table's lock. Malformed lines are dropped (one warning); an unreadable
    table is moved aside (one warning). Then, if ``every_run`` or anything was wrong, every
    finished run's rows are checked against its own ``metrics.csv`` and ``done.json``, and
    the table takes each run's intact copy (:func:`reconcile`; one line).
    """
    read = parse_table(path)
    result = SyncResult(read.frame)
    if read.broken:
        aside = move_aside(path)
        warn(f"warning: {path} is not a results table ({read.broken}); moved it to {aside.name} "
             f"and rebuilt it from {path.parent / RUNS}")
        result.changed = True
        result.table_damage.append(f"not a results table ({read.broken})")
    if read.dropped:
        more = f" and {len(read.dropped) - 2} more" if len(read.dropped) > 2 else ""
        warn(f"warning: dropped {len(read.dropped)} malformed line(s) of {path} "
             f"({'; '.join(read.dropped[:2])}{more})")
        result.changed = True
        result.table_damage.append(f"{len(read.dropped)} malformed line(s)")
    if not (every_run or result.changed):
        return result
    result.table, result.checks = reconcile(path.parent, result.table)
    restored = [c for c in result.checks if c.source == "run"]
    if restored:
        warn(f"note: restored the rows of {len(restored)} finished run(s) to {path} from their run directories")
        result.changed = True
    # A run the table has no row of is not damage (its directory may have been copied in from another
    # results folder); rows that are there but differ from the intact copy are.
    differ = [c for c in restored if c.in_table]
    if differ:
        result.table_damage.append(f"held rows of {len(differ)} finished run(s) that differ from their intact copies")
    return result


def sync_table(out: Path, damage: DamageLog | None = None) -> SyncResult:
    """Make ``out/metrics.csv`` agree with the finished runs under ``out/runs`` (see module doc).

    A run's own ``metrics.csv`` that is damaged while the table holds its intact rows is
    rewritten from them. Damaged run files are named in ``damage`` (one warning each); runs
    whose rows no intact copy holds are returned in ``lost`` for the caller to run again.
    """
    path = out / TABLE
    if not path.exists() and not finished_runs(out):
        return SyncResult(_empty())
    damage = damage if damage is not None else DamageLog()
    with locked(path):
        result = _verified(path, every_run=True)
        if result.changed:
            write_csv_atomic(path, order_columns(result.table))
        for check in result.checks:
            if check.source == "table":
                write_csv_atomic(check.run_dir / TABLE, own_columns(check.rows))
            for file, what, action in check.damage:
                damage.add(file, what, WRITE_ACTION[action])
    return result


def own_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """A run's rows as its own ``metrics.csv`` holds them: the table's columns, without the sweep
    columns of other runs (empty for this one)."""
    extra = [c for c in rows.columns if c not in COLUMNS and rows[c].isna().all()]
    return order_columns(rows.drop(columns=extra))


def replace_run_rows(path: Path, rows: pd.DataFrame) -> None:
    """Put ``rows`` into the table, replacing any rows with the same run_id(s).

    Read-modify-write under the lock and an atomic rename: concurrent runners lose no
    rows, readers never see a partial line, and a re-run never duplicates a run. A table
    found damaged is repaired first (see :func:`_verified`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        table = _verified(path, every_run=False).table
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
