"""Executors: how a list of RunSpecs is carried out (locally, a process pool, or Ray).

Every executor calls the same :func:`bench.runner.execute_run`, so run ids,
skip-finished/resume, failure recording and the locked results table behave the
same everywhere. Signature: ``executor(specs, data, jobs=1, address=None, log=print,
cpus_per_run=None, ctx=None)`` (each takes every keyword and ignores those it has no use for),
returning one :class:`bench.runner.RunOutcome` per spec, in the order of ``specs``.
``ctx`` is the driver's :class:`bench.context.Context`; it travels with every run to the
worker that carries it out (workers read no environment variables).

``local``
    In-process, one run after another, sharing the driver's loaded MNIST.
``process``
    ``--jobs N`` worker processes on this machine ("spawn" start method: forking a
    process that has already used torch is unsafe). Each worker gets
    ``max(1, T // N)`` torch threads, where ``T`` is the context's thread count
    (``$PIE_BENCH_THREADS``) or else torch's default, and loads MNIST itself.
``ray``
    Each run is one Ray task with its own resource request: ``num_cpus`` =
    ``cpus_per_run``, else the context's (``$PIE_BENCH_RAY_CPUS``), else 1 (the task uses that many
    torch threads), and ``num_gpus=1`` when the run's device is ``cuda``.
    ``--ray-address ADDR`` (or the context's
    ``$RAY_ADDRESS``) joins a running cluster; without one a local Ray instance is
    started with ``N × cpus`` CPUs for ``--jobs N`` > 1, else all of this machine's CPUs.

Where results go (process and ray): **workers write their run directories and the
tidy table themselves, at the results path**, exactly as a local run does; nothing
but a small :class:`RunOutcome` travels back to the driver. The driver turns the
results path and the MNIST root into absolute paths before shipping a run, so on a
Ray cluster both must name the same place on every node: a shared filesystem (NFS,
Lustre, GPFS, ...) mounted at the same path, with working POSIX ``flock`` for the
table's lock. See ``docs/scale-out.md``.

A run that raises becomes a ``failed`` outcome (and a failed row) and the sweep goes on.
A run another runner has claimed comes back ``busy``; :func:`bench.run.run_all` hands
those to the executor once more at the end, to wait for them. A worker that
dies (killed, out of memory) costs no run: the process pool reruns the runs it took
down in fresh workers (see :func:`run_process`); Ray retries the task
(``max_retries``). Either way the rerun resumes from the run's last checkpoint.
Finished runs are skipped by the driver before anything is shipped.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os.path
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from bench.context import RAY_CPUS_ENV, Context
from bench.errors import UserError
from bench.results import DONE, RUNS
from bench.runner import RunOutcome, RunSpec, execute_run, record_failure

RAY_MAX_RETRIES = 2  # reruns of a task whose worker died; each resumes from its checkpoint


def run_local(specs, data, jobs: int = 1, address: str | None = None, log=print, cpus_per_run: float | None = None,
              ctx: Context | None = None):
    """In-process, one run after another (the default)."""
    outcomes = []
    for spec in specs:
        try:
            outcome = execute_run(spec, data, log=log, ctx=ctx)
        except Exception as e:  # one broken run must not end the sweep
            traceback.print_exc()
            outcome = _failed(spec, f"{type(e).__name__}: {e}")
        _report(outcome)
        outcomes.append(outcome)
    return outcomes


# ----------------------------------------------------------------------------- shared helpers


def _report(outcome) -> None:
    print(f"[{outcome.status}] {outcome.run_id} {outcome.reason}".rstrip(), flush=True)


def _log(message: str) -> None:
    print(message, flush=True)


def _portable(spec: RunSpec, ctx: Context, progress: bool | None = None) -> RunSpec:
    """``spec`` with absolute paths, fit to ship to another process.

    The results path and the dataset's root (as ``ctx`` resolves it) are made absolute (a
    worker's working directory is not the driver's). None of this changes the run id.
    """
    root = os.path.abspath(spec.data_root or ctx.root(spec.config.data.dataset))
    return dataclasses.replace(spec, out_dir=os.path.abspath(spec.out_dir), data_root=root,
                               progress=spec.progress if progress is None else progress)


# The context of this worker process: the first one it was handed. Its memo (files verified,
# extractors loaded) then serves every later run the process carries out, as the driver's serves
# its local runs; a shipped context arrives with an empty memo.
_WORKER_CONTEXT: list[Context] = []


def worker_context(ctx: Context) -> Context:
    """``ctx``, or the equal one this worker process already holds (with its memo)."""
    if not (_WORKER_CONTEXT and _WORKER_CONTEXT[0] == ctx):
        _WORKER_CONTEXT[:] = [ctx]
    return _WORKER_CONTEXT[0]


def _run_one(spec, ctx: Context, threads: int | None = None):
    """Worker side of every parallel executor: one run under the driver's context, never raising."""
    if threads:
        torch.set_num_threads(threads)
    try:
        return execute_run(spec, None, log=_log, ctx=worker_context(ctx))
    except Exception as e:  # a failed outcome, never a dead sweep
        traceback.print_exc()
        return _failed(spec, f"{type(e).__name__}: {e}")


def _failed(spec, reason: str):
    """A failed outcome, and its row in the table (every failure leaves one)."""
    try:
        record_failure(spec, reason)
    except Exception as e:  # e.g. the results folder is gone: the outcome still says what happened
        print(f"warning: could not record the failure of {spec.run_id} ({type(e).__name__}: {e})", flush=True)
    return RunOutcome(spec.run_id, "failed", reason)


# ----------------------------------------------------------------------------- process pool


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _new_pool(workers: int, threads: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))


def _gather(jobs: dict, outcomes: dict, pools: list) -> list:
    """Wait for ``{future: (index, spec)}``; return the pairs whose worker died."""
    crashed = []
    try:
        pending = set(jobs)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i, spec = jobs[fut]
                try:
                    outcomes[i] = fut.result()
                except BrokenProcessPool:
                    crashed.append((i, spec))
                    continue
                except Exception as e:  # e.g. a result that cannot be unpickled
                    outcomes[i] = _failed(spec, f"{type(e).__name__}: {e}")
                _report(outcomes[i])
    except BaseException:
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    for pool in pools:
        pool.shutdown(wait=True)
    return sorted(crashed, key=lambda pair: pair[0])


def worker_threads(ctx: Context, jobs: int) -> int:
    """Torch threads of each of ``jobs`` workers: the context's (else torch's) count shared out.

    They follow --jobs, not the number of pending runs: a run gets the same thread count (and
    so the same numbers) whether or not other runs of the grid were already done.
    """
    return max(1, (ctx.threads or torch.get_num_threads()) // jobs)


def _round(pairs: list, workers: int, threads: int, outcomes: dict, isolated: bool, ctx: Context) -> list:
    """Run ``(index, spec)`` pairs, ``workers`` at a time; return the pairs a dying worker took down.

    ``isolated``: one single-worker pool per run, so a crash breaks only that run's pool.
    """
    if not isolated:
        pool = _new_pool(min(workers, len(pairs)), threads)
        return _gather({pool.submit(_run_one, spec, ctx, threads): (i, spec) for i, spec in pairs}, outcomes, [pool])
    crashed = []
    for start in range(0, len(pairs), workers):
        batch = pairs[start:start + workers]
        pools = [_new_pool(1, threads) for _ in batch]
        futures = {pool.submit(_run_one, spec, ctx, threads): (i, spec)
                   for pool, (i, spec) in zip(pools, batch, strict=True)}
        crashed += _gather(futures, outcomes, pools)
    return crashed


def _skip_finished(specs, outcomes: dict) -> list:
    """``(index, spec)`` of the runs still to do; finished ones are reported as skipped here.

    The same test :func:`bench.runner.execute_run` makes first, done by the driver so that a
    rerun of a finished sweep starts no worker (and, on Ray, ships no task).
    """
    todo = []
    for i, spec in enumerate(specs):
        if (Path(spec.out_dir) / RUNS / spec.run_id / DONE).is_file():
            outcomes[i] = RunOutcome(spec.run_id, "skipped")
            _report(outcomes[i])
        else:
            todo.append((i, spec))
    return todo


def run_process(specs, data, jobs: int = 1, address: str | None = None, log=print,
                cpus_per_run: float | None = None, ctx: Context | None = None):
    """A pool of ``jobs`` spawned worker processes on this machine.

    ``data`` is not shipped (each worker loads MNIST from disk). A dying worker takes
    down every run then in its pool: those are rerun in a fresh pool, and if that
    breaks too, each of its runs once more in a worker of its own (so a run that kills
    its worker cannot keep taking the others with it); a run that still kills its
    worker is recorded as failed. Reruns resume from the run's last checkpoint.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be a positive integer, got {jobs}")
    ctx = ctx or Context()
    shipped = [_portable(s, ctx, progress=s.progress and jobs == 1) for s in specs]
    outcomes: dict[int, object] = {}
    todo = _skip_finished(shipped, outcomes)
    if todo:
        workers = min(jobs, len(todo))
        threads = worker_threads(ctx, jobs)
        print(f"process executor: {workers} worker(s) x {threads} torch thread(s)", flush=True)
        for attempt, isolated in enumerate((False, False, True)):
            if attempt:
                print(f"process executor: a worker died; rerunning {len(todo)} run(s) in fresh workers",
                      flush=True)
            todo = _round(todo, workers, threads, outcomes, isolated, ctx)
            if not todo:
                break
        for i, spec in todo:
            outcomes[i] = _failed(spec, "its worker process died three times (killed, or out of memory?)")
            _report(outcomes[i])
    return [outcomes[i] for i in range(len(shipped))]


# ----------------------------------------------------------------------------- Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e .[ray]") from None
    return ray


def _ray_cpus(cpus_per_run: float | None, ctx: Context) -> float:
    text = cpus_per_run if cpus_per_run is not None else ctx.ray_cpus or "1"
    try:
        cpus = float(text)
    except ValueError:
        raise UserError(f"${RAY_CPUS_ENV} must be a positive number, got '{text}'") from None
    if cpus <= 0:
        raise UserError(f"CPUs per Ray run must be positive, got {cpus:g}")
    return cpus


def _check_feasible(ray, specs, cpus: float) -> None:
    """Refuse requests no node can meet (Ray would otherwise wait for them forever)."""
    total = ray.cluster_resources()
    if cpus > total.get("CPU", 0):
        raise UserError(f"each Ray run asks for {cpus:g} CPUs but the cluster has {total.get('CPU', 0):g}")
    if any(s.device == "cuda" for s in specs) and total.get("GPU", 0) < 1:
        raise UserError("--device cuda asks each Ray run for a GPU but the Ray cluster has none")


def run_ray(specs, data, jobs: int = 1, address: str | None = None, log=print,
            cpus_per_run: float | None = None, ctx: Context | None = None):
    """Each run a Ray task (``num_cpus`` per run, plus ``num_gpus=1`` for cuda runs).

    Joins the cluster at ``address`` (or ``ctx.ray_address``, from ``$RAY_ADDRESS``; ``auto`` = the one on this
    node); else starts a local instance and shuts it down afterwards. An already
    initialised Ray (``ray.is_initialized()``) is used as it is and left running.
    Workers write results to the shared results path (see the module docstring).
    """
    ray = _import_ray()
    if jobs < 1:
        raise UserError(f"--jobs must be a positive integer, got {jobs}")
    ctx = ctx or Context()
    cpus = _ray_cpus(cpus_per_run, ctx)
    shipped = [_portable(s, ctx, progress=False) for s in specs]
    outcomes: dict[int, object] = {}
    todo = _skip_finished(shipped, outcomes)
    if not todo:
        return [outcomes[i] for i in range(len(shipped))]
    address = address or ctx.ray_address
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                # "local": a new private instance, even if `ray start` left a cluster on this node
                ray.init(address="local", num_cpus=math.ceil(jobs * cpus) if jobs > 1 else None,
                         include_dashboard=False, log_to_driver=True)
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at '{address}' ({e}); is it running, and do "
                            "$RAY_AUTH_MODE and the auth token match the cluster's? (docs/scale-out.md)") from None
        started = True
    try:
        _check_feasible(ray, [spec for _, spec in todo], cpus)
        threads = max(1, int(cpus))
        task = ray.remote(_run_one)
        refs = {}
        for i, spec in todo:
            opts = {"num_cpus": cpus, "max_retries": RAY_MAX_RETRIES, "name": f"pie-bench:{spec.run_id}"}
            if spec.device == "cuda":
                opts["num_gpus"] = 1
            refs[task.options(**opts).remote(spec, ctx, threads)] = i
        total = ray.cluster_resources()
        print(f"ray executor: {len(refs)} task(s), {cpus:g} CPU(s) each, cluster {total.get('CPU', 0):g} CPU(s) / "
              f"{total.get('GPU', 0):g} GPU(s)", flush=True)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = refs[ref]
                    try:
                        outcomes[i] = ray.get(ref)
                    except Exception as e:  # its worker died more than max_retries times, etc.
                        text = str(e).strip()
                        outcomes[i] = _failed(shipped[i], f"{type(e).__name__}: {text.splitlines()[0] if text else ''}")
                    _report(outcomes[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
    return [outcomes[i] for i in range(len(shipped))]


EXECUTORS = {"local": run_local, "process": run_process, "ray": run_ray}
