"""Runner: ``python -m bench.run --models pie,vae,wae --seeds 5 [--config F] [--out DIR] ...``.

``DIR`` defaults to the user's own git-ignored ``results/local/<preset>`` (another dataset:
``results/local/<dataset>/<preset>``); the committed ``results/`` is written only when named.

Every (model, seed, sweep point) is one run with its own ``DIR/runs/<run_id>/``:
resolved ``config.json``, ``train_log.csv``, ``metrics.csv``, ``samples.png``,
``artefacts.npz``, ``figures.npz`` (what the report's figures need) and checkpoints.
All runs' rows go into the tidy ``DIR/metrics.csv``.
Finished runs are skipped; unfinished ones resume from their last checkpoint.
Bad input exits 2 with one line on stderr; any failed run makes the exit code 1; damaged
files found in the results directory (and contained: docs/damage.md) make it 3.

This module plans the runs and hands them to an executor (:mod:`bench.executors`);
one run itself is :func:`bench.runner.execute_run`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from bench.cli import (
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STATUS_HELP,
    Parser,
    comma_list,
    positive_int,
    unique,
    user_errors_exit_2,
)
from bench.config import config_from_dict
from bench.context import Context
from bench.context import resolve as resolve_context
from bench.data import load_data
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.executors import EXECUTORS
from bench.metrics import names as N
from bench.registry import MODELS, build_model, check_model_names
from bench.results import DONE, RUNS, TABLE, DamageLog, local_dir, remove_stale_temps
from bench.rundir import check_run_dirs
from bench.runner import RunOutcome, RunSpec, mark_unfinished, record_real, recover_lost_rows
from bench.sweep import apply_overrides, count, expand, first_points, parse_sweeps, resolve
from bench.sync import sync_table
from bench.tidy import read_table
from bench.train import check_checkpoints
from bench.yamlfile import read_yaml

DEFAULT_CONFIG = "configs/default.yaml"
MAX_RUNS_WITHOUT_YES = 100  # a bigger plan is more likely a typo (--seeds 1000000) than a wish
MAX_RUNS = 100_000  # refused even with --yes: at minutes a run, more would never finish (and seeds stay < 2**32)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu, cuda or auto, got '{name}'")
    return name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m bench.run", description=__doc__.splitlines()[0],
               epilog=EXIT_STATUS_HELP.format(failed="a run failed (each listed on stderr)", where=""))
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated registry names (default: every registered model, %(default)s)")
    p.add_argument("--seeds", default="1", help="N: run seeds 0..N-1")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML preset (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="results directory (default: results/local/<preset>, results/local/<dataset>/<preset> for "
                   "another dataset; git-ignored: the committed results/ are written only when named here)")
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


def parse_seeds(text: str) -> range:
    """Seeds 0..N-1, as a range: counted before anything is built from them (--seeds 10**12 costs nothing)."""
    n = positive_int(text, "--seeds")
    if n > MAX_RUNS:
        raise UserError(f"--seeds {n} plans more than {MAX_RUNS} runs, the most one command can plan (even with --yes)")
    return range(n)


def plan_runs(args: argparse.Namespace, ctx: Context | None = None) -> list[RunSpec]:
    """Expand models × sweep points × seeds into RunSpecs, validating every config first.

    Repeated models, sweep values or run ids are planned once. A plan of more than
    ``MAX_RUNS_WITHOUT_YES`` runs needs ``--yes``. ``ctx`` (default: from ``args``) gives the runs'
    progress bars.
    """
    progress = ctx.progress if ctx is not None else not args.no_progress
    models = check_model_names(unique(comma_list(args.models)))
    if not models:
        raise UserError("--models lists no model")
    seeds = parse_seeds(args.seeds)
    raw = apply_overrides(read_yaml(args.config), args.overrides)
    preset = Path(args.config).stem
    base = config_from_dict(raw, preset)
    if args.out is None:  # the user's own folder, never the committed reference
        args.out = str(local_dir(preset, base.data.dataset))
    sweeps = parse_sweeps(args.sweep)
    for first in first_points(raw, sweeps):  # every swept key exists
        config_from_dict(first, preset)
    planned = len(seeds) * sum(count(sweeps, m) for m in models)
    if planned > MAX_RUNS:
        raise UserError(f"this plans {planned} runs (--models, --seeds, --sweep); at most {MAX_RUNS} can be planned "
                        "in one command, even with --yes")
    if planned > MAX_RUNS_WITHOUT_YES and not args.yes:
        raise UserError(f"this plans {planned} runs (--models, --seeds, --sweep); more than {MAX_RUNS_WITHOUT_YES} "
                        "need --yes")
    specs: dict[str, RunSpec] = {}
    for model in models:
        for point, point_raw in expand(raw, sweeps, model):
            cfg = config_from_dict(point_raw, preset) if point else copy.deepcopy(base)
            build_model(model, cfg)  # size checks now, before anything is written
            sweep = {key: resolve(cfg, key) for key in point}
            for seed in seeds:
                spec = RunSpec(model, seed, cfg, sweep, args.out, args.data_root, args.device, progress)
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
    keep = [N.RECON_MSE, N.SHARPNESS, N.FD_LENET, N.BITS_PER_DIM, N.PROBE_ACCURACY, N.FINAL_LOSS]
    table = table[table["metric"].isin(keep)]
    if table.empty:
        return "(no finished runs)"
    agg = table.groupby(["model", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    return agg.pivot(index="model", columns="metric", values="mean").to_string(float_format="%.4g")


def run_all(executor: str, specs: list[RunSpec], data, args: argparse.Namespace, ctx: Context) -> list[RunOutcome]:
    """Carry out ``specs``; runs another runner had claimed are waited for at the end."""
    def carry(todo):
        return EXECUTORS[executor](todo, data, jobs=args.jobs, address=args.ray_address, cpus_per_run=args.ray_cpus,
                                   ctx=ctx)

    outcomes = carry(specs)
    busy = [i for i, o in enumerate(outcomes) if o.status == "busy"]
    if busy:
        print(f"{len(busy)} run(s) were claimed by another runner: waiting for them", flush=True)
        again = carry([dataclasses.replace(specs[i], wait=True) for i in busy])
        for i, o in zip(busy, again, strict=True):
            outcomes[i] = o
    return outcomes


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = prepare(args)
    return carry_out(plan_runs(args, ctx), args, ctx)


def prepare(args: argparse.Namespace) -> Context:
    """The context of parsed runner arguments, with ``args.device`` resolved and ``--jobs`` checked."""
    ctx = resolve_context(data_root=args.data_root, progress=not args.no_progress)
    args.device = resolve_device(args.device)
    if args.jobs < 1:
        raise UserError(f"--jobs must be a positive integer, got {args.jobs}")
    return ctx


def carry_out(specs: list[RunSpec], args: argparse.Namespace, ctx: Context) -> int:
    """Run planned ``specs`` (in their order, ``args.jobs`` at a time) into ``args.out``: check the
    results directory, record the real-image rows, run, summarise; the exit status of :func:`main`.
    The specs share one dataset and one validation split (loaded once, here)."""
    out = Path(args.out)
    first = specs[0].config.data

    def split(spec: RunSpec) -> tuple:
        return spec.config.data.dataset, spec.config.data.val_size, spec.config.data.val_seed

    if any(split(s) != split(specs[0]) for s in specs):
        raise UserError("the planned runs differ in data.dataset, data.val_size or data.val_seed: run each as its "
                        "own command")
    data = load_data(None, first.val_size, first.val_seed, args.device, first.dataset, ctx)
    check_writable(out)
    for spec in specs:  # before anything runs: a crafted checkpoint of a run to resume stops it (exit 2)
        if not (out / "runs" / spec.run_id / DONE).is_file():
            check_checkpoints(out / "runs" / spec.run_id)
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    damage, table_damage = check_results(out)
    finished = sum((out / RUNS / s.run_id / DONE).is_file() for s in specs)
    print(f"{len(specs)} run(s) planned: {len(specs) - finished} to start, {finished} already finished (in {out})",
          flush=True)
    real_recorded = record_real(out, specs[0].config, data, ctx=ctx)
    # A UserError from here on (e.g. Ray missing or its cluster unreachable) still exits 2: runs
    # already finished stay written, each in its own directory and row of the table.
    outcomes = run_all(args.executor, specs, data, args, ctx)
    if not real_recorded:  # another runner held them: wait for it, and take them over if it died
        print("the real-image rows were claimed by another runner: waiting for them", flush=True)
        record_real(out, specs[0].config, data, wait=True, ctx=ctx)
    print(summarize(out, [o.run_id for o in outcomes]))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed:", file=sys.stderr)
        for o in failed:
            print(f"  {o.run_id}: {o.reason}", file=sys.stderr)
        return EXIT_FAILED
    if damage or table_damage:
        what = [f"{len(damage.entries)} damaged run file(s)"] if damage else []
        what += [f"the table ({'; '.join(table_damage)})"] if table_damage else []
        print(f"damage found and contained: {', '.join(what)}; see the warnings above (exit status "
              f"{EXIT_DAMAGED})", file=sys.stderr)
        return EXIT_DAMAGED
    return EXIT_OK


def check_results(out: Path) -> tuple[DamageLog, list[str]]:
    """What the runner does to the results directory before any run: remove the temporary files
    of killed writers, name every damaged run file once, and make the table agree with the run
    directories (the intact copy of each finished run's rows wins). A finished run whose rows
    no intact copy holds is recovered, else marked unfinished, so that it is run again.
    Returns the damage found (run files, and what was wrong with the table)."""
    removed = remove_stale_temps(out)
    if removed:
        print(f"note: removed {len(removed)} temporary file(s) left by killed writers under {out}", file=sys.stderr)
    damage = DamageLog()
    check_run_dirs(out, damage)
    sync = sync_table(out, damage)  # the table is an index of the run directories: repair it before anything else
    for run_dir in sync.lost:
        if not recover_lost_rows(run_dir):
            mark_unfinished(run_dir)
            check_checkpoints(run_dir)  # it resumes from its checkpoint: refuse a crafted one (exit 2)
    return damage, sync.table_damage


if __name__ == "__main__":
    sys.exit(main())
