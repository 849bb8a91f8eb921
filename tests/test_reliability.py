"""Runs that survive: resume after SIGKILL, divergence guard, bad input, concurrent writers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.run import main
from bench.train import CHECKPOINT, CHECKPOINT_PREV, load_checkpoint, save_checkpoint
from tests.conftest import ROOT, SMOKE

RUNNER = [sys.executable, "-m", "bench.run", "--config", SMOKE, "--no-progress"]
TIMING = {"train_seconds", "eval_seconds"}


def _metrics(out: Path) -> pd.DataFrame:
    t = pd.read_csv(out / "metrics.csv")
    t = t[(t["model"] != "real") & ~t["metric"].isin(TIMING)]
    return t.set_index(["run_id", "split", "metric"])["value"].sort_index()


def test_sigkill_then_resume_gives_identical_metrics(tmp_path):
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
    (run_dir,) = list((out / "runs").iterdir())
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
    return {
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
    }


CASES = ["unknown model", "seeds 0", "seeds negative", "seeds not a number", "unknown config key", "wrong type",
         "malformed yaml", "missing config", "eps2 zero", "eps2 negative", "temperature zero", "batch size zero",
         "latent does not fit", "sweep unknown key", "missing mnist offline", "corrupt mnist",
         "output not writable", "cuda without gpu"]


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


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    proc = subprocess.run([*RUNNER, "--set", "pie.eps2=-1", "--out", str(tmp_path)], cwd=ROOT, env=os.environ,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "eps2" in proc.stderr


def test_two_concurrent_runners_lose_no_rows(tmp_path):
    procs = [subprocess.Popen([*RUNNER, "--out", str(tmp_path), "--models", m, "--seeds", "2"], cwd=ROOT,
                              env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for m in ("vae", "wae")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    table = pd.read_csv(tmp_path / "metrics.csv")
    runs = table[table["model"] != "real"]
    assert runs["run_id"].nunique() == 4
    assert not table.duplicated(["run_id", "split", "metric"]).any()
    per_run = runs.groupby("run_id")["metric"].nunique()
    assert per_run.nunique() == 1  # every run wrote its complete row set
