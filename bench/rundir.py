"""Reading a run directory's files: a damaged file is its run's problem, never the reader's.

``runs/<run_id>/`` holds ``config.json``, ``train_log.csv``, ``metrics.csv``, ``done.json`` and
the figure arrays. Every reader of ``config.json`` and ``train_log.csv`` (the runner, the report,
the selection of runs, :class:`bench.record.RunRecord`) goes through here; ``metrics.csv`` and ``done.json`` are read by
:mod:`bench.tidy`, the figure arrays by :mod:`bench.figure_data`. A file that cannot be read,
or holds what no writer of this package writes, is named in one warning line
(:class:`bench.results.DamageLog`) and read as absent: the run keeps its rows, loses what the
file would have given (its figure, its curve, its settings) and the reader goes on.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.config import settings_problem
from bench.results import RUNS, DamageLog

CONFIG = "config.json"
TRAIN_LOG = "train_log.csv"
# Top-level keys of a config.json besides its sections, and the types the runner writes.
CONFIG_KEYS = {"model": str, "run_id": str, "preset": str, "device": str, "torch_version": str, "sweep": dict}


def config_problem(config: Any) -> str:
    """Why a parsed ``config.json`` is not one the runner writes ("" when it could be)."""
    if not isinstance(config, dict):
        return "is not a JSON object"
    for key, kind in CONFIG_KEYS.items():
        if key in config and not isinstance(config[key], kind):
            return f"has a '{key}' that is not a {kind.__name__}"
    seed = config.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        return "has a 'seed' that is not a non-negative integer"
    why = settings_problem(config)
    return f"is malformed ({why})" if why else ""


def read_config(run_dir: Path, damage: DamageLog | None = None) -> dict[str, Any]:
    """A run's ``config.json``; ``{}`` when it is absent or damaged (then named in ``damage``)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: not JSON, or not UTF-8
        problem = f"is unreadable ({type(e).__name__})"
    else:
        problem = config_problem(config)
    if problem:
        if damage is not None:
            damage.add(path, problem, "its run is read without its settings")
        return {}
    return config


def read_train_log(run_dir: Path, damage: DamageLog | None = None) -> pd.DataFrame | None:
    """A run's ``train_log.csv`` with numeric columns; None when it is absent or damaged.

    Every cell the training loop writes is a number; a log with no ``epoch`` column, an epoch
    that is not a whole number, or a cell that is not a number is damaged.
    """
    path = Path(run_dir) / TRAIN_LOG
    if not path.is_file():
        return None
    problem, log = "", None
    try:
        data = path.read_bytes()
        text = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)  # each cell as written
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        problem = f"is unreadable ({type(e).__name__})"
    else:
        numbers = text.apply(lambda col: pd.to_numeric(col.replace("", np.nan), errors="coerce"))
        bad = (numbers.isna() & (text != "")).any()
        if "epoch" not in numbers:
            problem = "has no epoch column"
        elif bad.any():
            problem = f"has a cell that is not a number (column '{str(bad.idxmax())[:40]}')"
        elif numbers["epoch"].isna().any() or not (numbers["epoch"] % 1 == 0).all():
            problem = "has an epoch that is not a whole number"
        else:
            log = pd.read_csv(io.BytesIO(data))  # as the writer's types read back (integers stay integers)
    if problem:
        if damage is not None:
            damage.add(path, problem, "its training curve is left out")
        return None
    return log


def check_run_dirs(out: Path, damage: DamageLog) -> None:
    """Name every damaged ``config.json`` under ``out/runs`` once (the runner calls this at start,
    so that a damaged sibling is reported once, not by each run that looks at it)."""
    runs = Path(out) / RUNS
    if runs.is_dir():
        for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
            read_config(run_dir, damage)
