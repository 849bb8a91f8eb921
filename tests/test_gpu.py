"""bench.gpu: the one-call GPU protocol, exercised on CPU with the smoke preset (--dry-run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import gpu
from bench.config import load_config
from bench.report.selection import protocol_runs


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    code = gpu.main(["--device", "cpu", "--dry-run", "--budget-s", "300", "--out", str(out),
                     "--data-root", os.environ["MNIST_ROOT"]])
    return code, out


def test_dry_run_writes_perf_runs_table1_and_projection(dry_run):
    code, out = dry_run
    assert code == 0
    perf = pd.read_csv(out / "perf.csv")
    assert {"machine", "model", "harness"} <= set(perf["section"])
    table = pd.read_csv(out / "metrics.csv")
    ok = table[(table["status"] == "ok") & (table["metric"] == "sharpness")]
    assert set(ok["model"]) >= {"pie", "vae", "wae"}
    plan = json.loads((out / "plan.json").read_text())
    assert plan["seeds"] >= 1 and plan["epochs"] == 1  # smoke preset: 1 epoch at most
    assert "**VAE**" in (out / "table1.md").read_text()
    summary = (out / "summary.md").read_text()
    assert f"projected full paper protocol ({5 * len(gpu.protocol_models())} runs x 100 epochs" in summary
    assert not list((out / "runs").glob("*/checkpoint*.pt"))  # dropped: the device call returns less


def test_plan_fills_the_budget_without_exceeding_it():
    cfg = load_config("configs/paper.yaml")
    speeds = {"pie": (2000.0, 20000.0), "vae": (4000.0, 40000.0), "wae": (4000.0, 40000.0)}
    plan = gpu.plan_protocol(speeds, cfg, 55000, budget_s=400.0)
    work = plan.seeds * plan.run_seconds(plan.epochs)
    assert work <= gpu.PLAN_SAFETY * 400.0
    assert plan.seeds * plan.run_seconds(plan.epochs + 1) > gpu.PLAN_SAFETY * 400.0 or plan.epochs == 100
    # Ten times the speed: more seeds or more epochs, never fewer.
    fast = gpu.plan_protocol({m: (10 * a, 10 * b) for m, (a, b) in speeds.items()}, cfg, 55000, 400.0)
    assert fast.seeds * fast.epochs > plan.seeds * plan.epochs


def test_projection_counts_fifteen_runs_and_the_sweep():
    plan = gpu.Plan(1, 1, {"pie": 2.0, "vae": 1.0, "wae": 1.0}, {"pie": 0.0, "vae": 0.0, "wae": 0.0}, 1.0, "")
    assert gpu.projected_paper_seconds(plan, 100) == pytest.approx(100 * (8 * 2.0 + 5 * 1.0 + 5 * 1.0))


def test_runners_are_stopped_at_the_deadline(tmp_path):
    cmds = {m: [sys.executable, "-c", "import time; time.sleep(60)"] for m in ("a", "b")}
    t = time.monotonic()
    outcome = gpu.run_concurrently(cmds, time.monotonic() + 1.0, tmp_path, threads=1)
    assert time.monotonic() - t < 15
    assert outcome == {"a": "stopped at the deadline", "b": "stopped at the deadline"}


@pytest.mark.parametrize("argv", [["--budget-s", "-1"], ["--device", "tpu"]]
                         + ([] if torch.cuda.is_available() else [["--device", "cuda"]]))
def test_bad_input_is_one_line_and_exit_2(argv, capsys, tmp_path):
    assert gpu.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_the_gpu_path_imports_neither_umap_nor_ray():
    # The device machine has neither: importing them must stay lazy on every module bench.gpu uses.
    code = ("import sys; sys.modules['umap'] = None; sys.modules['ray'] = None; "
            "import bench.gpu, bench.perf, bench.run, bench.report, bench.evaluate, bench.train")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).resolve().parents[1]))


def test_a_fourth_registered_model_joins_the_plan_the_runners_and_the_projection(linear_ae, monkeypatch, tmp_path):
    """The protocol reads the registry at each call: a model registered at runtime is measured,
    planned, run and projected with no other change (perf and the runners are stood in for)."""
    from bench import perf
    from bench.registry import MODELS

    def fake_perf(argv, log):  # bench.perf's model rows, one per model it was asked for
        names = argv[argv.index("--models") + 1].split(",") if "--models" in argv else list(MODELS)
        rows = [{"section": "model", "preset": "smoke", "model": m, "metric": metric, "value": value,
                 "device_name": "cpu"} for m in names
                for metric, value in (("train_images_per_s", 1000.0), ("sample_images_per_s", 10000.0))]
        return pd.DataFrame(rows)

    started = {}

    def fake_runners(cmds, deadline, logdir, threads):
        started.update(cmds)
        return {m: "exit 0" for m in cmds}

    monkeypatch.setattr(perf, "run", fake_perf)
    monkeypatch.setattr(gpu, "run_concurrently", fake_runners)
    result = gpu.run(["--device", "cpu", "--dry-run", "--budget-s", "300", "--out", str(tmp_path)], log=lambda *a: None)
    assert linear_ae in result["plan"].epoch_s and linear_ae in result["plan"].eval_s
    cmd = started[linear_ae]
    assert cmd[cmd.index("--models") + 1] == linear_ae
    assert set(started) == set(MODELS)
    n = len(MODELS)
    assert f"projected full paper protocol ({5 * n} runs x 100 epochs" in (tmp_path / "summary.md").read_text()
    plan = result["plan"]
    assert result["serial_projection_s"] == pytest.approx(
        sum(protocol_runs(m) * (100 * plan.epoch_s[m] + plan.eval_s[m]) for m in MODELS))


def test_an_evaluation_counts_each_models_likelihood_passes_from_its_class():
    cfg = load_config("configs/paper.yaml")
    scored = cfg.eval.bpd_subset
    wae = gpu.eval_passes(cfg, "wae")  # no density: no likelihood passes
    assert gpu.eval_passes(cfg, "pie") == wae + scored  # exact density: one pass per image
    assert gpu.eval_passes(cfg, "vae") == wae + cfg.models["vae"].iw_samples * scored  # IWAE: K passes
