"""The one results schema and its safe writes: a tidy long table, written atomically under a file lock.

``DIR/metrics.csv`` holds one row per (run_id, dataset, model, seed, split, metric).
Swept config values appear as extra columns named by their key (e.g. ``pie.eps2``).

The record of a run is its directory: ``DIR/runs/<run_id>/`` holds its own
``metrics.csv`` and, once it has finished, ``done.json``, which records what "intact" means
for its rows (their count and checksum; :mod:`bench.tidy` reads both). The tidy table is an
index over those directories, so it can always be rebuilt from them (:mod:`bench.sync`).
Here: the schema, the layout of results directories, atomic writes, locks and claims, and
the log of damaged files.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
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


def protocol_file(config: str | Path, dataset: str = "mnist") -> Path | None:
    """The protocol file of a preset (:mod:`bench.protocol`): ``<preset>_protocol.yaml`` beside its
    YAML (``configs/long_protocol.yaml``), if there is one. A protocol plans its runs on MNIST, so
    on another dataset there is none: its progress would count runs that do not exist there."""
    config = Path(config)
    path = config.with_name(f"{config.stem}_protocol.yaml")
    return path if dataset == "mnist" and path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.results --config F --dataset D``: the local and the reference results
    directory, and the preset's protocol file (:func:`protocol_file`; an empty line if none), one
    per line (``run_all.sh`` asks here, so the layout lives in one place)."""
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
        print(protocol_file(args.config, args.dataset) or "")
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


def move_aside(path: Path, why: str = "broken") -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    os.replace(path, aside)
    return aside


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
