"""Scale-out executors (issue 8): the process pool and Ray give the tidy rows of a local run,
and a killed worker or runner loses and duplicates nothing once the command is rerun.

Every grid is the real CLI in a subprocess on the smoke preset (pie,vae x 2 seeds). All runs
use one torch thread (``PIE_BENCH_THREADS=1``; the pool and Ray then give each worker one
thread too), since CPU results depend on the thread count through the order of float sums.
Rows are compared on every metric but timing ones, without started_at/elapsed_s/git_commit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import UserError
from tests.helpers import MNIST_DIR, ROOT, SMOKE

GRID = ["--config", SMOKE, "--models", "pie,vae", "--seeds", "2", "--no-progress"]
N_RUNS = 4
KEY = ["run_id", "split", "metric"]
VOLATILE_COLUMNS = ["started_at", "elapsed_s", "git_commit"]  # wall clock; HEAD may move mid-suite


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PIE_BENCH_OFFLINE="1", PIE_BENCH_THREADS="1", PYTHONUNBUFFERED="1")
    env["MNIST_ROOT"] = str(MNIST_DIR)
    env.pop("RAY_ADDRESS", None)  # --executor ray must start its own local instance here
    return env


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.run", *GRID, "--out", str(out), *extra]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(out, *extra), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _rows(out: Path) -> pd.DataFrame:
    """The tidy table without timing metrics and volatile columns, in a canonical order."""
    table = pd.read_csv(out / "metrics.csv")
    assert not table.duplicated(KEY).any(), table[table.duplicated(KEY, keep=False)]
    table = table[~table["metric"].str.contains("seconds|time")]
    table = table.drop(columns=[c for c in VOLATILE_COLUMNS if c in table.columns])
    return table.sort_values(KEY).reset_index(drop=True)


def _assert_same_rows(out: Path, reference: pd.DataFrame) -> None:
    rows = _rows(out)
    assert set(rows["run_id"]) == set(reference["run_id"])
    pd.testing.assert_frame_equal(rows[sorted(rows.columns)], reference[sorted(reference.columns)],
                                  check_exact=False, rtol=1e-6, atol=0.0)
    finished = sorted(p.parent.name for p in (out / "runs").glob("[!r]*/done.json"))  # real-*: real images
    model_runs = sorted(set(rows.loc[rows["model"] != "real", "run_id"]))
    assert finished == model_runs and len(model_runs) == N_RUNS


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("local")
    _run(out)  # --executor local, the default
    rows = _rows(out)
    assert rows[rows["metric"] == "recon_mse"]["run_id"].nunique() == N_RUNS
    return rows


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not any((out / "runs").glob("*/checkpoint.pt")):
        assert proc.poll() is None, "the runner ended before any checkpoint appeared"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.02)


def _pool_workers(pid: int) -> list[int]:
    """Pids of the spawned pool workers among ``pid``'s children."""
    workers = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    workers.append(child)
            except OSError:
                pass
    return workers


def test_process_pool_gives_the_local_rows_even_when_a_worker_is_killed(local_rows, tmp_path):
    """--executor process --jobs 2 == local; a SIGKILLed worker's runs are rerun, and rerunning is a no-op."""
    proc = subprocess.Popen(_command(tmp_path, "--executor", "process", "--jobs", "2"), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_checkpoint(proc, tmp_path)
        workers = _pool_workers(proc.pid)
        assert workers, "no pool worker found"
        os.kill(workers[0], signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, stdout[-3000:]
    assert "2 worker(s) x 1 torch thread(s)" in stdout
    # PIE_BENCH_THREADS=1, --jobs 2: every worker ran with one thread (each run's config.json records it)
    devices = {json.loads(p.read_text())["device"] for p in (tmp_path / "runs").glob("[!r]*/config.json")}
    assert devices == {"cpu (1 threads)"}
    assert "a worker died; rerunning" in stdout
    assert stdout.count("[ok]") == N_RUNS
    _assert_same_rows(tmp_path, local_rows)
    again = _run(tmp_path, "--executor", "process", "--jobs", "2")  # the same command again: all done
    assert again.stdout.count("[skipped]") == N_RUNS
    _assert_same_rows(tmp_path, local_rows)


def test_ray_local_instance_gives_the_local_rows(local_rows, tmp_path):
    proc = _run(tmp_path, "--executor", "ray", "--jobs", "2")  # a local Ray instance with 2 CPUs
    assert "cluster 2 CPU(s)" in proc.stdout
    assert proc.stdout.count("[ok]") == N_RUNS
    _assert_same_rows(tmp_path, local_rows)


def test_killed_runner_resumes_on_rerun_without_loss_or_duplicates(local_rows, tmp_path):
    """SIGKILL the runner and its workers mid-sweep (a lost node); the same command then finishes the grid."""
    proc = subprocess.Popen(_command(tmp_path, "--executor", "process", "--jobs", "2"), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_checkpoint(proc, tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert len(list((tmp_path / "runs").glob("[!r]*/done.json"))) < N_RUNS  # real-*: the real-image rows
    _run(tmp_path, "--executor", "process", "--jobs", "2")
    _assert_same_rows(tmp_path, local_rows)


def test_worker_exception_is_a_failed_outcome_not_a_dead_sweep(tmp_path):
    """Also: the driver's context travels to the worker (offline there too, so no download is tried)."""
    from bench.config import load_config
    from bench.context import Context
    from bench.executors import run_process
    from bench.runner import RunSpec

    empty = tmp_path / "no-mnist"
    empty.mkdir()
    cfg = load_config(SMOKE)
    specs = [RunSpec(m, 0, cfg, out_dir=str(tmp_path / "out"), data_root=str(empty)) for m in ("vae", "wae")]
    outcomes = run_process(specs, None, jobs=1, ctx=Context(offline=True))
    assert [o.run_id for o in outcomes] == [s.run_id for s in specs]
    assert all(o.status == "failed" and "UserError" in o.reason and "offline" in o.reason for o in outcomes)


def test_bad_jobs_and_missing_ray_are_user_errors(monkeypatch):
    from bench.executors import run_process, run_ray

    with pytest.raises(UserError, match="--jobs"):
        run_process([object()], None, jobs=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install -e \.\[ray\]"):
        run_ray([object()], None)
