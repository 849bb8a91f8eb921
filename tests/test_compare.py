"""Yours vs the committed reference vs the paper (bench.report.compare), on synthetic tables;
the local results layout; figure titles naming the protocol."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import plots, report
from bench.record import RunRecord
from bench.report import figures
from bench.report.compare import build_comparison, compare_sides, spread_mark, table1_side
from bench.report.selection import table1_models  # noqa: E402
from bench.results import local_dir, protocol_file, reference_dir
from bench.results import main as results_cli
from tests.test_report import make_synthetic

SAMPLES_PNG = f"samples_{'_'.join(table1_models())}.png"  # every registered model's samples

REF = [1.0, 1.2, 0.8, 1.1, 0.9]  # mean 1.0, sample sd 0.158: within is [0.684, 1.316]


@pytest.mark.parametrize(("yours", "identical", "mark"), [
    ([1.3], False, "within"),
    ([1.0, 1.6], False, "within"),  # the mean over your seeds counts
    ([1.4], False, "outside"),
    ([0.6, 0.7], False, "outside"),
    ([1.4], True, "identical"),
    ([math.nan], False, "n/a"),
])
def test_spread_mark_rule(yours, identical, mark):
    assert spread_mark(yours, REF, identical) == mark


def test_spread_mark_with_one_reference_run():
    assert spread_mark([2.0], [1.0]) == "no spread"
    assert spread_mark([2.0], []) == "n/a"


def _tidy(values: dict[tuple[str, int], float], metric="sharpness", note="", commit="abc1234"):
    """A tidy table of Table 1 runs: (model, seed) -> value of ``metric``; real data under seed -1."""
    rows = []
    for (model, seed), v in values.items():
        rid = "real-0badc0de-00000000" if model == "real" else f"{model}-h8-s{seed}"
        rows.append({"run_id": rid, "dataset": "mnist", "model": model, "seed": pd.NA if model == "real" else seed,
                     "split": "test", "metric": metric, "value": v, "note": note, "status": "ok",
                     "latent_dim": pd.NA if model == "real" else 8, "preset": "default", "config_hash": "h8",
                     "git_commit": commit, "started_at": "2026-01-01T00:00:00+00:00", "elapsed_s": 1.0})
    t = pd.DataFrame(rows)
    t["note"] = t["note"].astype(str)
    return t


def test_compare_marks_identical_within_and_outside_on_synthetic_tables():
    ref = _tidy({("real", -1): 0.18, **{("vae", s): v for s, v in enumerate(REF)},
                 **{("wae", s): 2.0 + 0.01 * s for s in range(5)}})
    mine = _tidy({("real", -1): 0.18, **{("vae", s): v + 0.2 for s, v in enumerate(REF)},
                  **{("wae", s): 3.0 for s in range(5)}}, commit="def5678")
    frame = compare_sides(table1_side(mine, {}), table1_side(ref, {}), has_paper=True)
    marks = dict(zip(frame["row"], frame["mark"], strict=True))
    assert marks == {"True": "identical", "VAE": "within", "WAE": "outside"}
    vae = frame[frame["row"] == "VAE"].iloc[0]
    assert vae["yours_mean"] == pytest.approx(1.2) and vae["reference_mean"] == pytest.approx(1.0)
    assert vae["paper"] == 0.08  # Table 1's VAE sharpness: the paper's column
    mine_same = _tidy({("vae", s): v for s, v in enumerate(REF)})
    frame = compare_sides(table1_side(mine_same, {}), table1_side(ref, {}), has_paper=False)
    assert frame.set_index("row").loc["VAE", "mark"] == "identical" and math.isnan(frame["paper"].iloc[0])


def test_feature_metrics_name_another_extractor():
    ref = _tidy({("vae", s): v for s, v in enumerate(REF)}, "fd_lenet", "extractor 35b2b3c11b1f, 10 vs 10 test")
    mine = _tidy({("vae", s): v for s, v in enumerate(REF)}, "fd_lenet", "extractor 8a3eb5886f64, 10 vs 10 test")
    row = compare_sides(table1_side(mine, {}), table1_side(ref, {}), has_paper=True).iloc[0]
    assert row["mark"] == "identical" and "yours 8a3eb5886f64, reference 35b2b3c11b1f" in row["note"]


def test_compare_page_of_two_results_directories(tmp_path):
    ref = make_synthetic(tmp_path / "ref")
    mine = tmp_path / "mine"
    shutil.copytree(ref, mine)
    table = pd.read_csv(mine / "metrics.csv")
    table.loc[(table["model"] == "wae") & (table["metric"] == "recon_mse"), "value"] += 1.0  # far outside
    table.to_csv(mine / "metrics.csv", index=False)
    for run in (mine / "runs").iterdir():  # the run dirs' rows must agree with the table
        rows = table[table["run_id"] == run.name]
        if len(rows):
            rows.to_csv(run / "metrics.csv", index=False)
    text, frame = build_comparison(mine, ref)
    marks = frame.set_index(["row", "metric"])["mark"]
    assert marks[("WAE", "recon_mse")] == "outside"
    assert marks[("VAE", "recon_mse")] == "identical" and marks[("PIE", "sharpness")] == "identical"
    assert "| PIE | sharpness |" in text and "0.49" in text  # the paper's column
    assert "commit(s) abc1234" in text and "within" in text
    text, frame = build_comparison(mine, tmp_path / "nothing")  # no committed reference
    assert set(frame["mark"]) == {"no reference"} and "none committed" in text
    assert report.main(["--results", str(mine), "--compare-with", str(mine)]) == 2  # itself: refused


def test_local_and_reference_directories():
    assert str(local_dir("default")) == "results/local/default"
    assert str(local_dir("long", "fashion-mnist")) == "results/local/fashion-mnist/long"
    assert str(reference_dir("default")) == "results" and str(reference_dir("long")) == "results/long"
    assert str(reference_dir("default", "fashion-mnist")) == "results/fashion-mnist"


def test_the_long_preset_names_its_protocol_file_and_run_all_reads_it(capsys):
    """run_all.sh reads three lines from bench.results: local dir, reference dir, protocol file
    (empty when the preset has none, or on another dataset, which the protocol does not plan)."""
    assert protocol_file("configs/long.yaml") == Path("configs/long_protocol.yaml")
    assert protocol_file("configs/default.yaml") is None and protocol_file("configs/smoke.yaml") is None
    assert protocol_file("configs/long.yaml", "fashion-mnist") is None
    assert results_cli(["--config", "configs/long.yaml"]) == 0
    assert capsys.readouterr().out == "results/local/long\nresults/long\nconfigs/long_protocol.yaml\n"
    assert results_cli(["--config", "configs/default.yaml", "--dataset", "fashion-mnist"]) == 0
    assert capsys.readouterr().out == "results/local/fashion-mnist/default\nresults/fashion-mnist\n\n"
    run_all = Path("run_all.sh").read_text()
    assert "read -r LOCAL; read -r REF; read -r PROTOCOL; } < <(\"$PY\" -m bench.results" in run_all
    assert run_all.count('bench.report "${REPORT_ARGS[@]}"') == 2  # both report calls take --protocol


def test_protocol_tag():
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "seed": [0, 1, 2]})
    cfg = {"preset": "default", "train": {"epochs": 1}}
    assert figures.protocol_tag({r: cfg for r in "abc"}, runs) == "preset default, 1 epoch, seeds 0–2"
    assert figures.protocol_tag({"a": {"preset": "long", "train": {"epochs": 40}}}, runs.iloc[:1]) == \
        "preset long, 40 epochs, seed 0"


def test_figure_titles_name_preset_epochs_and_seeds(tmp_path, monkeypatch):
    out = make_synthetic(tmp_path / "r")
    for cfg_path in (out / "runs").glob("*/config.json"):
        cfg = json.loads(cfg_path.read_text())
        cfg_path.write_text(json.dumps({**cfg, "train": {"epochs": 12}}))
    titles = {}
    save = plots._save

    def record(fig, path, *args, **kwargs):
        done = save(fig, path, *args, **kwargs)  # sets the figure's title
        texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
        titles[path.name] = " ".join(texts)
        return done

    monkeypatch.setattr(plots, "_save", record)
    monkeypatch.setattr(plots, "umap_embedding", lambda z, y, n, seed: (z[:n, :2], y[:n]))  # no UMAP: fast
    assert report.main(["--results", str(out)]) == 0
    for name in ("table1_sharpness.png", SAMPLES_PNG, "training_curves.png", "convergence.png"):
        assert "preset synthetic, 12 epochs, seeds 0–2" in titles[name], name
    assert "preset synthetic, 12 epochs, seeds 0, 1" in titles["fig7_overview.png"]
    assert "preset synthetic, 12 epochs, seed 0" in titles["fig7_eps2-0.1_b_samples_t1.png"]


def test_runner_writes_its_own_folder_resumes_there_and_ignores_committed_runs(tmp_path, monkeypatch, capsys):
    """No --out: results/local/<preset>. A committed finished run of the same id in results/ is
    not a reason to skip; the second call finds its own finished run."""
    from bench.config import load_config
    from bench.run import main
    from tests.helpers import SMOKE

    monkeypatch.chdir(tmp_path)
    run_id = RunRecord.of(load_config(SMOKE), "vae", 0).run_id
    committed = tmp_path / "results" / "runs" / run_id
    committed.mkdir(parents=True)
    (committed / "done.json").write_text('{"finished": true}')
    args = ["--config", SMOKE, "--models", "vae", "--seeds", "1", "--no-progress"]
    assert main(args) == 0
    assert "1 run(s) planned: 1 to start, 0 already finished (in results/local/smoke)" in capsys.readouterr().out
    assert (tmp_path / "results" / "local" / "smoke" / "runs" / run_id / "done.json").is_file()
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["local", "runs"]  # nothing else written
    assert main(args) == 0
    assert "1 run(s) planned: 0 to start, 1 already finished (in results/local/smoke)" in capsys.readouterr().out
