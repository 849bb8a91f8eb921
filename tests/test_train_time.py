"""train_seconds sums every process that trained a run, and the committed runs record it so."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import train_time
from bench.results import RUNS, TABLE
from bench.sync import sync_table
from bench.train import TrainResult
from tests.helpers import ROOT

COMMITTED = [d for base in ("results", "results/long", "results/long-fixed-epochs")
             for d in sorted((ROOT / base / RUNS).glob("*")) if (d / "train_log.csv").is_file()]


def _old_log() -> pd.DataFrame:
    """Four epochs of older code (no epoch_seconds): epochs 1-2 in one process, 3-4 in a second."""
    return pd.DataFrame({"epoch": [1, 2, 3, 4], "seconds": [10.0, 21.0, 12.0, 25.0]})


def test_a_resumed_run_counts_the_epochs_of_every_process():
    log = _old_log()
    assert train_time.process_starts(log) == [0, 2]
    assert train_time.epoch_times(log).tolist() == [10.0, 11.0, 12.0, 13.0]
    # resumed at epoch 2, this process ran 25.5 s: the run trained 46 s (the old code said 25.5)
    seconds, how = TrainResult(log, resumed_from_epoch=2, seconds=25.5).total_seconds()
    assert seconds == 46.0 and "2 processes, resumed at epoch 2" in how
    assert TrainResult(log[:2], resumed_from_epoch=0, seconds=21.5).total_seconds()[0] == 21.5


def test_epoch_seconds_tell_processes_apart_where_seconds_alone_cannot():
    # A one-epoch process (10 s) then one whose first epoch took 15 s: only epoch_seconds shows the restart.
    log = pd.DataFrame({"epoch": [1, 2, 3], "seconds": [10.0, 15.0, 27.0], "epoch_seconds": [10.0, 15.0, 12.0]})
    assert train_time.process_starts(log) == [0, 1]
    assert train_time.total_train_seconds(log, 1, 27.2)[0] == 37.0


@pytest.mark.parametrize("run_dir", COMMITTED, ids=lambda d: f"{d.parent.parent.name}/{d.name}")
def test_committed_train_seconds_count_every_process(run_dir):
    log = pd.read_csv(run_dir / "train_log.csv").sort_values("epoch").reset_index(drop=True)
    rows = pd.read_csv(run_dir / TABLE).set_index("metric")
    recorded = float(rows.loc["train_seconds", "value"])
    if len(train_time.process_starts(log)) > 1:
        assert recorded == train_time.epoch_times(log).sum()
    else:  # one process: its wall time, which ends after the last epoch's log and checkpoint writes
        assert log["seconds"].iloc[-1] <= recorded < log["seconds"].iloc[-1] + 5
    table = pd.read_csv(run_dir.parent.parent / TABLE)
    in_table = table[(table["run_id"] == run_dir.name) & (table["metric"] == "train_seconds")]["value"]
    assert in_table.tolist() == [recorded]


def test_fix_up_changes_only_train_seconds_and_is_idempotent(tmp_path, capsys):
    src = ROOT / "results" / "long-fixed-epochs" / RUNS / "wae-ec101d9392-s3"  # trained in two processes
    out = tmp_path / "res"
    shutil.copytree(src, out / RUNS / src.name, ignore=shutil.ignore_patterns("*.npz", "*.png"))
    run_table = out / RUNS / src.name / TABLE
    # as the old code recorded it: the last process's wall time
    train_time.rewrite_row(run_table, "train_seconds", 518.4332423170017, "wall time of training in this process")
    sync_table(out)
    before = {p: p.read_text().splitlines() for p in (run_table, out / TABLE)}
    assert train_time.main(["--results", str(out)]) == 0
    assert "1 run(s) corrected" in capsys.readouterr().out
    for path, old in before.items():
        new = path.read_text().splitlines()
        changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
        assert len(changed) == 1 and ",train_seconds,518.43" in changed[0][0]
        assert ",train_seconds,751.04" in changed[0][1] and "2 processes" in changed[0][1]
    after = {p: p.read_bytes() for p in before}
    assert train_time.main(["--results", str(out)]) == 0
    assert "0 run(s) corrected" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in before} == after


def test_fix_up_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert train_time.main(["--results", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_committed_results_are_covered():
    assert len(COMMITTED) >= 50 and any(Path(d).name == "pie-3ad7bf5165-s0" for d in COMMITTED)
