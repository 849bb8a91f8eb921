"""The tidy table as an index of the run directories: checked, repaired and extended under its lock.

``DIR/metrics.csv`` can always be rebuilt from ``DIR/runs/``: :func:`sync_table` (called by the
runner on every invocation) drops malformed lines, moves a table that cannot be read at all
aside, and where a finished run's own copy and the table's disagree, the intact one wins
(:func:`check_run`); a run whose rows no intact copy holds is handed back to be run again.
:func:`replace_run_rows` is the one writer of the table's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.results import COLUMNS, DONE, RUNS, TABLE, DamageLog, locked, move_aside, warn, write_csv_atomic
from bench.tidy import TableRead, _empty, order_columns, parse_table, read_done, rows_digest


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


