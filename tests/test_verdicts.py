"""Verdicts computed by the report (bench.report.stats, bench.report.verdicts) and the README's
headline block (bench.report.headline): the rule on synthetic tables, one per outcome; the
intervals against slow references; the committed README block against the committed results."""

import contextlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench import report
from bench.protocol import progress, read_protocol
from bench.report import stats
from bench.report.headline import END, START, headline_from_results, protocol_line, readme_block, report_inputs
from bench.report.table import mechanism_markdown
from bench.report.verdicts import CLAIM_ROW, CONFIDENCE, SILHOUETTE, build_verdicts, verdicts_markdown
from bench.sync import replace_run_rows
from bench.tracking import TRACKED, column
from tests.helpers import ROOT

EPOCHS = 16  # enough for the convergence rule: 10 tracked epochs, then 5 in a row


def _write(out: Path, model: str, seed, latent, values: dict, converged=True, sweep=None, epochs_trained=None,
           settings=None, train=None, tag=""):
    """One finished run as the runner leaves it: config.json, train_log.csv (flat learning curves
    when ``converged``, a falling FD otherwise) and its tidy rows. ``settings``/``train``: more keys
    of its model's / train section (``tag`` tells its run id apart)."""
    sweep = sweep or {}
    tag = tag + "".join(f"-{v}" for v in sweep.values())
    run_id = f"{model}-h{latent}{tag}-s{seed}" if model != "real" else "real-0badc0de-00000000"
    d = out / "runs" / run_id
    d.mkdir(parents=True)
    if model != "real":
        cfg = {"model": model, "seed": seed, "preset": "synthetic", "run_id": run_id, "sweep": sweep,
               "train": {"epochs": EPOCHS, **(train or {})},
               model: {"latent_dim": latent, "eps2": sweep.get("pie.eps2", 0.1), **(settings or {})}}
        (d / "config.json").write_text(json.dumps(cfg))
        epochs = np.arange(1, EPOCHS + 1)
        log = pd.DataFrame({"epoch": epochs, "train_loss": 1.0})
        for metric in TRACKED:
            log[column(metric)] = 1.0 if converged or metric != "fd_lenet" else 100.0 / epochs
        log.to_csv(d / "train_log.csv", index=False)
    rows = [{"split": "test", "metric": m, "value": v, "note": ""} for m, v in values.items()]
    if epochs_trained is not None:
        rows.append({"split": "train", "metric": "epochs_trained", "value": epochs_trained, "note": ""})
    frame = pd.DataFrame([{"run_id": run_id, "dataset": "mnist", "model": model,
                           "seed": pd.NA if model == "real" else seed, "status": "ok",
                           "latent_dim": pd.NA if model == "real" else latent, "preset": "synthetic",
                           "config_hash": f"h{latent}{tag}", "git_commit": "abc1234",
                           "started_at": "2026-01-01T00:00:00+00:00", "elapsed_s": 1.0, **sweep, **r} for r in rows])
    replace_run_rows(out / "metrics.csv", frame)
    return run_id


def _real(out: Path) -> None:
    _write(out, "real", None, None, {"sharpness": 0.1825, "recon_mse_mean_image": 0.0675})


def _verdicts(out: Path):
    table = report.load_table(out)
    configs, sel, logs = report_inputs(out, table, "mnist")
    return build_verdicts(table, sel, configs, logs)


def _table1(out: Path, pie: list[float], vae: list[float], wae: list[float], pie_converged=True) -> None:
    _real(out)
    for model, values in (("pie", pie), ("vae", vae), ("wae", wae)):
        for seed, v in enumerate(values):
            _write(out, model, seed, 8, {"sharpness": v}, converged=pie_converged or model != "pie")


BASE = {"vae": [0.080, 0.081, 0.079], "wae": [0.070, 0.071, 0.069]}
C1_CASES = {  # PIE's sharpness per seed, whether its runs converged -> C1's verdict and a word of its reason
    "reproduced": ([0.300, 0.302, 0.298], True, stats.REPRODUCED, "above 0"),
    "opposite": ([0.030, 0.031, 0.029], True, stats.OPPOSITE, "below 0"),
    "not reproduced": ([0.070, 0.085, 0.078], True, stats.NOT_REPRODUCED, "excludes the paper-sized"),
    "underpowered by n": ([0.300, 0.302], True, stats.UNDERPOWERED, "n = 2 < 3"),
    "underpowered by convergence": ([0.300, 0.302, 0.298], False, stats.UNDERPOWERED, "3 of 6 runs not converged"),
    "underpowered by a wide interval": ([-0.6, 0.08, 0.9], True, stats.UNDERPOWERED, "spans 0 and the paper-sized"),
}


@pytest.mark.parametrize("case", list(C1_CASES))
def test_each_outcome_of_the_rule_on_a_synthetic_table(tmp_path, case):
    """Table 1 runs built so that C1 (PIE − VAE and PIE − WAE in sharpness, Welch) lands on each outcome."""
    pie, converged, expected, why = C1_CASES[case]
    _table1(tmp_path, pie, BASE["vae"], BASE["wae"], converged)
    v = _verdicts(tmp_path)
    c1 = [c for c in v.comparisons if c.claim == "C1"]
    assert [c.comparison for c in c1] == ["PIE − VAE", "PIE − WAE"]
    assert {c.outcome for c in c1} == {expected} and all(why in c.reason for c in c1)
    assert v.claim("C1") == expected
    assert c1[0].iv.method == "Welch t" and c1[0].iv.n == min(len(pie), 3)
    assert c1[0].iv.effect == pytest.approx(np.mean(pie) - np.mean(BASE["vae"]))
    if case == "underpowered by convergence":
        assert c1[0].n_converged == 3 and c1[0].n_runs == 6 and "the interval alone: reproduced" in c1[0].reason
    frame = v.frame()
    assert frame.loc[(frame["claim"] == "C1") & (frame["comparison"] == CLAIM_ROW), "outcome"].item() == expected


def test_c2_is_pie_against_the_real_digits_as_one_measurement(tmp_path):
    _table1(tmp_path, [0.14, 0.145, 0.15], BASE["vae"], BASE["wae"])
    (c2,) = [c for c in _verdicts(tmp_path).comparisons if c.claim == "C2"]
    assert c2.iv.method == "one-sample t" and c2.iv.effect == pytest.approx(0.145 - 0.1825)
    assert c2.outcome == stats.OPPOSITE and c2.paper_effect == pytest.approx(0.49 - 0.18)


def _fig7(out: Path, recon: dict[float, list[float]], extra: dict | None = None) -> None:
    for eps2, values in recon.items():
        for seed, v in enumerate(values):
            _write(out, "pie", seed, 10, {"recon_mse": v, "probe_accuracy": 0.5, **(extra or {})},
                   sweep={"pie.eps2": eps2})


def test_eps2_levels_pair_by_seed(tmp_path):
    """C3: seeds differ a lot from each other, eps² = 1 reconstructs worse than 0.01 by 0.01 in each
    seed. Paired by seed that is reproduced; a Welch interval over the same numbers would span
    0 and the paper-sized effect (underpowered)."""
    _real(tmp_path)
    base = [0.02, 0.06, 0.10]
    worse = [b + 0.01 + 1e-4 * s for s, b in enumerate(base)]
    _fig7(tmp_path, {0.01: base, 0.1: [b + 0.005 for b in base], 1.0: worse})
    v = _verdicts(tmp_path)
    c3 = next(c for c in v.comparisons if c.claim == "C3" and c.primary)
    assert c3.comparison == "PIE: eps² 1.0 − eps² 0.01" and c3.iv.method == "paired t" and c3.iv.n == 3
    assert c3.iv.effect == pytest.approx(0.0101) and c3.outcome == stats.REPRODUCED
    assert c3.paper_effect == pytest.approx(0.1 * 0.0675)
    welch = stats.welch_interval([b + 0.01 for b in base], base)
    assert stats.by_interval(welch.low, welch.high, c3.paper_effect)[0] == stats.UNDERPOWERED
    assert v.claim("C3") == stats.REPRODUCED


def test_a_metric_without_rows_is_not_measured_and_judged_underpowered(tmp_path):
    """C5's silhouette and C4's sample confidence are not in the table: underpowered, said so; once
    their rows are there, they are judged."""
    _real(tmp_path)
    _fig7(tmp_path, {0.01: [0.05] * 3, 1.0: [0.06] * 3})
    v = _verdicts(tmp_path)
    sil = next(c for c in v.comparisons if c.claim == "C5" and c.metric == SILHOUETTE and c.primary)
    assert sil.iv is None and sil.outcome == stats.UNDERPOWERED and sil.reason == stats.NOT_MEASURED
    assert v.claim("C5") == stats.NOT_REPRODUCED  # the probe, measured and without a difference, fails it anyway

    out = tmp_path / "measured"
    _real(out)
    for seed in range(3):
        _write(out, "pie", seed, 8, {"sharpness": 0.14, CONFIDENCE: 0.80 + 0.01 * seed,
                                     CONFIDENCE + "_t05": 0.85 + 0.01 * seed + 1e-3 * seed ** 2})
    conf = next(c for c in _verdicts(out).comparisons if c.claim == "C4" and c.metric == CONFIDENCE and c.primary)
    assert conf.iv.method == "paired t" and conf.iv.n == 3 and conf.iv.effect == pytest.approx(0.05 + 5e-3 / 3)
    assert conf.outcome == stats.REPRODUCED


def test_claims_without_runs_say_so(tmp_path):
    _table1(tmp_path, [0.30, 0.31, 0.29], BASE["vae"], BASE["wae"])
    c3 = next(c for c in _verdicts(tmp_path).comparisons if c.claim == "C3" and c.primary)
    assert c3.iv.n == 0 and c3.outcome == stats.UNDERPOWERED and c3.reason == "no runs"


# ----------------------------------------------------------------------------- the rule and the intervals


@pytest.mark.parametrize("low, high, n, converged, expected", [
    (0.1, 0.2, 5, 5, stats.REPRODUCED),
    (-0.2, -0.1, 5, 5, stats.OPPOSITE),
    (-0.05, 0.05, 5, 5, stats.NOT_REPRODUCED),
    (-0.05, 0.5, 5, 5, stats.UNDERPOWERED),  # spans 0 and the paper-sized 0.3
    (0.1, 0.2, 2, 2, stats.UNDERPOWERED),
    (0.1, 0.2, 5, 4, stats.UNDERPOWERED),
    (0.0, 0.2, 5, 5, stats.NOT_REPRODUCED),  # touching 0 is spanning it
    (-0.2, 0.0, 5, 5, stats.NOT_REPRODUCED),
])
def test_the_rule(low, high, n, converged, expected):
    iv = stats.Interval((low + high) / 2, low, high, n, "paired t")
    assert stats.judge(iv, 0.3, n, converged)[0] == expected
    assert stats.judge(None, 0.3, n, converged) == (stats.UNDERPOWERED, stats.NOT_MEASURED)


def test_a_claim_needs_every_primary_comparison():
    rep, no, opp, under = stats.REPRODUCED, stats.NOT_REPRODUCED, stats.OPPOSITE, stats.UNDERPOWERED
    cases = ([rep, rep], [opp, opp], [rep, opp], [rep, no], [under, no], [rep, under], [])
    assert [stats.combine(x) for x in cases] == [rep, opp, no, no, no, under, under]


def test_paired_interval_against_a_hand_computed_t_interval():
    """Slow reference: plain Python sums and the t quantile t(0.975, 4) = 2.776445105 of a printed table."""
    a = [0.9414, 0.9411, 0.9417, 0.9408, 0.9181]
    b = [0.9418, 0.9307, 0.9298, 0.9332, 0.9272]
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    half = 2.776445105 * sd / math.sqrt(5)
    iv = stats.paired_interval(a, b)
    assert iv.n == 5 and iv.effect == pytest.approx(mean, abs=1e-15)
    assert iv.low == pytest.approx(mean - half, abs=1e-9) and iv.high == pytest.approx(mean + half, abs=1e-9)
    assert np.isnan(stats.paired_interval([1.0], [0.5]).low)  # one pair: no interval


def test_welch_and_one_sample_intervals_against_scipy():
    a, b = [0.30, 0.35, 0.28, 0.31], [0.08, 0.07, 0.09, 0.085, 0.075]
    iv = stats.welch_interval(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    one = stats.one_sample_interval(a, 0.1825)
    ref = sps.ttest_1samp(a, 0.1825).confidence_interval(0.95)
    assert (one.low, one.high) == pytest.approx((ref.low - 0.1825, ref.high - 0.1825), abs=1e-12)


# ----------------------------------------------------------------------------- pages


def test_report_writes_verdicts_and_the_mechanism_page_has_epochs(tmp_path):
    _table1(tmp_path, [0.30, 0.31, 0.29], BASE["vae"], BASE["wae"])
    _write(tmp_path, "pie", 0, 10, {"recon_mse": 0.06, "diag_flow_logdet_per_dim": 1.0}, sweep={"pie.eps2": 0.1},
           epochs_trained=31)
    table = report.load_table(tmp_path)
    configs, sel, logs = report_inputs(tmp_path, table, "mnist")
    page = mechanism_markdown(table, configs, logs)
    header = next(line for line in page.splitlines() if line.startswith("| run |")).split(" | ")
    row = next(line for line in page.splitlines() if "pie-h10-0.1-s0" in line).split(" | ")
    assert row[header.index("epochs")] == "31"  # the epochs_trained row wins over the log's 16
    v = build_verdicts(table, sel, configs, logs)
    md = verdicts_markdown(v)
    assert "## C1: PIE's samples are sharper than the VAE's and the WAE's (Table 1) — reproduced" in md
    assert "No runs yet" in md and md.count("metric not measured in these runs") >= 2
    csv = v.frame()
    assert {"claim", "comparison", "metric", "effect", "ci_low", "ci_high", "n", "n_converged", "outcome",
            "reason"} <= set(csv.columns)
    assert set(csv["outcome"]) <= {*stats.OUTCOMES, "context"}


def test_width_confound_and_schedule_tables_appear_when_their_runs_exist(tmp_path):
    _real(tmp_path)
    for seed in range(3):
        _write(tmp_path, "vae", seed, 8, {"sharpness": 0.05, "fd_lenet": 480.0}, settings={"width": 0.0625})
        _write(tmp_path, "pie", seed, 8, {"sharpness": 0.14, "fd_lenet": 90.0}, train={"lr_milestones": [6, 10]})
    for seed in range(2):
        _write(tmp_path, "vae", seed, 8, {"sharpness": 0.06 + 0.01 * seed, "fd_lenet": 300.0},
               settings={"width": 0.125}, tag="w", converged=False)
        _write(tmp_path, "pie", seed, 8, {"sharpness": 0.15, "fd_lenet": 60.0}, train={"lr_milestones": [45, 75]},
               tag="m", epochs_trained=150)
    v = _verdicts(tmp_path)
    assert [row[:5] for row in v.width] == [["VAE", "1/16", "3", "3 of 3", "16"], ["VAE", "1/8", "2", "0 of 2", "16"],
                                            ["PIE (Table 1)", "—", "3", "3 of 3", "16"]]
    assert v.width[1][5].startswith("0.065 [")  # mean and its t interval over the two seeds
    assert [row[:4] for row in v.schedule] == [["[45, 75]", "2", "2 of 2", "150"], ["[6, 10] (Table 1)", "3", "3 of 3",
                                                                                  "16"]]
    assert "No runs yet" not in verdicts_markdown(v)


def test_readme_markers_are_required(tmp_path, capsys):
    _table1(tmp_path, [0.30, 0.31, 0.29], BASE["vae"], BASE["wae"])
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert report.main(["--results", str(tmp_path), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and START in err


def test_committed_readme_headline_is_what_the_committed_results_give(tmp_path):
    """Rebuilt from a copy of results/long's tables, configs and train logs (no training, no figures)."""
    src, dst = ROOT / "results" / "long", tmp_path / "long"
    dst.mkdir()
    shutil.copy(src / "metrics.csv", dst / "metrics.csv")
    for run in (src / "runs").iterdir():
        (dst / "runs" / run.name).mkdir(parents=True)
        for name in ("config.json", "train_log.csv", "metrics.csv", "done.json"):
            if (run / name).is_file():
                shutil.copy(run / name, dst / "runs" / run.name / name)
    with contextlib.chdir(ROOT):  # as the README's command runs: paths relative to the repository
        protocol = read_protocol("configs/long_protocol.yaml")
        line = protocol_line(protocol, progress(protocol, list(protocol.steps), str(dst)))
    committed = readme_block((ROOT / "README.md").read_text())
    assert committed == headline_from_results(dst, line), (
        f"README.md's block between {START} and {END} differs from what results/long gives: run "
        "python -m bench.report --results results/long --readme README.md --protocol configs/long_protocol.yaml")
