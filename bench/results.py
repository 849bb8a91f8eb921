"""The one results schema: a tidy long table, appended atomically under a file lock.

``DIR/metrics.csv`` holds one row per (run_id, dataset, model, seed, split, metric).
Swept config values appear as extra columns named by their key (e.g. ``pie.eps2``).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

COLUMNS = (
    "run_id", "dataset", "model", "seed", "split", "metric", "value", "note", "status",
    "latent_dim", "preset", "config_hash", "git_commit", "started_at", "elapsed_s",
)
TABLE = "metrics.csv"


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


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.read_csv(path, keep_default_na=True)


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    extra = sorted(c for c in frame.columns if c not in COLUMNS)
    for c in COLUMNS:
        if c not in frame.columns:
            frame[c] = pd.NA
    return frame[list(COLUMNS) + extra]


def replace_run_rows(path: Path, rows: pd.DataFrame) -> None:
    """Put ``rows`` into the table, replacing any rows with the same run_id(s).

    Read-modify-write under the lock and an atomic rename: concurrent runners lose no
    rows, readers never see a partial line, and a re-run never duplicates a run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        table = read_table(path)
        table = table[~table["run_id"].isin(set(rows["run_id"]))]
        frames = [f for f in (table, rows) if len(f)]
        merged = pd.concat(frames, ignore_index=True) if frames else rows
        write_csv_atomic(path, order_columns(merged))

