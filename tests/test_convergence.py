"""The convergence rule on synthetic learning curves (bench.convergence)."""

import math

import numpy as np
import pandas as pd
import pytest

from bench import convergence as C
from bench.tracking import column


def _log(curves: dict[str, np.ndarray]) -> pd.DataFrame:
    n = len(next(iter(curves.values())))
    frame = pd.DataFrame({"epoch": np.arange(1, n + 1), "train_loss": 1.0})
    for metric, values in curves.items():
        frame[column(metric)] = values
    return frame


def _curves(n, sharp, fd=None, mse=None):
    flat = np.full(n, 1.0)
    return _log({"sharpness": sharp, "fd_lenet": flat * 500 if fd is None else fd,
                 "recon_mse": flat * 0.02 if mse is None else mse})


def test_flat_curves_converge():
    v = C.judge(_curves(20, np.full(20, 0.1)))
    assert v.status == C.CONVERGED and v.n_epochs == 20
    assert v.changes == {"sharpness": 0.0, "fd_lenet": 0.0, "recon_mse": 0.0}


def test_saturating_curve_converges_and_a_rising_one_does_not():
    epochs = np.arange(1, 21)
    saturating = 0.1 * (1 - np.exp(-epochs / 2.0))  # within 5 % over the last two fifths
    assert C.judge(_curves(20, saturating)).status == C.CONVERGED
    rising = 0.01 * epochs  # last fifth (17-20) vs the fifth before (13-16): +28 %
    v = C.judge(_curves(20, rising))
    assert v.status == C.NOT_CONVERGED
    assert v.changes["sharpness"] == pytest.approx((18.5 - 14.5) / 14.5)


def test_one_moving_metric_is_enough_to_fail():
    n = 15
    fd = np.linspace(1000, 300, n)  # falling FD: negative change beyond 5 %
    v = C.judge(_curves(n, np.full(n, 0.1), fd=fd))
    assert v.status == C.NOT_CONVERGED and v.changes["fd_lenet"] < -C.TOLERANCE
    assert abs(v.changes["sharpness"]) <= C.TOLERANCE


def test_tolerance_edge_both_sides():
    # the window test alone (patience 1): 10 epochs, fifths of 2
    before, k = 1.0, 2
    for last, expected in ((1.049, C.CONVERGED), (1.051, C.NOT_CONVERGED), (0.951, C.CONVERGED),
                           (0.949, C.NOT_CONVERGED)):
        sharp = np.r_[np.full(10 - 2 * k, 5.0), np.full(k, before), np.full(k, last)]
        assert C.judge(_curves(10, sharp), patience=1).status == expected, last


def _noisy_fall(n: int) -> np.ndarray:
    """A curve falling 3 % per epoch (more than 5 % per window at every length) whose last value is
    noise high enough that the last window is within 4 % of the one before: the window test holds
    at the last epoch alone, as PIE seed 3's FD did at epoch 29."""
    fd = 1000 * 0.97 ** np.arange(n, dtype=np.float64)
    k = n // 5
    fd[-1] = 0.96 * fd[-2 * k:-k].sum() - fd[-k:-1].sum()
    return fd


def test_a_single_window_test_that_holds_is_not_convergence():
    n = 30
    fd = _noisy_fall(n)
    log = _curves(n, np.full(n, 0.1), fd=fd)
    one = C.judge(log, patience=1)
    assert one.status == C.CONVERGED  # the rule without patience (before it): stopped by the noise
    v = C.judge(log)
    assert v.status == C.NOT_CONVERGED and v.streak < C.PATIENCE
    assert abs(v.changes["fd_lenet"]) <= C.TOLERANCE  # the last window test itself held
    assert C.first_converged_epoch(log) is None


def test_patience_epochs_in_a_row_converge_and_the_first_such_epoch_is_reported():
    n = 30
    sharp = np.r_[0.1 * 0.8 ** np.arange(16), np.full(n - 16, 0.1 * 0.8 ** 16)]  # flat from epoch 17
    log = _curves(n, sharp)
    held = [e for e in range(10, n + 1) if C.judge(log.iloc[:e], patience=1).converged]
    run = next(e for e in held if all(x in held for x in range(e, e + C.PATIENCE)))
    assert C.first_converged_epoch(log) == run + C.PATIENCE - 1
    assert C.judge(log.iloc[:run + C.PATIENCE - 1]).converged
    assert not C.judge(log.iloc[:run + C.PATIENCE - 2]).converged
    assert C.judge(log).streak == C.PATIENCE and C.PATIENCE == 5


def test_too_short_not_tracked_and_nan():
    short = C.MIN_EPOCHS + C.PATIENCE - 1  # 14: the window test at the last 5 epochs, each with >= 10
    assert C.judge(_curves(short - 1, np.full(short - 1, 0.1))).status == C.TOO_SHORT
    assert C.judge(_curves(short, np.full(short, 0.1))).status == C.CONVERGED
    assert C.judge(_curves(9, np.full(9, 0.1)), patience=1).status == C.TOO_SHORT
    assert C.judge(_curves(10, np.full(10, 0.1)), patience=1).status == C.CONVERGED
    assert C.judge(pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5]})).status == C.NOT_TRACKED
    # track_every > 1: untracked epochs are NaN rows and do not count
    sparse = _curves(28, np.full(28, 0.1))
    sparse.loc[sparse["epoch"] % 2 == 1, [column(m) for m in C.RULE_METRICS]] = np.nan
    assert C.judge(sparse).status == C.CONVERGED and C.judge(sparse).n_epochs == 14
    diverged = np.full(16, 0.1)
    diverged[-1] = np.nan
    v = C.judge(_curves(16, diverged))
    assert v.status == C.NOT_CONVERGED and math.isnan(v.changes["sharpness"]) and v.streak == 0


def test_relative_change_windows_and_zero():
    assert C.relative_change([1, 1, 1, 1, 2, 2, 2, 2, 4, 4]) == pytest.approx(1.0)  # fifths of 2: [2, 2] -> [4, 4]
    assert C.relative_change([0.0] * 10) == 0.0
    assert C.relative_change([0.0] * 8 + [1.0, 1.0]) == math.inf


def test_summary_counts_seeds():
    conv, notc, short = C.Verdict(C.CONVERGED, 20), C.Verdict(C.NOT_CONVERGED, 20), C.Verdict(C.TOO_SHORT, 3)
    assert C.summary([conv, conv, notc]) == "2 of 3 seeds"
    assert C.summary([conv, short]) == "1 of 2 seeds (1 not judged)"
    assert C.summary([short, short]) == "too short"
    assert C.summary([]) == "n/a"


def test_unmet_names_each_moving_metric_with_its_range():
    conv = C.Verdict(C.CONVERGED, 20, {"fd_lenet": -0.04})
    a = C.Verdict(C.NOT_CONVERGED, 20, {"sharpness": 0.01, "fd_lenet": -0.14, "recon_mse": 0.0})
    b = C.Verdict(C.NOT_CONVERGED, 20, {"sharpness": 0.06, "fd_lenet": -0.08, "recon_mse": 0.0})
    assert C.unmet([conv, a, b]) == "sharpness +6% to +6% (1 run); fd_lenet -14% to -8% (2 runs)"
    assert C.unmet([conv]) == ""
