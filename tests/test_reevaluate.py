"""Every finished run keeps its weights (weights.safetensors), and bench.reevaluate scores it again from
them, without training: rows that come out the same stay byte for byte, no row is ever lost."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bench.reevaluate
from bench.config import load_config
from bench.evaluate import MetricRow
from bench.registry import build_model
from bench.results import RUNS, TABLE
from bench.sync import replace_run_rows
from bench.tidy import done_bytes, parse_table, read_done, rows_digest
from bench.train import load_checkpoint
from bench.weights import WEIGHTS, load_weights
from tests.helpers import ROOT, SMOKE

# Trained until converged with a cap of 2 epochs: too short to judge, so stopped by the cap.
ARGS = ["--config", SMOKE, "--no-progress", "--models", "vae,pie", "--seeds", "1",
        "--set", "train.until_converged=true", "--set", "train.max_epochs=2",
        "--set", "eval.track_every=1", "--set", "eval.track_samples=100"]
TIMING = ("eval_seconds", "eval_model_seconds")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results directory with a finished smoke VAE and PIE (and the real-data run)."""
    out = tmp_path_factory.mktemp("reevaluate") / "res"
    # The runner as it is used, one thread set the documented way (this process's environment is left alone).
    proc = subprocess.run([sys.executable, "-m", "bench.run", *ARGS, "--out", str(out)], cwd=ROOT,
                          env={**os.environ, "PIE_BENCH_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _model_runs(out):
    return sorted(d for d in (out / RUNS).iterdir() if not d.name.startswith("real-"))


def _files(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".csv", ".json", ".png", ".safetensors") or p.name == "figures.npz"}


def _lines_without_timing(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if not any(f",{m}," in line for m in TIMING)]


def test_a_finished_run_keeps_its_weights_and_how_long_it_trained(finished):
    for run_dir in _model_runs(finished):
        config = json.loads((run_dir / "config.json").read_text())
        model = build_model(config["model"], load_config(SMOKE))
        load_weights(run_dir / WEIGHTS, model)
        trained = load_checkpoint(run_dir, log=lambda _m: None)["model"]
        assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
        rows = pd.read_csv(run_dir / TABLE).set_index("metric")
        assert rows.loc["epochs_trained", "value"] == 2
        assert np.isnan(rows.loc["converged_epoch", "value"])
        assert rows.loc["converged_epoch", "note"] == "not converged: cap reached at epoch 2"
    # committed beside the run's other records; checkpoints stay out of git
    for name, ignored in ((WEIGHTS, False), ("checkpoint.pt", True)):
        path = f"results/long/runs/pie-x-s0/{name}"
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert proc.returncode == (0 if ignored else 1), path


def test_reevaluation_reproduces_every_row_byte_for_byte(finished):
    before = _files(finished)
    # a fresh process, as the command is used; it evaluates with the runs' own thread count (1)
    env = {**os.environ, "PIE_BENCH_THREADS": "4"}
    proc = subprocess.run([sys.executable, "-m", "bench.reevaluate", "--results", str(finished)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all("0 new" in line for line in lines), lines
    assert all(" 0 changed" in line for line in lines if line.startswith("real-"))
    after = _files(finished)
    assert after.keys() == before.keys()
    for path, old in before.items():
        if path.name == TABLE:
            if path == Path(TABLE):  # the table: the same rows (each run's moved to its end)
                assert sorted(_lines_without_timing(after[path])) == sorted(_lines_without_timing(old))
            else:
                assert _lines_without_timing(after[path]) == _lines_without_timing(old), path
        elif path.name == "done.json":  # rewritten for the changed timing rows: they are intact (below)
            assert json.loads(after[path])["rows"] == json.loads(old)["rows"], path
        else:
            assert after[path] == old, path  # weights, config, logs, figures.npz, samples.png untouched
    _every_run_intact_and_none_handed_back(finished)


def _every_run_intact_and_none_handed_back(out):
    """The next runner finds every re-scored run intact (its rows match its done.json) and reruns none."""
    from bench.sync import sync_table

    for run_dir in (out / RUNS).iterdir():
        done = read_done(run_dir)
        assert done.verifiable and rows_digest(parse_table(run_dir / TABLE).frame) == done.digest, run_dir.name
    result = sync_table(out)
    assert not result.lost and not result.checks  # every copy agrees: nothing handed back to be trained again


def test_convergence_only_derives_the_converged_epoch_row_again_from_the_learning_curves(finished, tmp_path,
                                                                                          capsys):
    # A row written by an older convergence rule: --convergence-only brings it to the current rule from
    # train_log.csv, with no weights needed, and changes no other row; the run stays intact.
    out = tmp_path / "res"
    shutil.copytree(finished, out)
    run_dir = next(d for d in _model_runs(out) if d.name.startswith("vae-"))
    (run_dir / WEIGHTS).unlink()
    old_text = (run_dir / TABLE).read_text()
    stale = old_text.replace(",converged_epoch,,not converged: cap reached at epoch 2",
                             ",converged_epoch,2.0,first epoch at whose end the convergence rule held")
    assert stale != old_text
    (run_dir / TABLE).write_text(stale)
    (run_dir / "done.json").write_bytes(done_bytes(run_dir.name, parse_table(run_dir / TABLE).frame))
    assert bench.reevaluate.main(["--results", str(out), "--runs", run_dir.name, "--convergence-only"]) == 0
    assert "0 rows unchanged, 1 changed, 0 new" in capsys.readouterr().out
    assert (run_dir / TABLE).read_text() == old_text  # the runner's row again (same commit), every other as it was
    table = pd.read_csv(out / TABLE)
    row = table[(table["run_id"] == run_dir.name) & (table["metric"] == "converged_epoch")]
    assert len(row) == 1 and np.isnan(row["value"].iloc[0])
    _every_run_intact_and_none_handed_back(out)


def test_new_metric_rows_come_in_and_no_row_is_lost(finished, monkeypatch, capsys, one_thread):
    real = bench.reevaluate.evaluate_and_time

    def suite_of_tomorrow(*args, **kwargs):
        rows, artefacts = real(*args, **kwargs)
        rows = [r for r in rows if r.metric != "kid_lenet"]  # a metric the suite dropped
        return [*rows, MetricRow("test", "brand_new", 0.25, "a metric added later")], artefacts

    monkeypatch.setattr(bench.reevaluate, "evaluate_and_time", suite_of_tomorrow)
    run_dir = next(d for d in _model_runs(finished) if d.name.startswith("vae-"))
    old = (run_dir / TABLE).read_text().splitlines()
    assert bench.reevaluate.main(["--results", str(finished), "--runs", "vae-*"]) == 0
    assert "1 new" in capsys.readouterr().out
    new = (run_dir / TABLE).read_text().splitlines()
    assert _lines_without_timing("\n".join(new[:len(old)]).encode()) == _lines_without_timing(
        "\n".join(old).encode())  # kid_lenet kept, every other row as it was
    assert len(new) == len(old) + 1 and ",test,brand_new,0.25,a metric added later" in new[-1]
    table = pd.read_csv(finished / TABLE)
    assert ((table["run_id"] == run_dir.name) & (table["metric"] == "brand_new")).sum() == 1


def test_runs_without_weights_are_named_and_left_untouched(finished, tmp_path, capsys):
    out = tmp_path / "res"
    shutil.copytree(finished, out)
    for run_dir in _model_runs(out):
        (run_dir / WEIGHTS).unlink()
    (out / RUNS / "unfinished-s0").mkdir()
    before = _files(out)
    assert bench.reevaluate.main(["--results", str(out), "--runs", "*-s0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert sum(f"no {WEIGHTS}" in line and line.endswith("left untouched") for line in lines) == 2
    assert "unfinished-s0: not finished: left untouched" in lines
    assert _files(out) == before


@pytest.mark.parametrize("args, message", [
    (["--results", "{tmp}/nowhere"], "is no results directory"),
    (["--results", "{out}", "--runs", "gan-*"], "matches no run directory"),
    (["--results", "{out}", "--threads", "0"], "--threads must be a positive integer"),
    (["--results", "{out}", "--device", "tpu"], "--device must be"),
])
def test_bad_input_exits_2_with_one_line(finished, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, out=finished) for a in args]
    assert bench.reevaluate.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_a_run_measured_with_another_lenet_is_left_untouched(finished, tmp_path, capsys):
    # The LeNet is trained once per machine and cached; one trained elsewhere has other weights, and every
    # feature metric with them: such a run must not get rows of two extractors.
    out = tmp_path / "res"
    shutil.copytree(finished, out)
    run_dir = next(d for d in _model_runs(out) if d.name.startswith("vae-"))
    text = (run_dir / TABLE).read_text()
    here = re.search(r"extractor ([0-9a-f]{12})", text).group(1)
    (run_dir / TABLE).write_text(text.replace(here, "0123456789ab"))  # as that run wrote them: intact
    (run_dir / "done.json").write_bytes(done_bytes(run_dir.name, parse_table(run_dir / TABLE).frame))
    replace_run_rows(out / TABLE, parse_table(run_dir / TABLE).frame)
    before = _files(out)
    assert bench.reevaluate.main(["--results", str(out), "--runs", "vae-*"]) == 0
    line = capsys.readouterr().out.strip()
    assert f"measured with LeNet extractor 0123456789ab, this machine's is {here}" in line
    assert line.endswith("left untouched") and _files(out) == before
