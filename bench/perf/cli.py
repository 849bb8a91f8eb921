"""``python -m bench.perf``: flags, the sections in order, the CSV and the printed tables."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from bench.cli import Parser, user_errors_exit_2
from bench.config import load_config
from bench.context import resolve
from bench.data import load_data
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.perf.common import (
    COLUMNS,
    DEFAULT_CONFIG,
    FULL,
    PAPER_CONFIG,
    QUICK,
    SECTIONS,
    SHORT,
    Row,
    rows_frame,
    write_table,
)
from bench.perf.datapath import bench_data
from bench.perf.evalshare import bench_eval_share
from bench.perf.harness import bench_harness
from bench.perf.householder import bench_householder
from bench.perf.levers import bench_levers
from bench.perf.machine import load_average, machine_columns, machine_rows
from bench.perf.metric_costs import bench_metrics
from bench.perf.peer import bench_peer
from bench.perf.pie_speed import bench_pie_profile, bench_pie_speed
from bench.perf.targets import target_rows
from bench.perf.throughput import bench_models
from bench.perf.timing import configure_device, resolve_device
from bench.registry import MODELS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    description = sys.modules["bench.perf"].__doc__.splitlines()[0]  # the package docstring's first line
    p = Parser(prog="python -m bench.perf", description=description)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="CPU preset (default: %(default)s)")
    p.add_argument("--paper-config", default=PAPER_CONFIG, help="paper-width preset (default: %(default)s)")
    p.add_argument("--out", default="results/local/perf.csv",
                   help="CSV to write (default: %(default)s; the committed table: --out results/perf.csv)")
    p.add_argument("--quick", action="store_true", help="shrink everything (smoke test; numbers mean nothing)")
    p.add_argument("--short", action="store_true", help="fewer, shorter timings (a GPU call of a few minutes)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default: %(default)s)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $PIE_BENCH_THREADS, else 1 with --quick, else torch's)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast where the model allows it (VAE/WAE), any device")
    p.add_argument("--compile", action="store_true", help="torch.compile model.loss in the training steps")
    p.add_argument("--compile-levers", action="store_true",
                   help="also time torch.compile in the levers section (slow to warm up on a CPU)")
    p.add_argument("--metrics-csv", default="results/metrics.csv",
                   help="runner table for the eval-time target (default: %(default)s)")
    p.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="the data.dataset of both presets (default: the preset's, mnist)")
    p.add_argument("--data-root", default=None,
                   help="folder of the dataset's files (else $MNIST_ROOT or $FASHION_MNIST_ROOT, else its default)")
    return p.parse_args(argv)


def format_tables(frame: pd.DataFrame) -> str:
    """One pivot table per section: rows (preset, model, width), columns metrics."""
    out = []
    for section in SECTIONS:
        part = frame[frame["section"] == section]
        if part.empty:
            continue
        if section == "targets":
            lines = [f"{r.metric:>26} {r.value:12.4g} {r.unit:<9} {r.note}" for r in part.itertuples()]
            out.append(f"== {section}\n" + "\n".join(lines))
            continue
        wide = part.pivot_table(index=["preset", "model", "width"], columns="metric", values="value",
                                aggfunc="first", sort=False)
        out.append(f"== {section}\n" + wide.to_string(float_format=lambda v: f"{v:.4g}"))
    return "\n\n".join(out)


def run(argv: list[str] | None = None, log=print) -> pd.DataFrame:
    args = parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for n in names:
        if n not in MODELS:
            raise UserError(f"unknown model '{n}' (valid models: {', '.join(MODELS)})")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise UserError(f"unknown section '{s}' (valid sections: {', '.join(SECTIONS)})")
    ctx = resolve(data_root=args.data_root, threads=args.threads or None)
    device = resolve_device(args.device)
    threads = ctx.threads or (1 if args.quick else 0)
    if threads:
        torch.set_num_threads(threads)
    notes = configure_device(device)
    budget = QUICK if args.quick else SHORT if args.short else FULL
    overrides = [f"data.dataset={args.dataset}"] if args.dataset else []
    cfg = load_config(args.config, overrides)
    paper = load_config(args.paper_config, overrides)
    presets = [(cfg, False), (paper, True)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = load_data(None, cfg.data.val_size, cfg.data.val_seed, device, cfg.data.dataset, ctx)
    n_train = cfg.data.train_subset or data.train_images.shape[0]
    info = machine_columns(device)
    log(f"bench.perf on {info['device_name']} ({device.type}), {info['threads']} threads, torch "
        f"{info['torch_version']}{' [quick]' if args.quick else ''}")
    for note in notes:
        log(note)
    load_start = load_average()
    cores = os.cpu_count() or 1
    if load_start > 0.5 * cores:
        notes.append(f"warning: load average {load_start:.1f} on {cores} cores when starting: other processes "
                     "compete for the CPU, so timings are unreliable (with several torch threads they can be many "
                     "times slower; --threads 1 or OMP_WAIT_POLICY=PASSIVE limit the damage)")
        log(notes[-1])

    rows: list[Row] = []
    t0 = time.perf_counter()
    if "data" in sections:
        rows += bench_data(cfg, data, device, budget, ctx, log)
    if "model" in sections:
        rows += bench_models(names, presets, data, device, budget, args, log)
    if "harness" in sections:
        rows += bench_harness(names, cfg, data, device, budget, args, log)
    if "metrics" in sections:
        rows += bench_metrics(names, cfg, data, device, budget, ctx, log)
    if "evalshare" in sections:
        rows += bench_eval_share(names, cfg, data, device, ctx, args.quick, log)
    if "householder" in sections:
        rows += bench_householder(names, presets, data, device, budget, log)
    if "levers" in sections:
        rows += bench_levers(names, cfg, data, device, budget, args, log)
    if "peer" in sections:
        rows += bench_peer(names, cfg, data, device, budget, log)
    pie_threads = [threads or 1] if args.quick else [1, 2]  # the protocol runs 1 thread per run; 2 = the machine
    if "pie_profile" in sections and "pie" in names:
        rows += bench_pie_profile(cfg, data, device, budget, pie_threads, log)
    if "pie_speed" in sections and "pie" in names:
        rows += bench_pie_speed(presets, data, device, budget, args, pie_threads, log)
    if threads:
        torch.set_num_threads(threads)
    if "machine" in sections:
        rows = machine_rows(cfg.preset, load_start, load_average(), ctx.omp_wait_policy) + rows
    kept = _other_sections(out, sections) if set(sections) != set(SECTIONS) else None
    if "targets" in sections:
        measured = rows_frame(rows) if kept is None else pd.concat([kept[rows_frame([]).columns], rows_frame(rows)])
        rows += target_rows(measured, cfg, names, n_train, Path(args.metrics_csv))
    frame = write_table(out, rows, info, keep=kept)
    log("")
    log(format_tables(frame))
    log("")
    for note in notes:
        log(note)
    log(f"wrote {len(frame)} rows to {out} in {time.perf_counter() - t0:.0f} s")
    return frame


def _other_sections(out: Path, sections: list[str]) -> pd.DataFrame | None:
    """Rows of the sections not run now, from an existing CSV at ``out``: ``--sections`` re-measures
    some sections and keeps the rest (each row keeps the machine columns it was measured with)."""
    if not out.is_file():
        return None
    try:
        old = pd.read_csv(out)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"cannot keep the other sections of {out}: {e}") from None
    if list(old.columns) != list(COLUMNS):
        raise UserError(f"{out} is not a bench.perf table (columns {list(old.columns)}); pass another --out")
    return old[~old["section"].isin(sections)]


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    run(argv, log=lambda *a: print(*a, flush=True))
    return 0

