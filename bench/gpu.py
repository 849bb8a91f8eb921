"""The GPU protocol in one call: ``python3 -m bench.gpu [--budget-s 480] [--out results/local/gpu]``.

For a session lent a GPU for a few minutes (one device call, no network, no install):

1. ``bench.perf`` on the device (short sections ``machine,model,harness``, bf16 for the models
   that allow it) → ``OUT/perf.csv``;
2. as much of the paper protocol (``configs/paper.yaml``: every registered model at the paper
   widths, latent 8) as the remaining wall-clock budget allows: the measured training speed gives
   seconds per epoch, and the plan picks seeds and epochs that fit (``plan_protocol``); the
   models run at once on the device, one runner process each, bf16 autocast for those whose
   class allows it (``allows_bf16``, ``train.bf16``); every runner is stopped at the hard
   deadline, keeping the rows of the runs that finished → ``OUT/metrics.csv``, ``OUT/runs/``;
3. Table 1 for that budget (``OUT/table1.md``), the plan (``OUT/plan.json``) and the projected
   wall time of the full paper protocol (``bench.report.selection.protocol_runs`` of every registered
   model x the paper's epochs) on this device (``OUT/summary.md``);
4. a short summary on stdout.

``--device cpu --dry-run`` runs the same code path on the smoke preset in seconds (tests).
The models are the registry's (``bench.registry.MODELS``, read at each call) and the dataset the
preset's (``data.dataset``, sizes from ``bench.datasets``), read from ``--data-root`` (default: the
dataset's variable, e.g. ``$MNIST_ROOT``, else its folder, which the device call carries).
Nothing here imports umap.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.cli import Parser, user_errors_exit_2
from bench.context import child_environ
from bench.datasets import get_dataset
from bench.errors import UserError
from bench.registry import MODELS as REGISTRY
from bench.report.selection import TABLE1_SEEDS, protocol_runs

SEED_CHOICES = (5, 3, 2, 1)  # most seeds first; take the first whose epochs reach MIN_EPOCHS[seeds]
MIN_EPOCHS = {5: 30, 3: 10, 2: 5, 1: 1}
PLAN_SAFETY = 0.75  # share of the remaining budget the plan may fill (the rest absorbs misestimates)
RESERVE_S = 25.0  # kept for the report after the runners are stopped
EPOCH_OVERHEAD = 1.15  # harness loop + validation on top of the bare steps of bench.perf
EVAL_FIXED_S = 15.0  # LeNet features, precision/recall, probe of one evaluation, beyond the model passes


def protocol_models() -> tuple[str, ...]:
    """Every registered model, in registry order (read at call time: a model registered later joins)."""
    return tuple(REGISTRY)


@dataclass
class Plan:
    seeds: int
    epochs: int
    epoch_s: dict[str, float]  # projected seconds of one training epoch, per model (one run alone)
    eval_s: dict[str, float]  # projected seconds of one evaluation, per model
    budget_s: float  # seconds the runners may use
    note: str

    def run_seconds(self, epochs: int) -> float:
        return sum(epochs * self.epoch_s[m] + self.eval_s[m] for m in self.epoch_s)


def speeds_from_perf(perf: pd.DataFrame, preset: str) -> dict[str, tuple[float, float]]:
    """(train images/s, sample images/s) of each model at ``preset`` from a bench.perf table."""
    out = {}
    for m in protocol_models():
        sel = perf[(perf["section"] == "model") & (perf["preset"] == preset) & (perf["model"] == m)]
        vals = dict(zip(sel["metric"], sel["value"], strict=True))
        if "train_images_per_s" in vals and "sample_images_per_s" in vals:
            out[m] = (float(vals["train_images_per_s"]), float(vals["sample_images_per_s"]))
    return out


def eval_passes(cfg, model: str) -> int:
    """Model forward passes (images) of one evaluation: samples at two temperatures, the test set
    encoded and decoded, the probe's training codes, and the likelihood's passes per scored image
    (the model class's ``log_prob_passes``: K for an importance-weighted estimate)."""
    e = cfg.eval
    n_test = e.test_subset or get_dataset(cfg.data.dataset).n_test
    passes = 2 * e.n_samples + 2 * n_test + e.probe_train_size
    passes += REGISTRY[model].model_cls.log_prob_passes(cfg.models[model]) * (e.bpd_subset or n_test)
    return passes


def plan_protocol(speeds: dict[str, tuple[float, float]], cfg, n_train: int, budget_s: float) -> Plan:
    """Seeds and epochs of every model in ``speeds`` that fit ``budget_s``, assuming no gain from
    running the models at once (conservative: concurrent runs on one GPU usually do gain)."""
    epoch_s = {m: EPOCH_OVERHEAD * n_train / s[0] for m, s in speeds.items()}
    eval_s = {m: EVAL_FIXED_S + eval_passes(cfg, m) / s[1] for m, s in speeds.items()}
    usable = PLAN_SAFETY * budget_s
    cap = cfg.train.epochs
    for seeds in SEED_CHOICES:
        per_seed_eval = sum(eval_s.values())
        per_seed_epoch = sum(epoch_s.values())
        epochs = min(cap, math.floor((usable / seeds - per_seed_eval) / per_seed_epoch))
        if epochs >= min(MIN_EPOCHS[seeds], cap):
            break
    epochs = max(1, epochs)
    work = seeds * (epochs * per_seed_epoch + per_seed_eval)
    note = (f"{seeds} seed(s) x {epochs} epoch(s) per model: planned {work:.0f} s of serial work for "
            f"{budget_s:.0f} s ({PLAN_SAFETY:.0%} filled)")
    return Plan(seeds, epochs, epoch_s, eval_s, budget_s, note)


def projected_paper_seconds(plan: Plan, paper_epochs: int = 100) -> float:
    """Serial wall time of the full paper protocol on this device, from the planned per-epoch costs."""
    return sum(protocol_runs(m) * (paper_epochs * plan.epoch_s[m] + plan.eval_s[m]) for m in plan.epoch_s)


# The runner, started with the GPU path's speed settings (TF32, cuDNN autotuning) that bench.perf measures with.
RUNNER_BOOT = ("import sys, torch; from bench import perf, run; "
               "perf.configure_device(torch.device(sys.argv[sys.argv.index('--device') + 1])); "
               "sys.exit(run.main(sys.argv[1:]))")


def runner_command(model: str, plan: Plan, args, config: str) -> list[str]:
    cmd = [sys.executable, "-c", RUNNER_BOOT, "--config", config, "--models", model, "--seeds", str(plan.seeds),
           "--out", str(Path(args.out)), "--device", args.device, "--no-progress",
           "--set", f"train.epochs={plan.epochs}"]
    if REGISTRY[model].model_cls.allows_bf16 and not args.no_bf16:
        cmd += ["--set", "train.bf16=true"]
    if args.compile:
        cmd += ["--set", "train.compile=true"]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    return cmd


def run_concurrently(cmds: dict[str, list[str]], deadline: float, logdir: Path, threads: int) -> dict[str, str]:
    """Start every command at once; stop those still running at ``deadline``. Returns model -> outcome."""
    env = child_environ(PIE_BENCH_THREADS=str(threads))  # each runner resolves its context from it
    procs = {}
    for m, cmd in cmds.items():
        log = open(logdir / f"runner-{m}.log", "w")  # noqa: SIM115 (closed below)
        procs[m] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    outcome = {}
    while procs:
        for m, (p, log) in list(procs.items()):
            rc = p.poll()
            if rc is None and time.monotonic() < deadline:
                continue
            if rc is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                outcome[m] = "stopped at the deadline"
            else:
                outcome[m] = f"exit {rc}"
            log.close()
            del procs[m]
        time.sleep(0.5)
    return outcome


def drop_checkpoints(out: Path) -> None:
    """Checkpoints are for resuming, not results: remove them so the device call returns less."""
    for p in (out / "runs").glob("*/checkpoint*.pt"):
        p.unlink()


def write_table1(out: Path) -> str:
    """Table 1 of the finished runs (the report's own code, without figures), or why there is none."""
    from bench import report
    from bench.results import write_csv_atomic

    try:
        table = report.load_table(out)
        configs = {r: report.read_json(out / "runs" / r / "config.json") for r in table["run_id"].unique()
                   if not str(r).startswith("real-")}
        sel = report.select_runs(table, configs)
        t1 = report.build_table1(table, sel, configs)
    except (UserError, KeyError, ValueError) as e:
        return f"no Table 1 ({e})"
    write_csv_atomic(out / "table1.csv", t1.frame)
    text = report.table1_markdown(t1, sel)
    report.write_text(out / "table1.md", text)
    return text


def observed_throughput(out: Path) -> tuple[float, float] | None:
    """(training images, seconds of training) summed over the runs' train logs, or None."""
    images, seconds = 0.0, 0.0
    for log in (out / "runs").glob("*/train_log.csv"):
        frame = pd.read_csv(log)
        cfg = json.loads((log.parent / "config.json").read_text()) if (log.parent / "config.json").exists() else {}
        batch = cfg.get("train", {}).get("batch_size", 100)
        if len(frame):
            images += float(frame["step"].iloc[-1]) * batch
            seconds += float(frame["seconds"].iloc[-1])
    return (images, seconds) if seconds > 0 else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --dry-run)")
    p.add_argument("--budget-s", type=float, default=480.0, help="hard wall-clock budget (default: %(default)s)")
    p.add_argument("--out", default="results/local/gpu", help="output folder (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder (else the dataset's variable, e.g. $MNIST_ROOT, else its default folder)")
    p.add_argument("--config", default=None, help="protocol preset (default: configs/paper.yaml; smoke with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="smoke preset and quick perf: the same code path in seconds")
    p.add_argument("--no-bf16", action="store_true", help="fp32 for every model (else bf16 where the model allows it)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models' loss (warm-up costs minutes)")
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        raise UserError(f"--budget-s must be positive, got {args.budget_s}")
    if args.device not in ("cuda", "cpu"):
        raise UserError(f"--device must be cuda or cpu, got '{args.device}'")
    return args


def run(argv: list[str] | None = None, log=print) -> dict:
    start = time.monotonic()
    args = parse_args(argv)
    deadline = start + args.budget_s
    import torch

    from bench import perf
    from bench.config import load_config

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available (use --device cpu --dry-run)")
    config = args.config or ("configs/smoke.yaml" if args.dry_run else "configs/paper.yaml")
    cfg = load_config(config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Speed of every model on this device (bench.perf, short budget).
    perf_args = ["--device", args.device, "--config", "configs/default.yaml" if not args.dry_run else config,
                 "--paper-config", config,
                 "--sections", "machine,model,harness", "--out", str(out / "perf.csv"),
                 "--metrics-csv", str(out / "metrics.csv")]
    perf_args += ["--quick"] if args.dry_run else ["--short"]
    perf_args += [] if args.no_bf16 else ["--bf16"]
    if args.data_root:
        perf_args += ["--data-root", args.data_root]
    perf_frame = perf.run(perf_args, log=lambda *a: None)
    speeds = speeds_from_perf(perf_frame, cfg.preset)
    models = protocol_models()
    n_train = cfg.data.train_subset or get_dataset(cfg.data.dataset).n_train - cfg.data.val_size
    log(f"bench.gpu: perf done in {time.monotonic() - start:.0f} s: " + ", ".join(
        f"{m} {speeds[m][0]:.0f} train img/s" for m in speeds))

    # 2. The protocol that fits what is left.
    left = deadline - time.monotonic() - RESERVE_S
    plan = plan_protocol(speeds, cfg, n_train, left)
    (out / "plan.json").write_text(json.dumps(plan.__dict__, indent=1))
    log(f"bench.gpu: plan {plan.note}")
    cmds = {m: runner_command(m, plan, args, config) for m in models}
    threads = max(1, (os.cpu_count() or 1) // len(models))
    t_runs = time.monotonic()
    outcome = run_concurrently(cmds, deadline - RESERVE_S, out, threads)
    runs_wall = time.monotonic() - t_runs
    drop_checkpoints(out)

    # 3. Table 1, projection, summary.
    table1 = write_table1(out)
    paper_epochs = load_config("configs/paper.yaml").train.epochs
    serial = projected_paper_seconds(plan, paper_epochs)
    table1_runs = TABLE1_SEEDS * len(models)
    sweep_runs = sum(protocol_runs(m) for m in models) - table1_runs
    lines = [f"# GPU protocol on {perf_frame['device_name'].iloc[0]} ({'dry run, ' if args.dry_run else ''}"
             f"preset {cfg.preset}, budget {args.budget_s:.0f} s)", "",
             f"- plan: {plan.note}", "- runners: " + ", ".join(f"{m} {o}" for m, o in outcome.items()),
             f"- projected full paper protocol ({table1_runs} runs x {paper_epochs} epochs + Fig. 7 sweep, "
             f"{sweep_runs} runs), one run at a time: {serial / 3600:.1f} h (from bench.perf step speeds)"]
    seen = observed_throughput(out)
    if seen is not None:
        images, _ = seen
        total = sum(protocol_runs(m) for m in models) * paper_epochs * n_train
        rate = images / runs_wall
        lines.append(f"- projected at the throughput measured here with {len(models)} runs at once "
                     f"({rate:.0f} training images/s summed, evaluations included): "
                     f"{total / rate / 3600:.1f} h")
    lines += ["", table1]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    for line in lines[:6]:
        log(line)
    log(f"bench.gpu: wrote {out} in {time.monotonic() - start:.0f} s")
    return {"plan": plan, "outcome": outcome, "serial_projection_s": serial}


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    result = run(argv, log=lambda *a: print(*a, flush=True))
    return 0 if all(o == "exit 0" for o in result["outcome"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
