"""models.md (bench.report.models): the newest model against PIE and the VAE, on synthetic runs.

The Welch intervals are checked against scipy's own Welch test; a difference between sides scored
by different feature extractors is refused; every number of the generated paragraph comes from the
runs (none is typed)."""

import re

import numpy as np
from scipy import stats as sps

from bench.report.headline import report_inputs
from bench.report.models import compare, models_markdown
from bench.report.selection import load_table
from bench.report.verdicts import Runs
from tests.test_verdicts import _real, _write

AEF_BPD = [2.20, 2.25, 2.31, 2.22, 2.28]
PIE_BPD = [3.1, 3.6, 3.3, 3.9, 3.4]
VAE_BPD = [7.20, 7.25, 7.22, 7.24, 7.21]


def _runs(tmp_path, extractor_vae="aaaaaaaaaaaa", converged=True):
    for seed in range(5):
        _write(tmp_path, "aef", seed, 8, {"bits_per_dim": AEF_BPD[seed], "recall": 0.4 + 0.01 * seed},
               converged=converged)
        _write(tmp_path, "pie", seed, 8, {"bits_per_dim": PIE_BPD[seed], "recall": 0.01 * seed})
        _write(tmp_path, "vae", seed, 8, {"bits_per_dim": VAE_BPD[seed], "recall": 0.1 + 0.01 * seed})
    _real(tmp_path)
    table = load_table(tmp_path)
    notes = {"aef": "aaaaaaaaaaaa", "pie": "aaaaaaaaaaaa", "vae": extractor_vae}
    is_recall = table["metric"] == "recall"
    table.loc[is_recall, "note"] = [f"extractor {notes[m]}, 10 generated vs 10 test"
                                    for m in table.loc[is_recall, "model"]]
    configs, sel, logs = report_inputs(tmp_path, table, "mnist")
    return Runs(table, sel, configs, logs)


def _diff(diffs, other, metric):
    return next(d for d in diffs if d.other == other and d.metric == metric)


def test_welch_interval_matches_scipy(tmp_path):
    r = _runs(tmp_path)
    d = _diff(compare(r), "pie", "bits_per_dim")
    ci = sps.ttest_ind(AEF_BPD, PIE_BPD, equal_var=False).confidence_interval(0.95)
    assert np.isclose(d.interval.effect, np.mean(AEF_BPD) - np.mean(PIE_BPD))
    assert np.isclose(d.interval.low, ci.low) and np.isclose(d.interval.high, ci.high)
    assert d.reading.startswith("better")  # lower bits/dim is better
    assert _diff(compare(r), "vae", "recall").reading.startswith("better")  # higher recall is better


def test_different_extractors_are_not_compared(tmp_path):
    r = _runs(tmp_path, extractor_vae="bbbbbbbbbbbb")
    diffs = compare(r)
    vae = _diff(diffs, "vae", "recall")
    assert vae.interval is None and "aaaaaaaaaaaa vs bbbbbbbbbbbb" in vae.why
    assert _diff(diffs, "pie", "recall").interval is not None  # same extractor: compared
    assert "recall vs VAE" in models_markdown(r, "MNIST")


def test_paragraph_numbers_come_from_the_runs(tmp_path):
    r = _runs(tmp_path, converged=False)
    text = models_markdown(r, "MNIST")
    paragraph = text.split("\n\n")[2]
    for d in compare(r):
        if d.interval is not None:
            assert f"{d.metric} {d.focus_values.mean():.4g} vs {d.other_values.mean():.4g}" in paragraph
    assert "not all shown to have converged" in paragraph and "AEF: 5 run(s), 16 epochs, 0 of 5 converged" in paragraph
    numbers = set(re.findall(r"\d+\.\d+", paragraph))
    table_text = text.split("\n\n", 3)[3]
    assert numbers <= set(re.findall(r"\d+\.\d+", table_text))  # every decimal is also in the table below


def test_runs_without_learning_curves_read_not_tracked_not_unconverged(tmp_path):
    """A run without train_log.csv cannot be judged: "convergence not tracked", never "0 of 5 converged"."""
    _runs(tmp_path)
    for log in tmp_path.glob("runs/aef-*/train_log.csv"):
        log.unlink()
    r = _runs_again(tmp_path)
    paragraph = models_markdown(r, "MNIST").split("\n\n")[2]
    assert "AEF: 5 run(s), 16 epochs, convergence not tracked" in paragraph
    assert "PIE: 5 run(s), 16 epochs, 5 of 5 converged" in paragraph
    assert "Runs of AEF are not all shown to have converged" in paragraph


def _runs_again(tmp_path):
    table = load_table(tmp_path)
    configs, sel, logs = report_inputs(tmp_path, table, "mnist")
    return Runs(table, sel, configs, logs)


def test_no_focus_runs_says_so(tmp_path):
    _write(tmp_path, "pie", 0, 8, {"bits_per_dim": 3.0})
    _real(tmp_path)
    table = load_table(tmp_path)
    configs, sel, logs = report_inputs(tmp_path, table, "mnist")
    assert "No finished AEF run" in models_markdown(Runs(table, sel, configs, logs), "MNIST")


def test_fewer_seeds_than_the_verdict_rule_judge_nothing(tmp_path):
    for seed in range(2):
        _write(tmp_path, "aef", seed, 8, {"bits_per_dim": AEF_BPD[seed]})
        _write(tmp_path, "pie", seed, 8, {"bits_per_dim": PIE_BPD[seed]})
    _real(tmp_path)
    table = load_table(tmp_path)
    configs, sel, logs = report_inputs(tmp_path, table, "mnist")
    d = _diff(compare(Runs(table, sel, configs, logs), against=("pie",)), "pie", "bits_per_dim")
    assert d.interval.n == 2 and d.reading == "too few seeds (n = 2 < 3)"
