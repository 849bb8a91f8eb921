"""A protocol of many runs as one resumable command: ``python -m bench.protocol [--status]``.

A protocol file (``configs/long_protocol.yaml``: the converged CPU protocol behind ``results/long``)
lists steps in order of priority; each step is one :mod:`bench.run` command (models, seeds,
``--set`` overrides, ``--sweep`` grids) on the protocol's preset. Running the protocol plans every
step as ``bench.run`` would (same run ids; a typo in the last step fails before anything runs,
exit 2) and hands the runs to the executor as one queue in the steps' order: a free slot takes
the next run even while the last run of a step is still training, so two slots never idle on a
step boundary. It resumes where it stopped: finished runs are skipped, unfinished ones resume
from their checkpoints.

``--status`` runs nothing: per step, how many of its runs are finished, how many of those met
the convergence rule, and which are in progress (at which epoch); then the protocol's total.
That count is what a long protocol's progress report quotes.

Protocol file::

    config: configs/long.yaml          # the preset every step runs on
    steps:
      - name: table1                   # a word, unique; --steps picks steps by it
        about: "Table 1 ..."           # one line for --status
        models: [vae, wae, aef, pie]
        seeds: 5                       # seeds 0..N-1
        set: [pie.latent_dim=10]       # optional, as --set
        sweep: ["pie.eps2=0.01,0.1,1.0"]  # optional, as --sweep
        optional: false                # optional steps are counted apart in the total
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import convergence
from bench import run as bench_run
from bench.cli import EXIT_OK, EXIT_STATUS_HELP, Parser, comma_list, user_errors_exit_2
from bench.context import Context
from bench.errors import UserError
from bench.results import DONE, RUNS, local_dir
from bench.rundir import read_train_log
from bench.runner import RunSpec
from bench.yamlfile import read_yaml

DEFAULT_PROTOCOL = "configs/long_protocol.yaml"
STEP_KEYS = {"name", "about", "models", "seeds", "set", "sweep", "optional"}


@dataclass(frozen=True)
class Step:
    """One ``bench.run`` command of a protocol."""

    name: str
    about: str
    models: tuple[str, ...]
    seeds: int
    sets: tuple[str, ...] = ()
    sweeps: tuple[str, ...] = ()
    optional: bool = False

    def run_argv(self, config: str, out: str) -> list[str]:
        """The step as ``python -m bench.run`` arguments (without executor and progress flags)."""
        argv = ["--config", config, "--out", out, "--models", ",".join(self.models), "--seeds", str(self.seeds)]
        for text in self.sets:
            argv += ["--set", text]
        for text in self.sweeps:
            argv += ["--sweep", text]
        return argv


@dataclass(frozen=True)
class Protocol:
    path: str
    config: str  # the preset's YAML, as a path
    steps: tuple[Step, ...]


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise UserError(f"{what} must be a list of non-empty strings")
    return tuple(value)


def _step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping with name, models and seeds")
    unknown = sorted(set(map(str, raw)) - STEP_KEYS)
    if unknown:
        raise UserError(f"{where} has unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(STEP_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or "," in name or any(c.isspace() for c in name):
        raise UserError(f"{where} needs a 'name': one word, no commas")
    where = f"{where} ('{name}')"
    models = raw.get("models")
    if isinstance(models, str):
        models = comma_list(models)
    models = _strings(models, f"{where} 'models'")
    if not models:
        raise UserError(f"{where} lists no models")
    seeds = raw.get("seeds")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"{where} 'seeds' must be a positive integer, got {seeds!r}")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise UserError(f"{where} 'optional' must be true or false")
    about = raw.get("about", "")
    if not isinstance(about, str):
        raise UserError(f"{where} 'about' must be a string")
    return Step(name, about.strip(), models, seeds, _strings(raw.get("set"), f"{where} 'set'"),
                _strings(raw.get("sweep"), f"{where} 'sweep'"), optional)


def read_protocol(path: str | Path) -> Protocol:
    """The protocol file at ``path``, checked (one-line UserError for anything wrong)."""
    raw = read_yaml(path, "protocol file", "config: and steps:", empty_hint="")
    unknown = sorted(set(map(str, raw)) - {"config", "steps"})
    if unknown:
        raise UserError(f"protocol file '{path}' has unknown key(s) {', '.join(unknown)} (known: config, steps)")
    config = raw.get("config")
    if not isinstance(config, str) or not config.strip():
        raise UserError(f"protocol file '{path}' needs 'config': the preset's YAML file")
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        raise UserError(f"protocol file '{path}' needs 'steps': a non-empty list")
    parsed = tuple(_step(s, f"protocol file '{path}' step {i + 1}") for i, s in enumerate(steps))
    names = [s.name for s in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"protocol file '{path}' names step(s) {', '.join(twice)} more than once")
    return Protocol(str(path), config, parsed)


def plan_step(step: Step, config: str, out: str, ctx: Context | None = None) -> list[RunSpec]:
    """The step's runs, exactly as ``bench.run`` plans them (same run ids; ``ctx``: their progress bars)."""
    args = bench_run.parse_args([*step.run_argv(config, out), "--no-progress"])
    return bench_run.plan_runs(args, ctx)


def select_steps(protocol: Protocol, names: str | None) -> list[Step]:
    if names is None:
        return list(protocol.steps)
    wanted = comma_list(names)
    known = {s.name for s in protocol.steps}
    missing = [n for n in wanted if n not in known]
    if missing or not wanted:
        raise UserError(f"--steps names no step of {protocol.path}: {', '.join(missing) or names!r} "
                        f"(its steps: {', '.join(s.name for s in protocol.steps)})")
    return [s for s in protocol.steps if s.name in wanted]


# ---- status ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunState:
    run_id: str
    state: str  # "done", "in progress" or "not started"
    epoch: int | None = None  # last logged epoch of a run in progress
    converged: bool | None = None  # of a finished run: its converged_epoch is a number


def run_state(out: Path, run_id: str) -> RunState:
    """A planned run's state in ``out``, read as the report reads run directories: convergence is
    the rule (:func:`bench.convergence.judge`) on its learning curves, as in Table 1 and the verdicts
    (a damaged or missing log reads as unknown; the epoch of a run in progress as absent)."""
    run_dir = out / RUNS / run_id
    if (run_dir / DONE).is_file():
        log = read_train_log(run_dir)
        return RunState(run_id, "done", converged=None if log is None else convergence.judge(log).converged)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        log = read_train_log(run_dir)
        epoch = int(log["epoch"].iloc[-1]) if log is not None and len(log) else None
        return RunState(run_id, "in progress", epoch=epoch)
    return RunState(run_id, "not started")


@dataclass(frozen=True)
class StepProgress:
    step: Step
    states: tuple[RunState, ...]

    @property
    def done(self) -> int:
        return sum(s.state == "done" for s in self.states)

    @property
    def converged(self) -> int:
        return sum(s.state == "done" and bool(s.converged) for s in self.states)

    @property
    def in_progress(self) -> list[str]:
        return [f"{s.run_id} (epoch {s.epoch})" if s.epoch else s.run_id
                for s in self.states if s.state == "in progress"]


def progress(protocol: Protocol, steps: list[Step], out: str) -> list[StepProgress]:
    """Each step's runs (as the runner plans them) and their state in ``out``."""
    return [StepProgress(step, tuple(run_state(Path(out), s.run_id) for s in plan_step(step, protocol.config, out)))
            for step in steps]


def summary(steps: list[StepProgress]) -> str:
    """"D of N runs done (C converged)", the optional steps counted apart."""
    def count(optional: bool) -> tuple[int, int, int]:
        mine = [p for p in steps if p.step.optional == optional]
        return sum(len(p.states) for p in mine), sum(p.done for p in mine), sum(p.converged for p in mine)

    planned, done, converged = count(False)
    o_planned, o_done, _ = count(True)
    return (f"{done} of {planned} runs done ({converged} converged)"
            + (f"; optional steps: {o_done} of {o_planned} done" if o_planned else ""))


def status_lines(protocol: Protocol, steps: list[Step], out: str) -> list[str]:
    """Per step: finished runs of planned, converged among them, runs in progress; then totals."""
    lines = [f"protocol {protocol.path} on {protocol.config}, results in {out}"]
    steps_progress = progress(protocol, steps, out)
    for p in steps_progress:
        tag = " [optional]" if p.step.optional else ""
        lines.append(f"  {p.step.name}{tag}: {p.done} of {len(p.states)} runs done, {p.converged} of them converged"
                     + (f"; in progress: {', '.join(p.in_progress)}" if p.in_progress else "")
                     + (f"  -- {p.step.about}" if p.step.about else ""))
    lines.append(f"total: {summary(steps_progress)}")
    return lines


def progress_markdown(protocol: Protocol, steps: list[StepProgress]) -> str:
    """``protocol.md`` of a results directory: the protocol's steps and how far each is (no paths
    of this machine, so that it is a function of the committed runs)."""
    rows = []
    for p in steps:
        runs = " ".join(f"`{s.run_id}`" + ("" if s.state == "done" else f" ({s.state})") for s in p.states)
        command = " ".join(["--models", ",".join(p.step.models), "--seeds", str(p.step.seeds),
                            *[f"--set {t}" for t in p.step.sets], *[f"--sweep {t}" for t in p.step.sweeps]])
        rows.append(f"| {p.step.name}{' (optional)' if p.step.optional else ''} | {p.step.about} | `{command}` | "
                    f"{p.done} of {len(p.states)} | {p.converged} | {runs} |")
    return "\n".join([
        "# Protocol progress",
        "",
        f"Written by `python -m bench.report --protocol {protocol.path}` from this directory's runs: the steps of "
        f"`{protocol.path}` (each a `python -m bench.run --config {protocol.config}` command), in order of priority, "
        "and how many of each step's runs are finished here. A finished run counts as converged when the "
        "convergence rule held on its learning curves before the cap. `python -m bench.protocol --status` says the "
        "same of a folder where runs are training (with their epoch).",
        "",
        f"**Total: {summary(steps)}.**",
        "",
        "| step | what | runner arguments | done | converged | runs |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ])


# ---- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    p = Parser(prog="python -m bench.protocol", description=__doc__.splitlines()[0],
               epilog=EXIT_STATUS_HELP.format(failed="a run failed (the others went on; each listed on stderr)",
                                              where=""))
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, help="protocol file (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="results directory (default: results/local/<preset>; the committed results/ are "
                        "written only when named here)")
    p.add_argument("--steps", default=None, help="comma-separated step names to run or count (default: all)")
    p.add_argument("--status", action="store_true", help="run nothing: count the runs done per step")
    p.add_argument("--executor", default="process", help="as for bench.run (default: %(default)s)")
    p.add_argument("--jobs", default="2", help="as for bench.run (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="as for bench.run")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p.parse_args(argv)


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    protocol = read_protocol(args.protocol)
    out = args.out or str(local_dir(Path(protocol.config).stem))
    steps = select_steps(protocol, args.steps)
    if args.status:  # plans every step, then prints
        print("\n".join(status_lines(protocol, steps, out)))
        return EXIT_OK
    run_args = bench_run.parse_args([*steps[0].run_argv(protocol.config, out), "--executor", args.executor,
                                     "--jobs", args.jobs, *(["--data-root", args.data_root] if args.data_root else []),
                                     *(["--no-progress"] if args.no_progress else [])])
    ctx = bench_run.prepare(run_args)
    queue: dict[str, RunSpec] = {}
    for step in steps:  # every step plans (its models, keys and values exist) before any runs
        plan = plan_step(step, protocol.config, out, ctx)
        print(f"step {step.name}: {len(plan)} run(s)" + (f" ({step.about})" if step.about else ""), flush=True)
        for spec in plan:
            queue.setdefault(spec.run_id, spec)
    code = bench_run.carry_out(list(queue.values()), run_args, ctx)
    print("\n".join(status_lines(protocol, steps, out)))
    return code


if __name__ == "__main__":
    sys.exit(main())
