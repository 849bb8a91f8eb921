"""Runner: ``python -m bench.run --models pie,vae,wae --seeds 5 [--config F] [--out DIR] ...``.

Every (model, seed, sweep point) is one run with its own ``DIR/runs/<run_id>/``:
resolved ``config.json``, ``train_log.csv``, ``metrics.csv``, ``samples.png``,
``artefacts.npz``, ``figures.npz`` (what the report's figures need) and checkpoints.
All runs' rows go into the tidy ``DIR/metrics.csv``.
Finished runs are skipped; unfinished ones resume from their last checkpoint.
Bad input exits 2 with one line on stderr; any failed run makes the exit code 1.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.config import (
    Config,
    apply_overrides,
    config_from_dict,
    copy_raw,
    parse_override,
    parse_value,
    read_yaml,
    set_value,
)
from bench.data import load_data
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.evaluate import MetricRow, evaluate_model, evaluate_real
from bench.executors import EXECUTORS
from bench.figure_data import save_figure_data
from bench.metrics import RECON_MSE_MEAN_IMAGE
from bench.registry import MODELS, build_model, check_model_names
from bench.results import (
    DONE,
    RUNS,
    TABLE,
    atomic_write_bytes,
    claim,
    read_table,
    replace_run_rows,
    sync_table,
    warn,
    write_csv_atomic,
)
from bench.tracking import make_tracker
from bench.train import Diverged, check_checkpoints, train_model

DEFAULT_CONFIG = "configs/default.yaml"
MAX_RUNS_WITHOUT_YES = 100  # a bigger plan is more likely a typo (--seeds 1000000) than a wish


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

    @property
    def run_id(self) -> str:
        return f"{self.model}-{self.config.run_hash(self.model)}-s{self.seed}"


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


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu, cuda or auto, got '{name}'")
    return name


def _rows_frame(spec: RunSpec, rows: list[MetricRow], status: str, started: str, elapsed: float) -> pd.DataFrame:
    cfg = spec.config
    model_cfg = cfg.models[spec.model]
    base = {
        "run_id": spec.run_id, "dataset": cfg.data.dataset, "model": spec.model, "seed": spec.seed,
        "status": status, "latent_dim": getattr(model_cfg, "latent_dim", pd.NA), "preset": cfg.preset,
        "config_hash": cfg.run_hash(spec.model), "git_commit": git_commit(), "started_at": started,
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


def execute_run(spec: RunSpec, data=None, log=print) -> RunOutcome:
    """Claim, train, evaluate and record one run; idempotent (skips a finished run).

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
            _train_and_record(spec, data, run_dir, log)
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


def _train_and_record(spec: RunSpec, data, run_dir: Path, log) -> None:
    out = Path(spec.out_dir)
    cfg_dict = {"model": spec.model, "seed": spec.seed, "sweep": spec.sweep, "preset": spec.config.preset,
                "run_id": spec.run_id, "device": describe_device(spec.device), "torch_version": torch.__version__,
                **spec.config.run_dict(spec.model)}
    atomic_write_bytes(run_dir / "config.json", json.dumps(cfg_dict, indent=2, sort_keys=True).encode())
    dc = spec.config.data
    if data is None or data.dataset != dc.dataset or data.val_images.shape[0] != dc.val_size:
        data = load_data(spec.data_root, dc.val_size, dc.val_seed, spec.device, dc.dataset)
    train_data = data  # the model may train on a subset; evaluation always sees the full splits
    if spec.config.data.train_subset > 0:
        train_data = dataclasses.replace(data, train_images=data.train_images[:spec.config.data.train_subset],
                                         train_labels=data.train_labels[:spec.config.data.train_subset])
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, spec.config)
    train_cfg = spec.config.train
    model_beta1 = getattr(spec.config.models[spec.model], "beta1", None)  # e.g. pie.beta1; None: train.beta1
    if model_beta1 is not None:
        train_cfg = dataclasses.replace(train_cfg, beta1=model_beta1)
    result = train_model(model, train_data, train_cfg, seed=spec.seed, run_dir=run_dir,
                         config_dict=cfg_dict, progress=spec.progress, log=log,
                         on_epoch_end=make_tracker(data, spec.config, spec.seed))
    rows = [MetricRow("train", f"final_{k}", v, "mean over the last epoch") for k, v in result.final_parts.items()]
    rows.append(MetricRow("val", "loss", result.val_loss, "held-out validation images"))
    rows.append(MetricRow("train", "train_seconds", result.seconds, "wall time of training in this process"))
    eval_t0 = time.perf_counter()
    eval_rows, artefacts = evaluate_model(model, data, spec.config.eval, spec.seed)
    rows += eval_rows
    rows.append(MetricRow("test", "eval_seconds", time.perf_counter() - eval_t0, "wall time of evaluation"))
    np.savez_compressed(run_dir / "artefacts.npz", **artefacts)
    save_figure_data(run_dir, artefacts)  # the small, committed part: the report rebuilds figures from it
    save_grid(artefacts["samples_t1"], run_dir / "samples.png", spec.config.eval.grid_size)
    frame = _rows_frame(spec, rows, "ok", started, time.perf_counter() - t0)
    write_csv_atomic(run_dir / TABLE, frame)
    replace_run_rows(out / TABLE, frame)
    atomic_write_bytes(run_dir / DONE, json.dumps({"run_id": spec.run_id, "finished": True}).encode())


def record_real(out: Path, config: Config, data) -> None:
    """Rows for the real test images ("True" in Table 1), once per results directory.

    Recorded like a run, in ``runs/real-<data>-<eval>/`` (``metrics.csv`` + ``done.json``),
    so the table can be rebuilt from the run directories alone. Rows of an older table
    without that directory are moved into it rather than measured again.
    """
    eval_blob = json.dumps(dataclasses.asdict(config.eval), sort_keys=True).encode()
    run_id = f"real-{data.checksum[:8]}-{hashlib.sha256(eval_blob).hexdigest()[:8]}"
    run_dir = out / RUNS / run_id
    if (run_dir / DONE).is_file():
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        warn(f"warning: {run_dir} exists and is not a directory; the real-image rows are not recorded")
        return
    with claim(run_dir, wait=False) as claimed:
        if not claimed or (run_dir / DONE).is_file():
            return  # another runner records them
        table = read_table(out / TABLE)
        frame = table[table["run_id"].astype(str) == run_id]
        if frame.empty or RECON_MSE_MEAN_IMAGE not in set(frame["metric"]):  # none, or from before the references
            t0 = time.perf_counter()
            rows = evaluate_real(data, config.eval)
            if not rows:
                return
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            frame = pd.DataFrame([{
                "run_id": run_id, "dataset": config.data.dataset, "model": "real", "seed": pd.NA, "split": r.split,
                "metric": r.metric, "value": r.value, "note": r.note, "status": "ok", "latent_dim": pd.NA,
                "preset": config.preset, "config_hash": "", "git_commit": git_commit(), "started_at": started,
                "elapsed_s": round(time.perf_counter() - t0, 3)} for r in rows])
            replace_run_rows(out / TABLE, frame)
        frame = frame.dropna(axis=1, how="all")
        write_csv_atomic(run_dir / TABLE, frame)
        atomic_write_bytes(run_dir / DONE, json.dumps({"run_id": run_id, "finished": True}).encode())


# ----------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints usage too)
        raise UserError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated registry names (default: every registered model, %(default)s)")
    p.add_argument("--seeds", default="1", help="N: run seeds 0..N-1")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML preset (default: %(default)s)")
    p.add_argument("--out", default="results", help="results directory (default: %(default)s)")
    p.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="the data.dataset to use (same as --set data.dataset=NAME; default: the preset's, mnist)")
    p.add_argument("--data-root", default=None,
                   help="folder of the dataset's files (else $MNIST_ROOT or $FASHION_MNIST_ROOT, "
                        "else ./data or ./data/fashion-mnist)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config field; repeatable")
    p.add_argument("--sweep", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                   help="run the grid of listed values; repeatable (grids multiply)")
    p.add_argument("--executor", default="local", choices=sorted(EXECUTORS),
                   help="how runs are carried out (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1,
                   help="parallel runs (--executor process), or the local Ray instance's CPUs (--executor ray)")
    p.add_argument("--ray-cpus", type=float, default=None, help="CPUs each Ray task requests (default 1)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: a local Ray)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--yes", action="store_true", help=f"start a plan of more than {MAX_RUNS_WITHOUT_YES} runs")
    args = p.parse_args(argv)
    if args.dataset:  # first, so an explicit --set data.dataset=... still wins
        args.overrides.insert(0, f"data.dataset={args.dataset}")
    return args


def parse_seeds(text: str) -> list[int]:
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"--seeds must be a positive integer, got '{text}'") from None
    if n < 1:
        raise UserError(f"--seeds must be a positive integer, got '{text}'")
    return list(range(n))


def _unique(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(v == w and type(v) is type(w) for w in out):
            out.append(v)
    return out


def parse_sweeps(sweeps: list[str]) -> list[tuple[str, list[Any]]]:
    """``--sweep section.key=v1,v2`` -> [("section.key", [v1, v2])], values typed as YAML scalars."""
    out = []
    for text in sweeps:
        (section, key), _ = parse_override(text.split(",")[0])
        values_text = text.partition("=")[2]
        values = _unique([parse_value(v, f"--sweep '{text}'") for v in values_text.split(",") if v.strip()])
        if not values:
            raise UserError(f"--sweep '{text}' lists no values")
        out.append((f"{section}.{key}", values))
    return out


def _with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The raw config with swept values set as they were parsed (no text round trip)."""
    out = copy_raw(raw)
    for key, value in values.items():
        set_value(out, key, value)
    return out


def _resolved(cfg: Config, key: str) -> Any:
    """A field's value after type checking (e.g. 1 -> 1.0 for a float field): what a sweep column shows."""
    section, name = key.split(".", 1)
    return getattr(cfg.models[section] if section in cfg.models else getattr(cfg, section), name)


def plan_runs(args: argparse.Namespace) -> list[RunSpec]:
    """Expand models × sweep points × seeds into RunSpecs, validating every config first.

    Repeated models, sweep values or run ids are planned once. A plan of more than
    ``MAX_RUNS_WITHOUT_YES`` runs needs ``--yes``.
    """
    models = check_model_names(_unique([m.strip() for m in args.models.split(",") if m.strip()]))
    if not models:
        raise UserError("--models lists no model")
    seeds = parse_seeds(args.seeds)
    raw = apply_overrides(read_yaml(args.config), args.overrides)
    preset = Path(args.config).stem
    base = config_from_dict(raw, preset)
    sweeps = parse_sweeps(args.sweep)
    if any(key == "data.dataset" for key, _ in sweeps):
        raise UserError("--sweep over data.dataset is not supported: run one dataset per command "
                        "(--dataset NAME), each into its own --out directory")
    for key, values in sweeps:  # a swept key must exist: build once with its first value
        config_from_dict(_with_values(raw, {key: values[0]}), preset)
    # A sweep over another model's section does not multiply this model's runs.
    relevant = {m: [(k, v) for k, v in sweeps if k.split(".")[0] in (m, "data", "train", "eval")] for m in models}
    planned = len(seeds) * sum(math.prod(len(v) for _, v in relevant[m]) for m in models)
    if planned > MAX_RUNS_WITHOUT_YES and not args.yes:
        raise UserError(f"this plans {planned} runs (--models, --seeds, --sweep); more than {MAX_RUNS_WITHOUT_YES} "
                        "need --yes")
    specs: dict[str, RunSpec] = {}
    for model in models:
        grid = itertools.product(*[v for _, v in relevant[model]]) if relevant[model] else [()]
        for point in grid:
            values = {k: v for (k, _), v in zip(relevant[model], point, strict=True)}
            cfg = config_from_dict(_with_values(raw, values), preset) if values else copy.deepcopy(base)
            build_model(model, cfg)  # size checks now, before anything is written
            sweep = {k: _resolved(cfg, k) for k in values}
            for seed in seeds:
                spec = RunSpec(model, seed, cfg, sweep, args.out, args.data_root, args.device, not args.no_progress)
                specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"output directory '{out}' is not writable ({e.strerror})") from None


def summarize(out: Path, run_ids: list[str]) -> str:
    table = read_table(out / TABLE)
    table = table[table["run_id"].isin(run_ids) & (table["status"] == "ok")]
    keep = ["recon_mse", "sharpness", "fd_lenet", "bits_per_dim", "probe_accuracy", "final_loss"]
    table = table[table["metric"].isin(keep)]
    if table.empty:
        return "(no finished runs)"
    agg = table.groupby(["model", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    return agg.pivot(index="model", columns="metric", values="mean").to_string(float_format="%.4g")


def run_all(executor: str, specs: list[RunSpec], data, args: argparse.Namespace) -> list[RunOutcome]:
    """Carry out ``specs``; runs another runner had claimed are waited for at the end."""
    def carry(todo):
        return EXECUTORS[executor](todo, data, jobs=args.jobs, address=args.ray_address, cpus_per_run=args.ray_cpus)

    outcomes = carry(specs)
    busy = [i for i, o in enumerate(outcomes) if o.status == "busy"]
    if busy:
        print(f"{len(busy)} run(s) were claimed by another runner: waiting for them", flush=True)
        again = carry([dataclasses.replace(specs[i], wait=True) for i in busy])
        for i, o in zip(busy, again, strict=True):
            outcomes[i] = o
    return outcomes


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        args.device = resolve_device(args.device)
        if args.jobs < 1:
            raise UserError(f"--jobs must be a positive integer, got {args.jobs}")
        specs = plan_runs(args)
        out = Path(args.out)
        first = specs[0].config.data
        data = load_data(args.data_root, first.val_size, first.val_seed, args.device, first.dataset)
        check_writable(out)
        for spec in specs:  # before anything runs: a crafted checkpoint of a run to resume stops it (exit 2)
            if not (out / "runs" / spec.run_id / DONE).is_file():
                check_checkpoints(out / "runs" / spec.run_id)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("PIE_BENCH_THREADS", torch.get_num_threads())))
    sync_table(out)  # the table is an index of the run directories: repair it before anything else
    finished = sum((out / RUNS / s.run_id / DONE).is_file() for s in specs)
    print(f"{len(specs)} run(s) planned: {len(specs) - finished} to start, {finished} already finished", flush=True)
    record_real(out, specs[0].config, data)
    try:
        outcomes = run_all(args.executor, specs, data, args)
    except UserError as e:  # e.g. Ray missing or its cluster unreachable; finished runs stay written
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarize(out, [o.run_id for o in outcomes]))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed:", file=sys.stderr)
        for o in failed:
            print(f"  {o.run_id}: {o.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
