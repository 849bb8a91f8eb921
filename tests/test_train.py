"""The training loop's decisions and its checkpoints: bf16 autocast (CPU and CUDA), safe loading, RNG state."""

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import bench.train
from bench.config import load_config
from bench.data import ImageData
from bench.errors import UserError
from bench.record import RunRecord
from bench.registry import build_model
from bench.train import CHECKPOINT, load_checkpoint, train_model, use_bf16_autocast
from tests.helpers import ROOT, SMOKE

CFG = load_config(SMOKE)


def _tiny_data(n: int = 100) -> ImageData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    empty = images[:0]
    return ImageData(images, labels, empty, labels[:0], images[:20], labels[:20], checksum="tiny")


def _train(model, run_dir, bf16=False, epochs=1, on_epoch_end=None, hook=None):
    cfg = dataclasses.replace(CFG.train, epochs=epochs, batch_size=50, bf16=bf16)
    run_dir.mkdir(parents=True, exist_ok=True)
    # torch_version: a str subclass, as the runner records it
    record = RunRecord.of(CFG, "vae", 0, torch_version=torch.__version__)
    return train_model(model, _tiny_data(), cfg, seed=0, run_dir=run_dir, record=record, log=lambda _m: None,
                       on_epoch_end=on_epoch_end, hook=hook)


def test_hook_sees_every_event_in_order_and_changes_nothing(tmp_path, one_thread):
    """``hook`` is called at HOOK_EVENTS (2 steps per epoch here) and leaves the run bit-identical."""
    events = []
    torch.manual_seed(0)
    hooked = _train(build_model("vae", CFG), tmp_path / "hooked", epochs=2, hook=events.append)
    torch.manual_seed(0)
    plain = _train(build_model("vae", CFG), tmp_path / "plain", epochs=2)
    per_epoch = ["epoch_start", "step_end", "step_end", *bench.train.HOOK_EVENTS[2:]]
    assert events == per_epoch * 2
    assert set(events) == set(bench.train.HOOK_EVENTS)
    timing = ["seconds", "epoch_seconds"]
    assert hooked.history.drop(columns=timing).equals(plain.history.drop(columns=timing))
    weights = [load_checkpoint(tmp_path / d, log=lambda _m: None)["model"] for d in ("hooked", "plain")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


@pytest.mark.parametrize("name", ["pie", "vae", "wae"])
def test_bf16_autocast_only_when_asked_and_allowed_on_any_device(name):
    model = build_model(name, CFG)
    for bf16 in (False, True):
        train = dataclasses.replace(CFG.train, bf16=bf16)
        assert use_bf16_autocast(train, model) == (bf16 and name != "pie")  # no device argument: any device


def test_training_loop_autocasts_exactly_as_decided(tmp_path, monkeypatch, one_thread):
    """The loop's autocast context follows use_bf16_autocast on the batches' device (here the CPU)."""
    calls = []

    def recording_autocast(device_type, dtype=None, enabled=True, **_):
        calls.append((device_type, dtype, enabled))
        return contextlib.nullcontext()

    monkeypatch.setattr(torch, "autocast", recording_autocast)
    for name, bf16, enabled in [("vae", True, True), ("vae", False, False), ("pie", True, False)]:
        calls.clear()
        torch.manual_seed(0)
        _train(build_model(name, CFG), tmp_path / f"{name}-{bf16}", bf16=bf16)
        assert calls and all(c == ("cpu", torch.bfloat16, enabled) for c in calls), (name, bf16, calls[:1])


def test_bf16_training_runs_in_bf16_on_cpu(tmp_path, one_thread):
    """With train.bf16 a VAE's convolutions really run in bf16 on the CPU (and the loss stays finite)."""
    seen = set()

    def record(module, inputs, output):
        if module.training:  # the validation pass after the epoch stays fp32
            seen.add(output.dtype)

    model = build_model("vae", CFG)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    handles = [m.register_forward_hook(record) for m in convs]
    torch.manual_seed(0)
    result = _train(model, tmp_path, bf16=True)
    for h in handles:
        h.remove()
    assert seen == {torch.bfloat16}
    assert np.isfinite(result.history["train_loss"]).all()


def test_checkpoint_loads_weights_only_and_restores_every_rng(tmp_path, one_thread):
    torch.manual_seed(0)
    np.random.seed(0)
    # Tracked values as NumPy scalars (what metric code may return) go into the history.
    _train(build_model("wae", CFG), tmp_path,
           on_epoch_end=lambda model, epoch: {"tracked_a": np.float64(0.5), "tracked_b": np.float32(2.0)})
    after_training = np.random.get_state()
    ckpt = torch.load(tmp_path / CHECKPOINT, map_location="cpu", weights_only=True)  # plain data only
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert ckpt["history"][0]["tracked_b"] == 2.0 and type(ckpt["history"][0]["tracked_b"]) is float
    np.random.seed(123)
    bench.train._set_rng_state(ckpt["rng"], torch.Generator())
    restored = np.random.get_state()
    assert restored[0] == after_training[0] and np.array_equal(restored[1], after_training[1])
    assert restored[2:] == after_training[2:]


class _Touch:
    """Unpickling this object would create ``marker``: stands in for any code a crafted file could run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _crafted_checkpoint(path: pathlib.Path, marker: pathlib.Path) -> None:
    torch.save({"model": {}, "epoch": 1, "rng": _Touch(marker)}, path)


def test_crafted_checkpoint_is_refused_with_one_line_and_never_executed(tmp_path):
    from bench.run import parse_args, plan_runs

    out = tmp_path / "res"
    args = ["--config", SMOKE, "--models", "vae", "--seeds", "1", "--out", str(out), "--no-progress"]
    (spec,) = plan_runs(parse_args(args))
    run_dir = out / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    _crafted_checkpoint(run_dir / CHECKPOINT, marker)

    # The file is live: an unrestricted load runs its code (on a copy, with another marker).
    live = tmp_path / "live.pt"
    _crafted_checkpoint(live, tmp_path / "live-marker")
    torch.load(live, weights_only=False)
    assert (tmp_path / "live-marker").exists()

    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint(run_dir)
    assert not marker.exists()

    env = {**os.environ, "PIE_BENCH_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "refusing to load" in proc.stderr and CHECKPOINT in proc.stderr
    assert not marker.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == [CHECKPOINT]  # nothing trained, nothing written


def test_validation_loss_is_the_mean_loss_over_batches_of_the_training_size(one_thread):
    # The WAE's MMD is a batch statistic: its value depends on how the validation images are batched.
    torch.manual_seed(0)
    model = build_model("wae", CFG)
    tiny = _tiny_data()
    data = dataclasses.replace(tiny, val_images=tiny.train_images[:20], val_labels=tiny.train_labels[:20])
    cfg = dataclasses.replace(CFG.train, batch_size=5)
    got = bench.train.validation_loss(model, data, cfg, torch.float32, seed=3)
    gen = torch.Generator().manual_seed(3 + 7919)
    torch.manual_seed(3 + 7919)
    model.eval()  # as validation_loss does (batch norm on running statistics)
    with torch.inference_mode():
        losses = [float(model.loss(bench.train.preprocess(data.val_images[i:i + 5], model.preprocessing, gen,
                                                          torch.float32))["loss"]) for i in range(0, 20, 5)]
    assert got == pytest.approx(float(np.mean(losses)), rel=1e-6)
    whole = dataclasses.replace(cfg, batch_size=20)
    assert bench.train.validation_loss(model, data, whole, torch.float32, seed=3) != pytest.approx(got, rel=1e-6)
