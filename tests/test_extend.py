"""A longer run of a finished run's configuration continues from its checkpoint, and ends with
the numbers of a run trained that long from scratch."""

import json
from pathlib import Path

import pandas as pd

from bench.run import main
from tests.helpers import SMOKE

ARGS = ["--config", SMOKE, "--no-progress", "--models", "vae", "--seeds", "1", "--set", "data.train_subset=1000"]
TIMING = {"train_seconds", "eval_seconds", "eval_model_seconds"}


def _metrics(table: Path) -> pd.Series:
    """The model rows of a metrics.csv (results dir or one run's), timings left out."""
    t = pd.read_csv(table)
    t = t[(t["model"] != "real") & ~t["metric"].isin(TIMING)]
    return t.set_index(["split", "metric"])["value"].sort_index()


def test_a_longer_run_continues_from_the_shorter_one_with_identical_numbers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIE_BENCH_THREADS", "1")
    ref = tmp_path / "scratch"
    assert main([*ARGS, "--out", str(ref), "--set", "train.epochs=3"]) == 0
    capsys.readouterr()

    out = tmp_path / "extended"
    assert main([*ARGS, "--out", str(out), "--set", "train.epochs=2"]) == 0
    short = _metrics(out / "metrics.csv")
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out), "--set", "train.epochs=3"]) == 0
    log = capsys.readouterr().out
    assert "continuing from vae-" in log and "at epoch 2" in log
    table = pd.read_csv(out / "metrics.csv")
    assert table.loc[table["model"] == "vae", "run_id"].nunique() == 2  # the 2-epoch run keeps its rows
    by_epochs = {json.loads((d / "config.json").read_text())["train"]["epochs"]: d
                 for d in (out / "runs").glob("vae-*")}
    longer_log = pd.read_csv(by_epochs[3] / "train_log.csv")
    assert longer_log["epoch"].tolist() == [1, 2, 3]  # the shorter run's epochs are part of its curve
    pd.testing.assert_series_equal(_metrics(ref / "metrics.csv"), _metrics(by_epochs[3] / "metrics.csv"))
    assert not short.equals(_metrics(ref / "metrics.csv"))  # the third epoch did change the numbers
    # train_seconds counts the two epochs trained by the shorter run too, not only this process's one
    rows = pd.read_csv(by_epochs[3] / "metrics.csv").set_index("metric")
    assert rows.loc["train_seconds", "value"] == longer_log["epoch_seconds"].sum()
    assert rows.loc["train_seconds", "value"] > longer_log["epoch_seconds"].iloc[-1]
    assert "resumed at epoch 2" in rows.loc["train_seconds", "note"]



def test_a_run_of_another_configuration_starts_from_scratch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIE_BENCH_THREADS", "1")
    out = tmp_path / "out"
    assert main([*ARGS, "--out", str(out), "--set", "train.epochs=1"]) == 0
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out), "--set", "train.epochs=2", "--set", "train.lr=0.002"]) == 0
    assert "continuing from" not in capsys.readouterr().out
