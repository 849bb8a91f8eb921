"""Executors: how a list of RunSpecs is carried out (locally, a process pool, or Ray).

Every executor calls the same :func:`bench.run.execute_run`, so run ids,
skip-finished/resume, failure recording and the locked results table behave the
same everywhere.
"""

from __future__ import annotations

import traceback


def run_local(specs, data, jobs: int = 1, address: str | None = None, log=print):
    """In-process, one run after another (the default)."""
    from bench.run import RunOutcome, execute_run

    outcomes = []
    for spec in specs:
        try:
            outcome = execute_run(spec, data, log=log)
        except Exception as e:  # one broken run must not end the sweep
            traceback.print_exc()
            outcome = RunOutcome(spec.run_id, "failed", f"{type(e).__name__}: {e}")
        print(f"[{outcome.status}] {outcome.run_id} {outcome.reason}".rstrip(), flush=True)
        outcomes.append(outcome)
    return outcomes


EXECUTORS = {"local": run_local}
