"""Runs that survive: resume after SIGKILL, divergence guard, bad input, concurrent writers,
a damaged table rebuilt from the run directories, runs claimed by one runner at a time."""

import csv
import fcntl
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import bench.data
import bench.run
import bench.runner
from bench.cli import EXIT_DAMAGED
from bench.errors import UserError
from bench.report import load_table
from bench.results import DONE
from bench.run import main, parse_args, plan_runs
from bench.train import CHECKPOINT, CHECKPOINT_PREV, load_checkpoint, save_checkpoint
from tests.helpers import ROOT, SMOKE

RUNNER = [sys.executable, "-m", "bench.run", "--config", SMOKE, "--no-progress"]
TIMING = {"train_seconds", "eval_seconds", "eval_model_seconds"}


def _metrics(out: Path) -> pd.DataFrame:
    t = pd.read_csv(out / "metrics.csv")
    t = t[(t["model"] != "real") & ~t["metric"].isin(TIMING)]
    return t.set_index(["run_id", "split", "metric"])["value"].sort_index()


def test_sigkill_then_resume_gives_identical_metrics(tmp_path, monkeypatch):
    # One thread in this process and in the runner subprocesses alike: 1- and 2-thread runs
    # of the same seed differ in the last digits, which training amplifies.
    monkeypatch.setenv("PIE_BENCH_THREADS", "1")
    args = ["--models", "vae", "--seeds", "1", "--set", "train.epochs=4", "--set", "data.train_subset=1500"]
    ref = tmp_path / "ref"
    assert main(["--config", SMOKE, "--no-progress", "--out", str(ref), *args]) == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen([*RUNNER, "--out", str(out), *args], cwd=ROOT, env=os.environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob(f"runs/*/{CHECKPOINT}")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = list((out / "runs").glob("vae-*"))
    assert not (run_dir / "done.json").exists()

    resumed = subprocess.run([*RUNNER, "--out", str(out), *args], cwd=ROOT, env=os.environ,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    pd.testing.assert_series_equal(_metrics(ref), _metrics(out))


def test_truncated_checkpoint_falls_back_to_previous(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 1})
    save_checkpoint(tmp_path, {"epoch": 2})
    assert (tmp_path / CHECKPOINT_PREV).exists()
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])
    messages = []
    assert load_checkpoint(tmp_path, messages.append)["epoch"] == 1
    assert any("unreadable" in m for m in messages)
    (tmp_path / CHECKPOINT_PREV).write_bytes(b"garbage")
    assert load_checkpoint(tmp_path, messages.append) is None  # neither readable: restart


def test_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    # A decoder scale of exp(-10000) = 0 makes the Gaussian log-likelihood infinite at step 1.
    code = main(["--config", SMOKE, "--no-progress", "--out", str(tmp_path), "--models", "vae", "--seeds", "1",
                 "--sweep", "vae.init_log_scale=-10000,-2"])
    assert code == 1
    assert "1 run(s) failed" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "metrics.csv")
    runs = table[table["model"] == "vae"]
    failed = runs[runs["status"] == "failed"]
    assert failed["run_id"].nunique() == 1
    assert "non-finite" in failed["note"].iloc[0] and "step 1" in failed["note"].iloc[0]
    ok = runs[runs["status"] == "ok"]
    assert "recon_mse" in set(ok["metric"])
    assert (failed["vae.init_log_scale"] == -10000).all()


def _bad_inputs(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: {epochs: [1,\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in os.listdir(os.environ["MNIST_ROOT"]):
        if name.endswith(".gz"):
            (corrupt / name).write_bytes((Path(os.environ["MNIST_ROOT"]) / name).read_bytes())
    (corrupt / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really")
    env_empty = {"MNIST_ROOT": str(tmp_path / "nothing")}
    configs = {"list": "- train\n- data\n", "scalar": "42\n", "empty": "", "comments only": "# nothing set\n",
               "dup section": "train:\n  epochs: 1\ndata:\n  val_size: 500\ntrain:\n  epochs: 2\n",
               "dup key": "train:\n  lr: 0.1\n  lr: 0.2\n"}
    for name, text in configs.items():
        (tmp_path / f"{name.replace(' ', '_')}.yaml").write_text(text)
    return {
        "lr nan": (["--set", "train.lr=.nan"], {}),
        "lr inf": (["--set", "train.lr=.inf"], {}),
        "nan in a sweep": (["--sweep", "train.grad_clip=1,.nan"], {}),
        "batch larger than the training set": (["--set", "train.batch_size=601"], {}),
        "config is a list": (["--config", str(tmp_path / "list.yaml")], {}),
        "config is a scalar": (["--config", str(tmp_path / "scalar.yaml")], {}),
        "duplicate section": (["--config", str(tmp_path / "dup_section.yaml")], {}),
        "duplicate key": (["--config", str(tmp_path / "dup_key.yaml")], {}),
        "a million runs without --yes": (["--seeds", "1000000"], {}),
        "unknown model": (["--models", "nope"], {}),
        "seeds 0": (["--seeds", "0"], {}),
        "seeds negative": (["--seeds", "-3"], {}),
        "seeds not a number": (["--seeds", "five"], {}),
        "unknown config key": (["--set", "train.epoks=3"], {}),
        "wrong type": (["--set", "train.epochs=many"], {}),
        "malformed yaml": (["--config", str(bad_yaml)], {}),
        "missing config": (["--config", str(tmp_path / "nope.yaml")], {}),
        "eps2 zero": (["--set", "pie.eps2=0"], {}),
        "eps2 negative": (["--sweep", "pie.eps2=0.1,-1"], {}),
        "temperature zero": (["--set", "eval.second_temperature=0"], {}),
        "batch size zero": (["--set", "train.batch_size=0"], {}),
        "latent does not fit": (["--set", "pie.latent_dim=500"], {}),
        "sweep unknown key": (["--sweep", "pie.nope=1,2"], {}),
        "missing mnist offline": ([], env_empty),
        "corrupt mnist": (["--data-root", str(corrupt)], {}),
        "output not writable": (["--out", str(a_file / "sub")], {}),
        "cuda without gpu": (["--device", "cuda"], {}),
        # Issue 26: sizes checked before anything is built from them, ranges of every setting.
        "a trillion seeds": (["--seeds", str(10**12)], {}),
        "a trillion seeds with --yes": (["--seeds", str(10**12), "--yes"], {}),
        "more seeds than memory can count": (["--seeds", str(10**20), "--yes"], {}),
        "config is empty": (["--config", str(tmp_path / "empty.yaml")], {}),
        "config is comments only": (["--config", str(tmp_path / "comments_only.yaml")], {}),
        "kid subset size zero": (["--set", "eval.kid_subset_size=0"], {}),
        "pr k zero": (["--set", "eval.pr_k=0"], {}),
        "kid subsets zero": (["--set", "eval.kid_subsets=0"], {}),
        "log_prob batch zero": (["--set", "eval.log_prob_batch_size=0"], {}),
        "interpolation steps zero": (["--set", "eval.interp_steps=0"], {}),
        "probe train size zero": (["--set", "eval.probe_train_size=0"], {}),
        "classifier epochs zero": (["--set", "eval.classifier_epochs=0"], {}),
    }


CASES = ["lr nan", "lr inf", "nan in a sweep", "batch larger than the training set", "config is a list",
         "config is a scalar", "duplicate section", "duplicate key", "a million runs without --yes",
         "unknown model", "seeds 0", "seeds negative", "seeds not a number", "unknown config key", "wrong type",
         "malformed yaml", "missing config", "eps2 zero", "eps2 negative", "temperature zero", "batch size zero",
         "latent does not fit", "sweep unknown key", "missing mnist offline", "corrupt mnist",
         "output not writable", "cuda without gpu",
         "a trillion seeds", "a trillion seeds with --yes", "more seeds than memory can count", "config is empty",
         "config is comments only", "kid subset size zero", "pr k zero", "kid subsets zero", "log_prob batch zero",
         "interpolation steps zero", "probe train size zero", "classifier epochs zero"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit_2_results_unchanged(case, tmp_path, capsys, monkeypatch):
    if case == "cuda without gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    args, env = _bad_inputs(tmp_path)[case]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "results"
    out.mkdir()
    (out / "metrics.csv").write_text("run_id\nkept\n")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    full = ["--config", SMOKE, "--models", "pie,vae,wae", "--out", str(out), *args]
    assert main(full) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before


@pytest.mark.parametrize("setting", ["eval.classifier_epochs=0", "eval.kid_subset_size=0", "eval.interp_steps=0"])
def test_a_setting_out_of_range_is_refused_before_the_output_folder_exists(setting, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["--config", SMOKE, "--models", "vae", "--out", str(out), "--set", setting]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and setting.split("=")[0] in err


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    proc = subprocess.run([*RUNNER, "--set", "pie.eps2=-1", "--out", str(tmp_path)], cwd=ROOT, env=os.environ,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "eps2" in proc.stderr


# ----------------------------------------------------------------------------- the table is an index of the runs

GRID = ["--config", SMOKE, "--no-progress", "--models", "vae,wae", "--seeds", "1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One finished smoke grid (2 runs and the real-image rows); tests work on copies of it."""
    out = tmp_path_factory.mktemp("reference")
    assert main([*GRID, "--out", str(out)]) == 0
    return out


def _copy(reference: Path, dest: Path) -> Path:
    shutil.copytree(reference, dest)
    return dest


def _table(out: Path) -> pd.DataFrame:
    t = pd.read_csv(out / "metrics.csv")
    return t.sort_values(["run_id", "split", "metric"]).reset_index(drop=True)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["run_id", "split", "metric"]).reset_index(drop=True)[["run_id", "split", "metric",
                                                                                   "value", "status"]]


def _cut_mid_line(data: bytes) -> bytes:
    start = data.rindex(b"\n", 0, 2 * len(data) // 3) + 1
    return data[:start + 40]  # 40 bytes into a line of ~150


DAMAGE = {
    "cut mid-line": _cut_mid_line,
    "cut in the last field": lambda data: data[:-3],  # the field count is right; the line end is missing
    "emptied": lambda data: b"",
    "header only": lambda data: data[:data.index(b"\n") + 1],
    "junk appended": lambda data: data + bytes(range(128, 256)) + b"\n\x00,\xff,\n\"x,\n",
    "no run_id column": lambda data: data.replace(b"run_id,", b"id,", 1),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_table_is_rebuilt_from_the_run_directories(damage, reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    original = (out / "metrics.csv").read_bytes()
    (out / "metrics.csv").write_bytes(DAMAGE[damage](original))
    capsys.readouterr()
    # Repaired; the exit status says whether a line was malformed (a table that merely lacks the rows of
    # some runs is an index to complete, as when run directories are copied in from elsewhere).
    malformed = damage not in ("emptied", "header only")
    assert main([*GRID, "--out", str(out)]) == (EXIT_DAMAGED if malformed else 0)
    stdout, stderr = capsys.readouterr()
    pd.testing.assert_frame_equal(_table(out), _table(reference))
    assert "2 run(s) planned: 0 to start, 2 already finished" in stdout
    assert "(no finished runs)" not in stdout and "vae" in stdout.split("finished")[-1]
    lines = stderr.strip().splitlines()
    if malformed:
        assert lines[-1].startswith("damage found and contained: the table")
        lines = lines[:-1]
    assert "Traceback" not in stderr and all(line.startswith(("warning: ", "note: ")) for line in lines), stderr
    lost_rows = damage != "junk appended"
    assert sum(line.startswith("note: restored the rows of") for line in lines) == lost_rows, stderr
    if damage in ("cut mid-line", "cut in the last field", "junk appended"):
        assert any("malformed line" in line for line in lines), stderr
    if damage == "no run_id column":  # unreadable as a table: kept aside for the user, not deleted
        (aside,) = out.glob("metrics.csv.broken-*")
        assert aside.read_bytes() == DAMAGE[damage](original)
    capsys.readouterr()
    assert main([*GRID, "--out", str(out)]) == 0  # a sound table is left as it is
    assert capsys.readouterr().err == ""


def test_rows_that_differ_from_the_run_directory_are_restored(reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    table = pd.read_csv(out / "metrics.csv")
    table.loc[table["metric"] == "recon_mse", "value"] = 0.5  # a stale or edited value
    table[table["metric"] != "sharpness"].to_csv(out / "metrics.csv", index=False)
    assert main([*GRID, "--out", str(out)]) == EXIT_DAMAGED
    assert "note: restored the rows of 3 finished run(s)" in capsys.readouterr().err
    pd.testing.assert_frame_equal(_table(out), _table(reference))


def test_seed_and_latent_dim_are_written_as_integers(reference):
    with open(reference / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == "vae"]
    assert rows and {r["seed"] for r in rows} == {"0"} and {r["latent_dim"] for r in rows} == {"8"}


def test_report_warns_when_the_table_lacks_finished_runs(reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    table = pd.read_csv(out / "metrics.csv")
    table[~table["run_id"].str.startswith("vae")].to_csv(out / "metrics.csv", index=False)
    loaded = load_table(out)  # the run's own intact copy stands in for the rows the table lacks
    assert _sorted(loaded[loaded["run_id"].str.startswith("vae")]).equals(
        _sorted(load_table(reference)[lambda t: t["run_id"].str.startswith("vae")]))
    err = capsys.readouterr().err
    assert "warning:" in err and "lacks rows of 1 finished run(s)" in err
    cut = _cut_mid_line((reference / "metrics.csv").read_bytes())
    (out / "metrics.csv").write_bytes(cut)
    loaded = load_table(out)  # the half line is left out, not read as data, and said so; the run's copy
    assert _sorted(loaded).equals(_sorted(load_table(reference)))  # stands in for the rows cut off
    assert "malformed line" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one runner per run


def _epoch_lines(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if " epoch 1/1 " in line:
            run_id = line.split()[0]
            counts[run_id] = counts.get(run_id, 0) + 1
    return counts


def test_two_runners_on_one_grid_train_each_run_once(reference, tmp_path):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    for real in (reference / "runs").glob("real-*"):  # the real-image rows are not what is tested here
        shutil.copytree(real, out / "runs" / real.name)
    grid = ["--models", "vae,wae", "--seeds", "2", "--out", str(out)]
    procs = [subprocess.Popen([*RUNNER, *grid], cwd=ROOT, env=os.environ, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    trained = _epoch_lines(results[0][0] + results[1][0])
    table = pd.read_csv(out / "metrics.csv")
    runs = table[table["model"] != "real"]
    assert sorted(trained) == sorted(runs["run_id"].unique()) and len(trained) == 4
    assert set(trained.values()) == {1}, trained  # no run trained by both runners
    assert not table.duplicated(["run_id", "split", "metric"]).any()
    assert runs.groupby("run_id")["metric"].nunique().nunique() == 1  # every run wrote its complete row set


def test_a_claimed_run_is_left_for_later_then_skipped_if_finished(reference, tmp_path, capsys):
    """The runner moves on past a run another process holds, and comes back to it at the end."""
    out = _copy(reference, tmp_path / "out")
    vae, wae = (next((out / "runs").glob(f"{m}-*")) for m in ("vae", "wae"))
    for d in (vae, wae):
        (d / DONE).rename(d / "done.saved")
    holder_done = threading.Event()

    def other_runner():  # holds the vae run until this runner has finished wae, then finishes vae
        with open(vae / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            deadline = time.time() + 300
            while not (wae / DONE).exists() and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # let the runner reach its waiting round
            (vae / "done.saved").rename(vae / DONE)
            fcntl.flock(fh, fcntl.LOCK_UN)
        holder_done.set()

    thread = threading.Thread(target=other_runner)
    thread.start()
    time.sleep(0.2)
    try:
        code = main([*GRID, "--out", str(out)])
    finally:
        thread.join(timeout=300)
    assert code == 0 and holder_done.is_set()
    stdout = capsys.readouterr().out
    order = [stdout.index(s) for s in (f"[busy] {vae.name}", f"[ok] {wae.name}", "waiting for them",
                                       f"[skipped] {vae.name}")]
    assert order == sorted(order), stdout
    assert f"resuming {vae.name}" not in stdout and f"resuming {wae.name}" in stdout


def test_repeated_models_and_sweep_values_are_planned_once():
    args = parse_args(["--config", SMOKE, "--models", "vae,vae", "--executor", "process", "--jobs", "2",
                       "--sweep", "train.lr=0.001,1e-3"])
    specs = plan_runs(args)
    assert len(specs) == 1 and specs[0].config.train.lr == 0.001
    args = parse_args(["--config", SMOKE, "--models", "wae", "--sweep", "wae.mmd_weight=1,1.0"])  # one run id
    assert len(plan_runs(args)) == 1


HAMMER = """
import sys
from pathlib import Path
from bench.train import save_checkpoint
for i in range(300):
    save_checkpoint(Path(sys.argv[1]), {"writer": sys.argv[2], "i": i})
"""


def test_checkpoint_rotation_tolerates_a_concurrent_writer(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"epoch": 1})
    real_replace = os.replace

    def replace_after_the_other_writer(src, dst):  # the other writer rotates the checkpoint first
        if Path(src).name == CHECKPOINT and Path(dst).name == CHECKPOINT_PREV:
            real_replace(src, dst)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_the_other_writer)
    save_checkpoint(tmp_path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp"))
    # and for real: two processes rotating in one folder
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, str(tmp_path), str(w)], cwd=ROOT, env=os.environ,
                              stderr=subprocess.PIPE, text=True) for w in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert load_checkpoint(tmp_path)["i"] == 299 and not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- inputs


def test_scientific_notation_is_accepted_and_sweeps_keep_their_values(tmp_path):
    args = parse_args(["--config", SMOKE, "--models", "vae", "--set", "train.lr=1e-4", "--set", "wae.mmd_weight=2E1"])
    assert plan_runs(args)[0].config.train.lr == 1e-4
    args = parse_args(["--config", SMOKE, "--models", "vae", "--sweep", "train.lr=0.001,0.00001"])
    specs = plan_runs(args)
    assert [s.config.train.lr for s in specs] == [0.001, 1e-5]
    assert [s.sweep["train.lr"] for s in specs] == [0.001, 1e-5]


def test_a_plan_over_the_limit_starts_only_with_yes():
    args = parse_args(["--config", SMOKE, "--models", "vae", "--seeds", "101"])
    with pytest.raises(UserError, match="101 runs.*--yes"):
        plan_runs(args)
    args = parse_args(["--config", SMOKE, "--models", "vae", "--seeds", "101", "--yes"])
    assert len(plan_runs(args)) == 101


def test_a_file_where_a_run_directory_should_be_fails_that_run_on_one_line(reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    wae = next((out / "runs").glob("wae-*"))
    shutil.rmtree(wae)
    wae.write_text("not a directory")
    capsys.readouterr()
    assert main([*GRID, "--out", str(out)]) == 1
    _, err = capsys.readouterr()
    assert "Traceback" not in err and f"{wae.name}: run directory" in err and "not a directory" in err
    table = pd.read_csv(out / "metrics.csv")
    failed = table[table["run_id"] == wae.name]
    assert failed["status"].tolist() == ["failed"] and "not a directory" in failed["note"].iloc[0]
    assert (table[table["run_id"].str.startswith("vae")]["status"] == "ok").all()


def test_any_failure_of_a_run_leaves_a_failed_row(reference, tmp_path, capsys, monkeypatch):
    out = _copy(reference, tmp_path / "out")
    vae = next((out / "runs").glob("vae-*"))
    (vae / DONE).unlink()  # resumes from its last checkpoint, then evaluation fails

    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(bench.runner, "evaluate_model", broken_evaluation)
    assert main([*GRID, "--out", str(out)]) == 1
    assert f"{vae.name}: RuntimeError: evaluation broke" in capsys.readouterr().err
    rows = pd.read_csv(out / "metrics.csv").query("run_id == @vae.name")
    assert rows["status"].tolist() == ["failed"] and rows["note"].tolist() == ["RuntimeError: evaluation broke"]


def test_a_missing_data_root_creates_only_the_folder_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PIE_BENCH_OFFLINE")
    calls = []

    def download_without_network(root, spec):  # what torchvision does before it fails offline
        calls.append(root)
        (root / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise OSError("no network")

    monkeypatch.setattr(bench.data, "_download", download_without_network)
    deep = tmp_path / "a" / "b" / "mnist"
    assert main([*GRID, "--out", str(tmp_path / "out"), "--data-root", str(deep)]) == 2
    assert not (tmp_path / "a").exists() and not calls
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "does not exist" in err
    shallow = tmp_path / "mnist"
    assert main([*GRID, "--out", str(tmp_path / "out"), "--data-root", str(shallow)]) == 2
    assert calls == [shallow] and not shallow.exists()  # made for the download, removed when it failed
    assert not (tmp_path / "out").exists()


def test_text_columns_that_look_like_numbers_survive_a_rewrite(tmp_path):
    # A commit such as 5e77292 parses as a float (inf) and a hash such as 0123456789 loses its
    # leading zero unless the table reads those columns as text.
    from bench.results import COLUMNS
    from bench.sync import replace_run_rows
    from bench.tidy import read_table

    path = tmp_path / "metrics.csv"
    row = dict.fromkeys(COLUMNS, "")
    row.update(run_id="vae-0123456789-s0", dataset="mnist", model="vae", seed=0, split="test", metric="m",
               value=1.0, status="ok", latent_dim=8, preset="smoke", config_hash="0123456789",
               git_commit="5e77292", started_at="2026-11-29T00:00:00+00:00")
    replace_run_rows(path, pd.DataFrame([row]))
    other = {**row, "run_id": "vae-0123456789-s1", "seed": 1}
    replace_run_rows(path, pd.DataFrame([other]))  # read, merge and write the first row again
    table = read_table(path)
    assert table["git_commit"].tolist() == ["5e77292", "5e77292"]
    assert table["config_hash"].tolist() == ["0123456789", "0123456789"]


# ----------------------------------------------------------------------------- damage is contained (issue 26)


RECORD = ["run_id", "seed", "split", "metric", "value", "note", "status"]


def _run_rows(out: Path, prefix: str) -> pd.DataFrame:
    """A run's rows in the table, without timing metrics: what must come back after damage."""
    t = pd.read_csv(out / "metrics.csv")
    t = t[t["run_id"].str.startswith(prefix) & ~t["metric"].isin(TIMING)]
    return t.sort_values(["split", "metric"]).reset_index(drop=True)[["run_id", "split", "metric", "value", "note"]]


def test_a_run_file_cut_mid_line_loses_no_row_when_the_table_is_intact(reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    vae = next((out / "runs").glob("vae-*"))
    (vae / "metrics.csv").write_bytes(_cut_mid_line((vae / "metrics.csv").read_bytes()))
    capsys.readouterr()
    code = main([*GRID, "--out", str(out)])
    err = capsys.readouterr().err
    pd.testing.assert_frame_equal(_table(out), _table(reference))  # the table's intact row wins
    assert code == EXIT_DAMAGED
    own = [pd.read_csv(d / "metrics.csv").sort_values(["split", "metric"]).reset_index(drop=True)[RECORD]
           for d in (vae, reference / "runs" / vae.name)]
    pd.testing.assert_frame_equal(*own)  # and the run's own copy is whole again
    (line,) = [line for line in err.splitlines() if "metrics.csv" in line]
    assert line.startswith(f"warning: {vae / 'metrics.csv'} is damaged") and "rewrote it from" in line


@pytest.mark.parametrize("done", ["with checksum", "of older code"])
def test_a_finished_run_whose_rows_are_missing_everywhere_is_run_again(done, reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    vae = next((out / "runs").glob("vae-*"))
    if done == "of older code":  # no row count or checksum: read as before
        (vae / DONE).write_text(json.dumps({"run_id": vae.name, "finished": True}))
    (vae / "metrics.csv").unlink()
    (out / "metrics.csv").write_bytes(b"")
    capsys.readouterr()
    code = main([*GRID, "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert "1 to start" in stdout and f"[ok] {vae.name}" in stdout  # not skipped
    assert code == EXIT_DAMAGED
    assert f"warning: {vae / 'metrics.csv'} is missing and the table lacks them too" in err
    # Resumed from its last checkpoint, i.e. evaluated again: the very same numbers.
    pd.testing.assert_frame_equal(_run_rows(out, "vae"), _run_rows(reference, "vae"))
    pd.testing.assert_frame_equal(_run_rows(out, "wae"), _run_rows(reference, "wae"))
    assert list(vae.glob(f"{DONE}.rows-lost-*"))  # the old done.json is kept aside
    assert main([*GRID, "--out", str(out)]) == 0  # and all is sound again


REAL_HOLDER = """
import fcntl, sys, time
fh = open(sys.argv[1], "a")
fcntl.flock(fh, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_a_real_image_claim_held_by_a_dead_runner_is_taken_over(reference, tmp_path, capsys, monkeypatch):
    out = _copy(reference, tmp_path / "out")
    (real,) = (out / "runs").glob("real-*")
    shutil.rmtree(real)
    real.mkdir()
    table = pd.read_csv(out / "metrics.csv")
    table[table["model"] != "real"].to_csv(out / "metrics.csv", index=False)
    holder = subprocess.Popen([sys.executable, "-c", REAL_HOLDER, str(real / ".lock")], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    first_call = bench.run.record_real

    def record_real_then_the_holder_dies(*args, **kwargs):  # the holder is killed while this runner works
        result = first_call(*args, **kwargs)
        if holder.poll() is None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        return result

    monkeypatch.setattr(bench.run, "record_real", record_real_then_the_holder_dies)
    try:
        assert main([*GRID, "--out", str(out)]) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert "claimed by another runner: waiting for them" in capsys.readouterr().out
    assert (real / DONE).is_file()
    pd.testing.assert_frame_equal(_run_rows(out, "real"), _run_rows(reference, "real"))


def test_a_malformed_config_json_of_a_sibling_run_fails_no_new_run(reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    vae = next((out / "runs").glob("vae-*"))
    sibling = out / "runs" / "vae-0000000000-s9"  # a resumable run whose config.json is damaged
    sibling.mkdir()
    shutil.copy(vae / CHECKPOINT, sibling / CHECKPOINT)
    config = json.loads((vae / "config.json").read_text())
    config["train"]["epochs"] = 1e999  # Infinity: valid JSON to Python, no epoch count
    (sibling / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main([*GRID, "--seeds", "2", "--models", "vae", "--out", str(out)]) == EXIT_DAMAGED
    stdout, err = capsys.readouterr()
    assert "[ok] vae-" in stdout and "failed" not in stdout
    (line,) = [line for line in err.splitlines() if "config.json" in line]
    assert line.startswith(f"warning: {sibling / 'config.json'} is malformed") and "train.epochs" in line


def _legacy(payload: dict, path: Path) -> None:
    torch.save(payload, path, _use_new_zipfile_serialization=False)


def _raw_pickle(payload: dict, path: Path) -> None:
    path.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("write", [_legacy, _raw_pickle], ids=["legacy torch.save", "raw pickle"])
def test_a_checkpoint_not_in_the_current_format_is_refused_and_kept(write, reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    vae = next((out / "runs").glob("vae-*"))
    (vae / DONE).unlink()  # a run to resume
    write(torch.load(vae / CHECKPOINT, weights_only=True), vae / CHECKPOINT)
    crafted = (vae / CHECKPOINT).read_bytes()
    capsys.readouterr()
    assert main([*GRID, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: checkpoint '{vae / CHECKPOINT}' is a pickle")
    assert (vae / CHECKPOINT).read_bytes() == crafted  # never overwritten


def test_results_files_respect_the_umask(reference):
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    files = [reference / "metrics.csv", *[p for p in (reference / "runs").rglob("*") if p.is_file()]]
    modes = {p.name: p.stat().st_mode & 0o777 for p in files if p.name != ".lock"}
    assert modes and set(modes.values()) == {want}, modes


def test_temporary_files_of_killed_writers_are_removed_at_the_next_start(reference, tmp_path, capsys):
    out = _copy(reference, tmp_path / "out")
    vae = next((out / "runs").glob("vae-*"))
    dead = [out / ".metrics.csv.k1ll3d.tmp", vae / ".checkpoint.pt.k1ll3d.tmp", out / ".write-test-k1ll3d"]
    fresh = vae / ".figures.npz.wr1t1ng.tmp"  # a writer that may still be at it
    for path in [*dead, fresh]:
        path.write_bytes(b"half a file")
    for path in dead:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    live = vae / ".metrics.csv.l1v3.tmp"  # older, but its writer holds its lock
    live.write_bytes(b"half a file")
    os.utime(live, (time.time() - 3600, time.time() - 3600))
    with open(live, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        capsys.readouterr()
        assert main([*GRID, "--out", str(out)]) == 0
    assert not any(p.exists() for p in dead) and fresh.exists() and live.exists()
    assert "note: removed 3 temporary file(s) left by killed writers" in capsys.readouterr().err
