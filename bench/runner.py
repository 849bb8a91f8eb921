"""One run, start to finish: :class:`RunSpec` in, a run directory and the tidy table's rows out.

:func:`execute_run` claims, trains, evaluates and records one (model, seed, sweep point);
every executor (:mod:`bench.executors`) calls it, in this process or in a worker, so run ids,
skip-finished/resume, failure rows and the locked table behave the same everywhere.
:func:`record_real` writes the rows of the real test images (model ``real``, "True" in Table 1).
``DIR/runs/<run_id>/`` holds the resolved ``config.json``, ``train_log.csv``, ``metrics.csv``,
``samples.png``, ``artefacts.npz``, ``figures.npz``, the trained ``weights.safetensors``
(:mod:`bench.weights`) and checkpoints.

Besides the metrics, a run's rows record how long it trained (split ``train``): ``train_seconds``
(summed over every process, :mod:`bench.train_time`), ``epochs_trained`` and ``converged_epoch``,
the first epoch at which the convergence rule held on its learning curves (NaN, with the reason
in the note, when the rule does not hold at its end: "cap reached" for a run trained until
converged that hit ``train.max_epochs``).
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench import convergence
from bench.config import Config, EvalConfig, TrainConfig
from bench.context import Context
from bench.data import load_data
from bench.errors import UserError
from bench.evaluate import Evaluator, MetricRow, evaluate_model, model_seconds
from bench.evaluate_real import evaluate_real
from bench.figure_data import save_figure_data
from bench.metrics import RECON_MSE_MEAN_IMAGE
from bench.metrics import names as N
from bench.record import RunRecord, real_run_id
from bench.registry import build_model
from bench.results import DONE, RUNS, TABLE, atomic_write_bytes, claim, move_aside, warn, write_csv_atomic
from bench.sync import replace_run_rows
from bench.tidy import done_bytes, read_table
from bench.tracking import make_tracker
from bench.train import STOPPED_CAP, STOPPED_CONVERGED, Diverged, TrainResult, train_model
from bench.weights import save_weights


@dataclass
class RunSpec:
    """Everything one run needs; picklable, so any executor can ship it to a worker."""

    model: str
    seed: int
    config: Config
    sweep: dict[str, Any] = field(default_factory=dict)  # swept key -> value at this point
    out_dir: str = "results"
    data_root: str | None = None
    device: str = "cpu"
    progress: bool = False
    wait: bool = False  # if another runner has claimed the run: wait for it (True) or move on (False)

    def record(self) -> RunRecord:
        """The run's ``config.json`` (:mod:`bench.record`): its identity and settings."""
        return RunRecord.of(self.config, self.model, self.seed, self.sweep, describe_device(self.device),
                            torch.__version__)

    @property
    def run_id(self) -> str:
        return RunRecord.of(self.config, self.model, self.seed).run_id


@dataclass
class RunOutcome:
    run_id: str
    status: str  # "ok", "skipped", "failed", or "busy" (claimed by another runner; not run here)
    reason: str = ""


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def describe_device(device: str) -> str:
    """Human-readable device name for the run's metadata."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({torch.get_num_threads()} threads)"


def _rows_frame(spec: RunSpec, rows: list[MetricRow], status: str, started: str, elapsed: float) -> pd.DataFrame:
    cfg = spec.config
    model_cfg = cfg.models[spec.model]
    record = RunRecord.of(cfg, spec.model, spec.seed)
    base = {
        "run_id": record.run_id, "dataset": cfg.data.dataset, "model": spec.model, "seed": spec.seed,
        "status": status, "latent_dim": getattr(model_cfg, "latent_dim", pd.NA), "preset": cfg.preset,
        "config_hash": record.config_hash, "git_commit": git_commit(), "started_at": started,
        "elapsed_s": round(elapsed, 3),
    }
    base.update(spec.sweep)
    frame = pd.DataFrame([{**base, "split": r.split, "metric": r.metric, "value": r.value,
                           "note": r.note} for r in rows])
    return frame


def save_grid(images: np.ndarray, path: Path, nrow: int) -> None:
    import torchvision

    torchvision.utils.save_image(torch.from_numpy(images), str(path), nrow=nrow, padding=2)


def record_failure(spec: RunSpec, reason: str, started: str | None = None, elapsed: float = 0.0) -> None:
    """A ``status = failed`` row with the reason, in the table (and the run's folder, if it has one)."""
    started = started or datetime.now(timezone.utc).isoformat(timespec="seconds")
    frame = _rows_frame(spec, [MetricRow("train", "failed", float("nan"), reason)], "failed", started, elapsed)
    run_dir = Path(spec.out_dir) / RUNS / spec.run_id
    if run_dir.is_dir():
        write_csv_atomic(run_dir / TABLE, frame)
    replace_run_rows(Path(spec.out_dir) / TABLE, frame)


def execute_run(spec: RunSpec, data=None, log=print, eval_timings: dict[str, float] | None = None,
                ctx: Context | None = None) -> RunOutcome:
    """Claim, train, evaluate and record one run; idempotent (skips a finished run).

    ``ctx`` (:mod:`bench.context`, default: its defaults) says where the data and the feature
    extractor's cache are, and whether to download.

    ``eval_timings``, if given, receives the evaluation's seconds per phase (``bench.perf``).

    The run is claimed by a lock on ``runs/<run_id>/.lock`` held until it is recorded: a
    run claimed by another runner comes back ``busy`` (or, with ``spec.wait``, is waited
    for and then skipped if that runner finished it). Any failure becomes a failed row
    with its reason.
    """
    run_dir = Path(spec.out_dir) / RUNS / spec.run_id
    if (run_dir / DONE).is_file():
        return RunOutcome(spec.run_id, "skipped")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        what = "exists and is not a directory" if run_dir.exists() else f"cannot be created ({e.strerror})"
        reason = f"run directory {run_dir} {what}; move it away and re-run"
        record_failure(spec, reason)
        return RunOutcome(spec.run_id, "failed", reason)
    with claim(run_dir, spec.wait, log) as claimed:
        if not claimed:
            return RunOutcome(spec.run_id, "busy", "claimed by another runner; coming back to it at the end")
        if (run_dir / DONE).is_file():  # the runner that held it finished it
            return RunOutcome(spec.run_id, "skipped")
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        try:
            _train_and_record(spec, data, run_dir, log, eval_timings, ctx or Context())
            return RunOutcome(spec.run_id, "ok")
        except Diverged as e:
            reason = f"diverged: {e}"
        except UserError as e:  # e.g. MNIST missing where a worker looks for it: its one line says it all
            reason = f"UserError: {e}"
        except Exception as e:  # any other failure is recorded too; the sweep goes on
            traceback.print_exc()
            reason = f"{type(e).__name__}: {e}"
        record_failure(spec, reason, started, time.perf_counter() - t0)
        return RunOutcome(spec.run_id, "failed", reason)


def _train_and_record(spec: RunSpec, data, run_dir: Path, log, eval_timings: dict[str, float] | None,
                      ctx: Context) -> None:
    out = Path(spec.out_dir)
    record = spec.record()
    record.write(run_dir)
    dc = spec.config.data
    if data is None or data.dataset != dc.dataset or data.val_images.shape[0] != dc.val_size:
        data = load_data(spec.data_root, dc.val_size, dc.val_seed, spec.device, dc.dataset, ctx)
    train_data = data  # the model may train on a subset; evaluation always sees the full splits
    if spec.config.data.train_subset > 0:
        train_data = dataclasses.replace(data, train_images=data.train_images[:spec.config.data.train_subset],
                                         train_labels=data.train_labels[:spec.config.data.train_subset])
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, spec.config)
    train_cfg = spec.config.train_for(spec.model)
    result = train_model(model, train_data, train_cfg, seed=spec.seed, run_dir=run_dir,
                         record=record, progress=spec.progress, log=log,
                         on_epoch_end=make_tracker(data, spec.config, spec.seed, Evaluator.of(ctx)))
    rows = [MetricRow("train", N.FINAL_PREFIX + k, v, "mean over the last epoch")
            for k, v in result.final_parts.items()]
    rows.append(MetricRow("val", N.VAL_LOSS, result.val_loss, "held-out validation images"))
    train_seconds, how = result.total_seconds()
    rows.append(MetricRow("train", N.TRAIN_SECONDS, train_seconds, how))
    rows += length_rows(result, train_cfg)
    save_weights(run_dir, model, spec.run_id)
    eval_rows, artefacts = evaluate_and_time(model, data, spec.config.eval, spec.seed, eval_timings, ctx)
    rows += eval_rows
    save_artefacts(run_dir, artefacts, spec.config.eval.grid_size)
    frame = _rows_frame(spec, rows, "ok", started, time.perf_counter() - t0)
    write_csv_atomic(run_dir / TABLE, frame)
    replace_run_rows(out / TABLE, frame)
    atomic_write_bytes(run_dir / DONE, done_bytes(spec.run_id, frame))  # last: the run is finished


def length_rows(result: TrainResult, cfg: TrainConfig) -> list[MetricRow]:
    """``epochs_trained`` and ``converged_epoch`` of a run (see the module docstring)."""
    n = result.epochs_trained
    if result.stopped_by == STOPPED_CONVERGED:
        how = f"until converged: the rule held after epoch {n} (train.epochs {cfg.epochs}, cap {cfg.max_epochs})"
    elif result.stopped_by == STOPPED_CAP:
        how = f"until converged: {STOPPED_CAP} (train.max_epochs {cfg.max_epochs}) without the rule holding"
    else:
        how = f"fixed length (train.epochs {cfg.epochs})"
    return [MetricRow("train", N.EPOCHS_TRAINED, float(n), how),
            converged_epoch_row(result.history, result.stopped_by == STOPPED_CAP)]


def converged_epoch_row(history: pd.DataFrame, at_cap: bool) -> MetricRow:
    """``converged_epoch`` of a run from its learning curves (``history``: its train_log), judged by
    the current rule; ``at_cap``: it trained until converged and stopped at the cap."""
    n = int(history["epoch"].max()) if len(history) else 0
    verdict = convergence.judge(history)
    first = convergence.first_converged_epoch(history) if verdict.converged else None
    if first is not None:
        note = "first epoch at whose end the convergence rule held on the learning curves up to it"
    elif at_cap:
        note = f"not converged: {STOPPED_CAP} at epoch {n}"
    else:
        note = f"not converged: {verdict.status} at epoch {n}"
    return MetricRow("train", N.CONVERGED_EPOCH, float("nan") if first is None else float(first), note)


def evaluate_and_time(model, data, cfg: EvalConfig, seed: int, eval_timings: dict[str, float] | None = None,
                      ctx: Context | None = None) -> tuple[list[MetricRow], dict]:
    """:func:`bench.evaluate.evaluate_model`'s rows and artefacts, plus the rows ``eval_seconds`` and
    ``eval_model_seconds`` (``eval_timings``, if given, receives the seconds per phase)."""
    t0 = time.perf_counter()
    timings = {} if eval_timings is None else eval_timings
    evaluator = Evaluator.of(ctx or Context())  # the context's: a worker's runs share its caches
    rows, artefacts = evaluate_model(model, data, cfg, seed, timings=timings, evaluator=evaluator)
    rows.append(MetricRow("test", N.EVAL_SECONDS, time.perf_counter() - t0, "wall time of evaluation"))
    rows.append(MetricRow("test", N.EVAL_MODEL_SECONDS, model_seconds(timings),
                          "part of eval_seconds spent in the model's own calls (encode, decode, sample, log_prob), "
                          "whose counts the protocol fixes"))
    return rows, artefacts


def save_artefacts(run_dir: Path, artefacts: dict, grid_size: int) -> None:
    """``artefacts.npz`` (all, not committed), ``figures.npz`` (what the figures need) and ``samples.png``."""
    np.savez_compressed(run_dir / "artefacts.npz", **artefacts)
    save_figure_data(run_dir, artefacts)  # the small, committed part: the report rebuilds figures from it
    save_grid(artefacts["samples_t1"], run_dir / "samples.png", grid_size)


def record_real(out: Path, config: Config, data, wait: bool = False, log=print, ctx: Context | None = None) -> bool:
    """Rows for the real test images ("True" in Table 1), once per results directory.

    Recorded like a run, in ``runs/real-<data>-<eval>/`` (``metrics.csv`` + ``done.json``),
    so the table can be rebuilt from the run directories alone. Rows of an older table
    without that directory are moved into it rather than measured again.

    Returns False when another runner holds the claim on them and ``wait`` is False: call
    again with ``wait=True`` once the runs are done. That waits for the other runner, and
    if it died without finishing (its lock went with it), takes the claim over and writes
    the rows itself.
    """
    run_id = real_run_id(data.checksum, config.eval)
    run_dir = out / RUNS / run_id
    if (run_dir / DONE).is_file():
        return True
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        warn(f"warning: {run_dir} exists and is not a directory; the real-image rows are not recorded")
        return True
    with claim(run_dir, wait=wait, log=log) as claimed:
        if not claimed:
            return False  # another runner is on them: come back at the end
        if (run_dir / DONE).is_file():
            return True  # the runner that held them finished them
        # Rows of an older table (written before real-image runs had a directory) are adopted; not
        # those of a run whose rows were lost (done.json moved aside): no copy of them is intact.
        table = read_table(out / TABLE)
        frame = table[table["run_id"].astype(str) == run_id]
        if any(run_dir.glob(f"{DONE}.*")):
            frame = frame.iloc[0:0]
        if frame.empty or RECON_MSE_MEAN_IMAGE not in set(frame["metric"]):  # none, or from before the references
            t0 = time.perf_counter()
            rows = evaluate_real(data, config.eval, Evaluator.of(ctx or Context()))
            if not rows:
                return True
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            frame = pd.DataFrame([{
                "run_id": run_id, "dataset": config.data.dataset, "model": "real", "seed": pd.NA, "split": r.split,
                "metric": r.metric, "value": r.value, "note": r.note, "status": "ok", "latent_dim": pd.NA,
                "preset": config.preset, "config_hash": "", "git_commit": git_commit(), "started_at": started,
                "elapsed_s": round(time.perf_counter() - t0, 3)} for r in rows])
            replace_run_rows(out / TABLE, frame)
        frame = frame.dropna(axis=1, how="all")
        write_csv_atomic(run_dir / TABLE, frame)
        atomic_write_bytes(run_dir / DONE, done_bytes(run_id, frame))
    return True


def recover_lost_rows(run_dir: Path, log=print) -> bool:
    """Write the rows of a finished run again when no intact copy of them is left; True if done.

    The one place where "re-evaluate the run from its kept weights, if it has them" plugs in:
    load the weights the run kept, evaluate them as :func:`_train_and_record` does, and write
    the rows and ``done.json`` with :func:`done_bytes`. Runs now keep ``weights.safetensors``
    (:mod:`bench.weights`), but :mod:`bench.reevaluate` rebuilds only the evaluation rows; the
    training rows (losses, ``train_seconds``, ``epochs_trained``, ``converged_epoch``) would have
    to come from ``train_log.csv``. Until that is written, this returns False and the caller marks
    the run unfinished (:func:`mark_unfinished`), so that it is run again: resumed from its last
    checkpoint, which for a finished run leaves only the evaluation to do, else trained anew.
    """
    return False


def mark_unfinished(run_dir: Path) -> Path:
    """Move ``done.json`` aside (kept as ``done.json.rows-lost-<time>``): the run is planned again."""
    return move_aside(run_dir / DONE, "rows-lost")
