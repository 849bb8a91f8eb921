"""The runner end to end on the smoke preset: tidy rows, run directories, determinism; and the
bench modules' import graph (no cycles)."""

import ast
import graphlib
import os
import subprocess
import sys

import pandas as pd
import pytest

from bench.results import COLUMNS
from bench.run import main
from tests.helpers import ROOT, SMOKE

DETERMINISTIC = ["recon_mse", "recon_sse", "final_loss", "loss"]


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    code = main(["--config", SMOKE, "--models", "vae,wae", "--seeds", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_tidy_table_has_both_models_and_seeds(smoke_out):
    table = pd.read_csv(smoke_out / "metrics.csv")
    assert tuple(table.columns[: len(COLUMNS)]) == COLUMNS
    runs = table[table["model"] != "real"]
    assert set(zip(runs["model"], runs["seed"], strict=True)) == {("vae", 0), ("vae", 1), ("wae", 0), ("wae", 1)}
    assert (runs[runs["metric"] == "recon_mse"].groupby("run_id").size() == 1).all()
    assert not table.duplicated(["run_id", "split", "metric"]).any()


def test_run_directories_hold_config_log_metrics_and_grid(smoke_out):
    run_dirs = sorted(d for d in (smoke_out / "runs").iterdir() if not d.name.startswith("real-"))
    assert len(run_dirs) == 4
    for d in run_dirs:
        for name in ("config.json", "train_log.csv", "metrics.csv", "samples.png", "done.json"):
            assert (d / name).is_file(), f"{d.name} lacks {name}"


def test_rerun_skips_finished_runs_without_duplicates(smoke_out, capsys):
    before = pd.read_csv(smoke_out / "metrics.csv")
    assert main(["--config", SMOKE, "--models", "vae", "--seeds", "2", "--out", str(smoke_out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("[skipped]") == 2
    after = pd.read_csv(smoke_out / "metrics.csv")
    assert len(after) == len(before)


def test_same_seed_same_numbers(smoke_out, tmp_path):
    assert main(["--config", SMOKE, "--models", "vae", "--seeds", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    a = pd.read_csv(smoke_out / "metrics.csv")
    b = pd.read_csv(tmp_path / "metrics.csv")
    pick = lambda t: t[(t["model"] == "vae") & (t["seed"] == 0) & t["metric"].isin(DETERMINISTIC)]  # noqa: E731
    merged = pick(a).merge(pick(b), on=["run_id", "split", "metric"])
    assert len(merged) == len(pick(a)) > 0
    assert (merged["value_x"] == merged["value_y"]).all()


def test_sweep_points_are_runs_with_columns(tmp_path):
    code = main(["--config", SMOKE, "--models", "wae", "--seeds", "1", "--out", str(tmp_path), "--no-progress",
                 "--sweep", "wae.mmd_weight=1,10", "--set", "train.epochs=1"])
    assert code == 0
    table = pd.read_csv(tmp_path / "metrics.csv")
    runs = table[table["model"] == "wae"]
    assert runs["run_id"].nunique() == 2
    assert sorted(runs.groupby("run_id")["wae.mmd_weight"].first()) == [1.0, 10.0]


def test_unknown_model_exits_2_listing_valid_ones():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--models", "nope", "--config", SMOKE],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ)
    assert proc.returncode == 2
    assert "valid models: pie, vae, wae" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_mnist_offline_exits_2_naming_files(tmp_path):
    env = {**os.environ, "MNIST_ROOT": str(tmp_path / "empty"), "PIE_BENCH_OFFLINE": "1"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--models", "vae", "--config", SMOKE, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2
    assert "train-images-idx3-ubyte.gz" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()



def bench_import_graph() -> dict[str, set[str]]:
    """``{module: bench modules it imports}`` over every file of ``bench/``, read with ``ast``.

    Every import statement counts, function-local and ``TYPE_CHECKING`` ones too: a cycle hidden
    inside a function is still a cycle. ``from bench.x import y`` points at ``bench.x.y`` when that
    is a module (e.g. ``from bench import metrics``), else at ``bench.x``.
    """
    package = ROOT / "bench"
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]  # the package of `from . import`
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1]) if node.level else ""
                base = ".".join(p for p in (base, node.module or "") if p)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def test_bench_modules_import_each_other_in_one_direction_only():
    graph = bench_import_graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:  # e.args[1] lists each module before one that imports it
        raise AssertionError(f"import cycle among bench modules: {' imports '.join(reversed(e.args[1]))}") from None
    # The reader sees real edges, in the intended direction: run -> executors -> runner.
    assert {"bench.executors", "bench.runner"} <= graph["bench.run"]
    assert "bench.runner" in graph["bench.executors"]
    assert "bench.metrics.sharpness" in graph["bench.metrics.artefact"]  # inside a subpackage too
