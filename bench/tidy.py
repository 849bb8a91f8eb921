"""Reading the tidy table and a finished run's ``done.json``, as far as they can be read.

A malformed line of a ``metrics.csv`` is left out and named, never read as data
(:func:`parse_table`); ``done.json`` records what "intact" means for a run's rows: their count
and :func:`rows_digest` (:func:`done_bytes`). The schema is :mod:`bench.results`'s.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.results import COLUMNS, DONE, INT_COLUMNS, REAL_RUN_ID, REQUIRED, STATUSES, TEXT_COLUMNS


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


