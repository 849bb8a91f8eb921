"""train.until_converged: train ``epochs``, then on until the convergence rule holds or ``max_epochs``;
resumable; continues from a shorter run only where that run is a prefix of this one."""

import dataclasses
import json

import pandas as pd
import pytest
import torch

from bench import convergence
from bench.config import load_config
from bench.errors import UserError
from bench.record import RunRecord
from bench.registry import build_model
from bench.tracking import column
from bench.train import STOPPED_CAP, STOPPED_CONVERGED, STOPPED_EPOCHS, load_checkpoint, train_model
from tests.helpers import SMOKE
from tests.test_train import _tiny_data

CFG = load_config(SMOKE)
TIMING = ["seconds", "epoch_seconds"]


class Curves:
    """A stand-in tracker: learning curves that are flat from epoch ``flat_from`` on (the window test
    then holds once the fifth before the last one is flat too, and the rule 4 epochs later: its
    patience) and halve every epoch before it."""

    def __init__(self, flat_from: int, fail_at: int | None = None):
        self.flat_from, self.fail_at = flat_from, fail_at

    def __call__(self, model, epoch: int) -> dict[str, float]:
        if epoch == self.fail_at:
            raise KeyboardInterrupt  # a kill after epoch fail_at - 1's checkpoint
        value = 0.5 ** min(epoch, self.flat_from)
        return {column(m): value for m in convergence.RULE_METRICS}


def _config(model: str, **train) -> dict:
    cfg = dataclasses.replace(CFG.train, batch_size=50, **train)
    d = {"model": model, "seed": 0, **CFG.run_dict(model)}
    d["train"] = dataclasses.asdict(cfg)
    return d


def _train(run_dir, curves, **train):
    """Train a smoke VAE on 100 random images in ``run_dir`` (its config.json written as the runner does)."""
    config = _config("vae", **train)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    messages = []
    cfg = dataclasses.replace(CFG.train, batch_size=50, **train)
    result = train_model(build_model("vae", CFG), _tiny_data(), cfg, seed=0, run_dir=run_dir,
                         record=RunRecord.from_dict(config),
                         log=messages.append, on_epoch_end=curves)
    return result, messages


def _weights(run_dir):
    return load_checkpoint(run_dir, log=lambda _m: None)["model"]


def _same(a, b):
    assert a.history.drop(columns=TIMING).equals(b.history.drop(columns=TIMING))


def test_first_converged_epoch_of_flat_curves():
    log = pd.DataFrame([{"epoch": e, **Curves(4)(None, e)} for e in range(1, 20)])
    # flat from epoch 4: from epoch 10 on the two last fifths (7-8 and 9-10 at epoch 10) are equal, so
    # the window test holds at epochs 10-14 and the rule (5 in a row) at 14; before, too few to judge
    assert convergence.PATIENCE == 5
    assert convergence.first_converged_epoch(log) == 14
    assert convergence.first_converged_epoch(log[log["epoch"] < 14]) is None


def test_until_converged_stops_at_the_first_epoch_the_rule_holds(tmp_path, one_thread):
    result, _ = _train(tmp_path / "a", Curves(4), epochs=3, until_converged=True, max_epochs=30)
    assert result.stopped_by == STOPPED_CONVERGED
    assert result.epochs_trained == 14 and result.history["epoch"].tolist() == list(range(1, 15))
    # the lr schedule is the epochs' own: unchanged by the length setting
    fixed, _ = _train(tmp_path / "b", Curves(4), epochs=14)
    assert fixed.stopped_by == STOPPED_EPOCHS
    _same(result, fixed)


def test_until_converged_stops_at_the_cap_and_says_so(tmp_path, one_thread):
    result, _ = _train(tmp_path, Curves(100), epochs=2, until_converged=True, max_epochs=5)
    assert result.stopped_by == STOPPED_CAP and result.epochs_trained == 5


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path, one_thread):
    # in folders of their own: a finished run of the same configuration beside it would be continued from
    whole_dir, killed_dir = tmp_path / "a" / "whole", tmp_path / "b" / "killed"
    whole, _ = _train(whole_dir, Curves(4), epochs=3, until_converged=True, max_epochs=30)
    with pytest.raises(KeyboardInterrupt):
        _train(killed_dir, Curves(4, fail_at=7), epochs=3, until_converged=True, max_epochs=30)
    resumed, messages = _train(killed_dir, Curves(4), epochs=3, until_converged=True, max_epochs=30)
    assert any("resuming killed from epoch 6" in m for m in messages)
    assert resumed.stopped_by == STOPPED_CONVERGED and resumed.resumed_from_epoch == 6
    _same(whole, resumed)
    a, b = _weights(whole_dir), _weights(killed_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # started again once finished, it trains nothing more: the rule is judged before each further epoch
    again, _ = _train(killed_dir, Curves(4), epochs=3, until_converged=True, max_epochs=30)
    assert again.stopped_by == STOPPED_CONVERGED and again.epochs_trained == 14
    assert len(again.history) == 14 and again.resumed_from_epoch == 14


def test_continues_from_a_finished_fixed_length_run_of_the_same_configuration(tmp_path, one_thread):
    scratch, _ = _train(tmp_path / "scratch" / "u", Curves(4), epochs=6, until_converged=True, max_epochs=30)
    _train(tmp_path / "out" / "fixed6", Curves(4), epochs=6)
    extended, messages = _train(tmp_path / "out" / "u", Curves(4), epochs=6, until_converged=True, max_epochs=30)
    assert any("continuing from fixed6" in m and "at epoch 6" in m for m in messages)
    assert extended.resumed_from_epoch == 6 and extended.epochs_trained == 14
    _same(scratch, extended)


def test_does_not_continue_past_an_epoch_where_it_would_have_stopped(tmp_path, one_thread):
    # A fixed 16-epoch run met the rule at epoch 14: a run until converged stops there, so it must not
    # start from that run's epoch 16 (nor from anything longer than its cap).
    _train(tmp_path / "fixed16", Curves(4), epochs=16)
    result, messages = _train(tmp_path / "u", Curves(4), epochs=3, until_converged=True, max_epochs=30)
    assert any("not continuing from fixed16: the convergence rule held at epoch 14" in m for m in messages)
    assert result.resumed_from_epoch == 0 and result.epochs_trained == 14


def test_a_run_stopped_by_the_window_test_alone_resumes_and_ends_where_the_rule_holds(tmp_path, one_thread,
                                                                                        monkeypatch):
    # Before the patience, a run stopped at the first epoch the window test held (PIE seed 3 of Table 1
    # at epoch 29, its FD still falling). Reopened (its done.json removed), such a run resumes from its
    # own checkpoint and ends where a run trained under the rule from the start ends.
    import bench.train as T

    with monkeypatch.context() as m:
        m.setattr(T, "converged", lambda h: convergence.judge(pd.DataFrame(h), patience=1).converged)
        old, _ = _train(tmp_path / "a" / "u", Curves(4), epochs=3, until_converged=True, max_epochs=30)
    assert old.stopped_by == STOPPED_CONVERGED and old.epochs_trained == 10
    reopened, messages = _train(tmp_path / "a" / "u", Curves(4), epochs=3, until_converged=True, max_epochs=30)
    assert any("resuming u from epoch 10" in m for m in messages)
    assert reopened.stopped_by == STOPPED_CONVERGED and reopened.epochs_trained == 14
    whole, _ = _train(tmp_path / "b" / "u", Curves(4), epochs=3, until_converged=True, max_epochs=30)
    _same(whole, reopened)


def test_until_converged_settings_are_checked():
    with pytest.raises(UserError, match="max_epochs.*must be >= train.epochs"):
        load_config(SMOKE, ["train.until_converged=true", "train.max_epochs=0", "eval.track_every=1"])
    with pytest.raises(UserError, match="eval.track_every >= 1"):
        load_config(SMOKE, ["train.until_converged=true", "train.max_epochs=5"])
    with pytest.raises(UserError, match="cap of train.until_converged"):
        load_config(SMOKE, ["train.max_epochs=5"])
    cfg = load_config(SMOKE, ["train.until_converged=true", "train.max_epochs=5", "eval.track_every=1"])
    assert cfg.train.max_epochs == 5
    # the defaults leave every run id where it was (bench.identity; tests/test_identity.py checks the committed ones)
    same = load_config(SMOKE, ["train.until_converged=false", "train.max_epochs=0"])
    assert RunRecord.of(load_config(SMOKE), "vae", 0).run_id == RunRecord.of(same, "vae", 0).run_id
