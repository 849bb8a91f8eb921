"""Damage is contained to the damaged run (issue 26): the report is always built, a damaged run
file is named in one warning line and listed in index.md, the exit status is 3, and no row is
lost; the readers of run directories, done.json's checksum, file modes and stale temporary files.

Results directories are written by the runner's own writers without training
(tests/results_helpers.py); the runner's side is in tests/test_reliability.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import report
from bench.cli import EXIT_DAMAGED
from bench.report import load_table
from bench.report.selection import table1_models
from bench.results import DamageLog, atomic_write_bytes, open_temp, remove_stale_temps
from bench.run import main as run_main
from bench.rundir import read_config, read_train_log
from bench.sync import check_run, sync_table
from bench.tidy import done_bytes, parse_table, read_done, rows_digest
from tests.helpers import ROOT
from tests.results_helpers import make_results

SAMPLES_PNG = f"samples_{'_'.join(table1_models())}.png"  # every registered model's samples

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small results directory, and its report built once (exit 0: nothing is damaged)."""
    out = make_results(tmp_path_factory.mktemp("pristine") / "res")
    assert report.main(["--results", str(out)]) == 0
    return out


def _copy(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "res"
    shutil.copytree(pristine, out)
    return out


def _run(out: Path, model: str = "vae", seed: int = 0) -> Path:
    return next((out / "runs").glob(f"{model}-*-s{seed}"))


def _report(out: Path, capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = report.main(["--results", str(out)])
    err = capsys.readouterr().err
    return code, err.splitlines(), (out / "index.md").read_text()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["run_id", "split", "metric"]).reset_index(drop=True)[["run_id", "split", "metric",
                                                                                   "value", "note", "status"]]


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _npz_with(path: Path, **arrays) -> None:
    with np.load(path) as npz:
        kept = {k: npz[k] for k in npz.files}
    np.savez_compressed(path, **{**kept, **arrays})


FIGURE_DAMAGE = {  # the three, each through a whole report
    "cut in half": _cut_in_half,
    "images of the wrong dtype": lambda p: _npz_with(p, samples_t1=np.array(["a", "b"])),
    "images of the wrong shape": lambda p: _npz_with(p, samples_t1=np.zeros(5, dtype=np.uint8)),
}
MORE_FIGURE_DAMAGE = {  # through the reader alone
    "garbage behind a zip header": lambda p: p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4),
    "empty": lambda p: p.write_bytes(b""),
    "float images": lambda p: _npz_with(p, samples_t1=np.zeros((4, 1, 28, 28), dtype=np.float64)),
    "two-channel images": lambda p: _npz_with(p, samples_t1=np.zeros((4, 2, 28, 28), dtype=np.uint8)),
    "reconstructions of another shape": lambda p: _npz_with(p, recon_outputs=np.zeros((4, 1, 7, 7), np.uint8)),
    "latents of one dimension": lambda p: _npz_with(p, test_latents=np.zeros(9, np.float32),
                                                    test_labels=np.zeros(9, np.uint8)),
    "labels for other latents": lambda p: _npz_with(p, test_latents=np.zeros((9, 2), np.float32),
                                                    test_labels=np.zeros(3, np.uint8)),
    "a pickled object": lambda p: _npz_with(p, samples_t1=np.array([{"a": 1}], dtype=object)),
}


@pytest.mark.parametrize("damage", list(FIGURE_DAMAGE))
def test_a_damaged_figures_npz_stops_nothing(damage, pristine, tmp_path, capsys):
    out = _copy(pristine, tmp_path)
    run = _run(out)
    FIGURE_DAMAGE[damage](run / "figures.npz")
    code, err, index = _report(out, capsys)
    assert code == EXIT_DAMAGED
    (line,) = [line for line in err if "figures.npz" in line]  # one line, naming the file
    assert line.startswith(f"warning: {run / 'figures.npz'} is ")
    assert "Traceback" not in "\n".join(err)
    assert "## Damaged inputs" in index and f"`runs/{run.name}/figures.npz`" in index
    for page in ("table1.md", "table1.csv"):  # the report is built
        assert (out / page).read_bytes() == (pristine / page).read_bytes()
    # The run's picture in the samples figure is kept from the earlier build, not redrawn from damage.
    assert (out / "figures" / SAMPLES_PNG).read_bytes() == \
        (pristine / "figures" / SAMPLES_PNG).read_bytes()


@pytest.mark.parametrize("damage", list(MORE_FIGURE_DAMAGE))
def test_the_figure_reader_names_every_kind_of_damage_and_falls_back(damage, pristine, tmp_path):
    from bench.figure_data import ARTEFACTS, load_figure_data
    from bench.report.figures import FIG7_ARRAYS

    run = tmp_path / "runs" / "vae-x-s0"
    shutil.copytree(_run(pristine), run)
    MORE_FIGURE_DAMAGE[damage](run / "figures.npz")
    lines = []
    arrays, err = load_figure_data(run, FIG7_ARRAYS, DamageLog(echo=lines.append))
    assert arrays == {} and err.startswith(f"runs/{run.name}/figures.npz is ")
    assert len(lines) == 1 and lines[0].startswith(f"warning: {run / 'figures.npz'} is ")
    np.savez_compressed(run / ARTEFACTS, samples_t1=np.zeros((4, 1, 28, 28), np.float32))  # another copy
    lines.clear()
    arrays, err = load_figure_data(run, FIG7_ARRAYS, DamageLog(echo=lines.append))
    assert err == "" and arrays["samples_t1"].shape == (4, 1, 28, 28)
    assert len(lines) == 1 and lines[0].endswith("its figures are drawn from artefacts.npz")


CONFIG_DAMAGE = [
    '{"model": "vae", "eval": {"grid_size": "eight"}}',  # a value of the wrong type
    '{"model": "vae", "eval": {"second_temperature": -1}}',  # out of range
    '{"model": "vae", "train": {"epochs": Infinity}}',
    '{"model": ["vae"]}',
    '{"model": "vae", "seed": -1}',
    "[1, 2]",
    '{"model": "vae", "seed": 0, ',  # cut short
    "[" * 100_000,  # nested past any parser's patience
    "\udcff",  # not UTF-8
]


def test_a_malformed_config_json_stops_nothing(pristine, tmp_path, capsys):
    out = _copy(pristine, tmp_path)
    run = _run(out, "wae", 1)
    (run / "config.json").write_text('{"model": "vae", "eval": [1]}')  # the case: a section no mapping
    code, err, index = _report(out, capsys)
    assert code == EXIT_DAMAGED
    (line,) = [line for line in err if "config.json" in line]
    assert line.startswith(f"warning: {run / 'config.json'} is malformed")
    assert f"`runs/{run.name}/config.json`" in index
    # The run keeps its rows: Table 1 is the same.
    assert (out / "table1.csv").read_bytes() == (pristine / "table1.csv").read_bytes()


@pytest.mark.parametrize("text", CONFIG_DAMAGE)
def test_every_reader_of_a_malformed_config_json_reads_it_as_absent(text, pristine, tmp_path):
    run = tmp_path / "runs" / "vae-x-s0"
    shutil.copytree(_run(pristine), run)
    (run / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    lines = []
    damage = DamageLog(echo=lines.append)
    assert read_config(run, damage) == {} and read_config(run, damage) == {}
    assert len(lines) == 1 and lines[0].startswith(f"warning: {run / 'config.json'} ")
    from bench.record import RunRecord
    from bench.train import shorter_run  # the runner's reader: no candidate, no exception

    longer = RunRecord.from_dict({"model": "vae", "seed": 0, "train": {"epochs": 5}})
    assert shorter_run(tmp_path / "runs" / "vae-y-s0", longer) is None
    assert RunRecord.read(run, damage) is None and len(lines) == 1  # named once, whoever reads it


def test_the_report_warns_whenever_the_true_row_is_missing(pristine, tmp_path, capsys):
    out = _copy(pristine, tmp_path)
    table = pd.read_csv(out / "metrics.csv")
    table[table["model"] != "real"].to_csv(out / "metrics.csv", index=False)
    (real,) = (out / "runs").glob("real-*")
    shutil.rmtree(real)
    code, err, index = _report(out, capsys)
    assert code == EXIT_DAMAGED
    (line,) = [line for line in err if "True row" in line]
    assert line.startswith("warning: ") and "real" in line
    assert "True row" in index.split("## Damaged inputs")[1]


def test_a_damaged_train_log_leaves_out_that_curve_only(pristine, tmp_path):
    from bench.report.table import run_logs

    out = _copy(pristine, tmp_path)
    run = _run(out, "pie", 1)
    (run / "train_log.csv").write_bytes(b"epoch,train_loss\n1,0.5\nx\x00y,\xff\n")
    lines = []
    runs = pd.DataFrame({"run_id": sorted(d.name for d in (out / "runs").iterdir() if not d.name.startswith("real"))})
    logs = run_logs(out, runs, DamageLog(echo=lines.append))
    assert set(logs) == set(runs["run_id"]) - {run.name}  # every other curve is there
    assert len(lines) == 1 and lines[0].startswith(f"warning: {run / 'train_log.csv'}")


def test_a_damaged_run_copy_gives_way_to_the_intact_table(pristine, tmp_path):
    out = _copy(pristine, tmp_path)
    run = _run(out)
    _cut_in_half(run / "metrics.csv")
    damage = DamageLog(echo=lambda _m: None)
    assert _sorted(load_table(out, damage)).equals(_sorted(load_table(pristine)))
    assert [e.path for e in damage.entries] == [run / "metrics.csv"]


def test_a_lost_table_is_replaced_by_the_runs_own_rows(pristine, tmp_path, capsys):
    out = _copy(pristine, tmp_path)
    (out / "metrics.csv").unlink()  # runs copied in without their table: rebuilt in memory, not damage
    code, err, index = _report(out, capsys)
    assert code == 0 and any(line.startswith(f"warning: {out / 'metrics.csv'} is missing") for line in err)
    assert (out / "table1.csv").read_bytes() == (pristine / "table1.csv").read_bytes()
    (out / "metrics.csv").write_bytes(b"\x00\xff garbage\n")  # no table at all: the same rows, from the runs
    damage = DamageLog(echo=lambda _m: None)
    assert _sorted(load_table(out, damage)).equals(_sorted(load_table(pristine)))
    assert [e.what for e in damage.entries] == ["is not a results table (its first line has no column(s) run_id, "
                                                "model, split, metric, value, status)"]


def test_nothing_to_report_is_still_bad_input(tmp_path, capsys):
    (tmp_path / "metrics.csv").write_text("a,b\n1,2\n")
    assert report.main(["--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_report_from_the_shell_exits_3_without_a_traceback(pristine, tmp_path):
    out = _copy(pristine, tmp_path)
    _cut_in_half(_run(out) / "figures.npz")
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--results", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_DAMAGED and "Traceback" not in proc.stderr
    assert all(line.startswith(("warning: ", "report built;")) for line in proc.stderr.splitlines()), proc.stderr


@pytest.mark.parametrize("main", [report.main, run_main], ids=["bench.report", "bench.run"])
def test_exit_status_3_is_documented_in_help(main, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "3 done, but damaged files were found" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------- done.json and the intact copy


def test_done_json_records_the_row_count_and_a_checksum_both_copies_match(pristine):
    for run_dir in (pristine / "runs").iterdir():
        done = read_done(run_dir)
        own = parse_table(run_dir / "metrics.csv").frame
        table = parse_table(pristine / "metrics.csv").frame
        mine = table[table["run_id"] == run_dir.name]
        assert done.verifiable and done.rows == len(own) == len(mine)
        assert done.digest == rows_digest(own) == rows_digest(mine)
        assert check_run(run_dir, mine).source == "both"


def test_the_checksum_sees_a_changed_value_or_note_but_not_the_column_order():
    frame = pd.DataFrame({"run_id": "r", "model": "m", "split": ["test", "test"], "metric": ["a", "b"],
                          "value": [0.1, 0.2], "note": ["x", ""], "status": "ok"})
    digest = rows_digest(frame)
    assert rows_digest(frame[frame.columns[::-1]].iloc[::-1]) == digest
    assert rows_digest(frame.assign(value=[0.1, 0.2000000001])) != digest
    assert rows_digest(frame.assign(note=["x", "y"])) != digest
    assert json.loads(done_bytes("r", frame))["rows_sha256"] == digest


@pytest.mark.parametrize("text", [b"", b"garbage", b"[]", b'{"rows": -1, "rows_sha256": "ab"}',
                                  b'{"rows": "2", "rows_sha256": 5}'])
def test_a_damaged_done_json_still_marks_the_run_finished_and_is_named(text, pristine, tmp_path, capsys):
    out = _copy(pristine, tmp_path)
    run = _run(out)
    (run / "done.json").write_bytes(text)
    damage = DamageLog()
    sync = sync_table(out, damage)
    assert not sync.lost and [e.path for e in damage.entries] == [run / "done.json"]
    table = parse_table(out / "metrics.csv").frame
    assert len(table) == len(parse_table(pristine / "metrics.csv").frame)


def test_done_json_of_older_code_is_read_as_before(pristine, tmp_path):
    out = _copy(pristine, tmp_path)
    run = _run(out)
    (run / "done.json").write_text(json.dumps({"run_id": run.name, "finished": True}))
    assert not read_done(run).verifiable and not read_done(run).problem
    table = parse_table(out / "metrics.csv").frame
    assert check_run(run, table[table["run_id"] == run.name]).source == "both"
    # Its own copy, read whole, wins over a table that differs (as before) ...
    edited = table[table["run_id"] == run.name].assign(value=0.5)
    assert check_run(run, edited).source == "run"
    # ... but a damaged own copy gives way to the table's rows, never the other way round.
    _cut_in_half(run / "metrics.csv")
    assert check_run(run, table[table["run_id"] == run.name]).source == "table"
    assert check_run(run, table.iloc[0:0]).source == "lost"


# ----------------------------------------------------------------------------- the readers


def test_read_config_and_read_train_log_name_damage_once(pristine, tmp_path):
    out = _copy(pristine, tmp_path)
    run = _run(out)
    damage = DamageLog(echo=lambda _m: None)
    assert read_config(run, damage)["model"] == "vae" and not damage
    assert read_train_log(run, damage) is not None and not damage
    (run / "config.json").write_text('{"model": "vae", "train": {"epochs": Infinity}}')
    (run / "train_log.csv").write_text("step,loss\n1,2\n")
    for _ in range(3):  # every reader of the same damaged file: one entry each
        assert read_config(run, damage) == {}
        assert read_train_log(run, damage) is None
    assert [e.path.name for e in damage.entries] == ["config.json", "train_log.csv"]
    assert damage.runs() == [run.name]


def test_the_committed_results_read_without_any_damage(capsys):
    """Every committed results directory (done.json of older code, no checksums) reads clean: its
    configs and logs pass the readers, and its table agrees with every finished run's own rows."""
    damage = DamageLog(echo=lambda _m: None)
    run_dirs = [d for d in sorted((ROOT / "results").rglob("runs/*/")) if d.is_dir()]
    for run_dir in run_dirs:
        read_config(run_dir, damage)
        read_train_log(run_dir, damage)
        if (run_dir / "done.json").is_file():
            assert not read_done(run_dir).problem, run_dir
    tables = sorted(p.parent for p in (ROOT / "results").rglob("metrics.csv") if p.parent.name != "runs"
                    and p.parent.parent.name != "runs")
    capsys.readouterr()
    for results in tables:
        load_table(results, damage)
    assert len(run_dirs) > 50 and len(tables) >= 3
    assert not damage, damage.entries
    assert capsys.readouterr().err == ""  # not even a table lacking rows


# ----------------------------------------------------------------------------- files everyone can read


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.csv", b"x\n")
        from bench.train import CHECKPOINT, save_checkpoint

        save_checkpoint(tmp_path, {"epoch": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / CHECKPOINT).stat().st_mode & 0o777 == 0o666 & ~umask


KILLED_WRITER = """
import sys, time
from pathlib import Path
from bench.results import open_temp

fd, tmp = open_temp(Path(sys.argv[1]))
print(tmp, flush=True)
time.sleep(600)
"""


def test_a_killed_writers_temporary_file_is_removed_and_a_live_ones_kept(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "metrics.csv")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    killed = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fd, live = open_temp(tmp_path / "table1.csv")  # this process is still writing it
    try:
        for path in (killed, live):
            os.utime(path, (time.time() - 3600, time.time() - 3600))
        assert remove_stale_temps(tmp_path) == [killed]
        assert not killed.exists() and live.exists()
    finally:
        os.close(fd)


def test_a_row_that_names_another_run_is_never_read_as_one(pristine, tmp_path):
    out = _copy(pristine, tmp_path)
    table = (out / "metrics.csv").read_bytes()
    run = _run(out)
    flipped = run.name.replace("-s0", "-s7")  # one byte: a run that does not exist
    (out / "metrics.csv").write_bytes(table.replace(run.name.encode(), flipped.encode(), 1))
    read = parse_table(out / "metrics.csv")
    assert len(read.dropped) == 1 and "not model-config_hash-s<seed>" in read.dropped[0]
    assert flipped not in set(read.frame["run_id"])
    real = next((out / "runs").glob("real-*")).name
    (out / "metrics.csv").write_bytes(table.replace(real.encode(), real[:-1].encode() + b"!", 1))
    assert "not real-<data>-<eval>" in parse_table(out / "metrics.csv").dropped[0]
    # In a run's own copy, a row of another run makes the copy damaged: the table's intact rows win.
    shutil.copy(_run(out, "wae") / "metrics.csv", run / "metrics.csv")  # well-formed rows, of another run
    (out / "metrics.csv").write_bytes(table)
    check = check_run(run, parse_table(out / "metrics.csv").frame.query("run_id == @run.name"))
    assert check.source == "table" and "holds a row of another run" in check.damage[0][1]
