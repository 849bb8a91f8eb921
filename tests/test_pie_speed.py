"""PIE's speed lever (torch.compile of the training loss, train.compile) changes no number: the same
loss and gradients on a fixed batch, and a checkpoint written by the eager loop continues under it."""

import copy
import dataclasses
import shutil

import torch

from bench.config import load_config
from bench.train import train_model
from models.pie import PIE
from tests.flow_helpers import perturb, tiny_pie_config
from tests.helpers import SMOKE

REL = 1e-5  # the tolerance: float rounding of a fused kernel, nothing more


BATCH = 50


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _pie() -> PIE:
    """The tests' 8×8 PIE (a conv block, linear blocks): inductor compiles it in seconds, not minutes."""
    torch.manual_seed(0)
    # Trained-looking weights: zero-initialised couplings are identities and would hide a wrong scale.
    return perturb(PIE(tiny_pie_config()), scale=0.05).to(memory_format=torch.channels_last)


def _small(data):
    """MNIST at 8×8 (every third pixel of the central 24×24), uint8 like the real thing."""
    keys = ("train_images", "val_images", "test_images")
    cut = {k: getattr(data, k)[:, :, 2:26:3, 2:26:3].contiguous() for k in keys}
    return dataclasses.replace(data, **cut)


def test_compiled_loss_and_gradients_match_the_eager_step(mnist, one_thread):
    eager = _pie()
    compiled = PIE(tiny_pie_config()).to(memory_format=torch.channels_last)
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))  # the same parameters, the same keys
    x = (_small(mnist).train_images[:BATCH].float() / 255).contiguous(memory_format=torch.channels_last)

    ref = eager.loss(x)
    ref["loss"].backward()
    out = torch.compile(compiled.loss)(x)
    out["loss"].backward()
    for key in ref:
        assert _rel(out[key].detach(), ref[key].detach()) <= REL, key
    # Per parameter, relative to the largest gradient: the last block's Householder vectors get ~0
    # (log N(z; 0, I) is rotation invariant), and their rounding noise has no relative size.
    scale = max(float(p.grad.abs().max()) for p in eager.parameters())
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=REL, atol=REL * scale, msg=name)


def test_an_eager_checkpoint_continues_under_compile(mnist, one_thread, tmp_path):
    """A run's checkpoint from the eager loop resumes in the compiled loop with the eager loop's numbers."""
    cfg = load_config(SMOKE)
    data = _small(mnist)
    n = 6 * BATCH
    data = dataclasses.replace(data, train_images=data.train_images[:n], train_labels=data.train_labels[:n])
    one = dataclasses.replace(cfg.train, epochs=1, batch_size=BATCH, log_every=1000)
    first = tmp_path / "first"
    first.mkdir()
    train_model(_pie(), data, one, seed=0, run_dir=first, log=lambda *a: None)
    histories = {}
    for name, compile_loss in (("eager", False), ("compiled", True)):
        run_dir = tmp_path / name
        shutil.copytree(first, run_dir)
        two = dataclasses.replace(one, epochs=2, compile=compile_loss)
        logs: list[str] = []
        histories[name] = train_model(PIE(tiny_pie_config()), data, two, seed=0, run_dir=run_dir,
                                      log=logs.append)
        assert any("resuming" in line for line in logs), logs
    eager, compiled = (torch.tensor(histories[k].history["val_loss"].to_numpy()) for k in ("eager", "compiled"))
    assert len(eager) == 2 and (histories["eager"].history["epoch"] == [1, 2]).all()
    assert _rel(compiled, eager) <= REL


def test_perf_remeasures_one_section_and_keeps_the_others(tmp_path):
    """``--sections`` replaces the rows of the sections it runs and keeps every other row of the CSV."""
    import pandas as pd

    from bench import perf

    out = tmp_path / "perf.csv"
    old = pd.DataFrame([dict(section=s, model="-", preset="default", width="-", metric="m", value=1.0, unit="x",
                             batch=None, note="", device="cpu", device_name="old", threads=2, torch_version="0")
                        for s in ("model", "pie_profile", "targets")])
    old.to_csv(out, index=False)
    perf.main(["--quick", "--sections", "pie_profile", "--models", "pie", "--out", str(out)])
    new = pd.read_csv(out)
    kept = new[new["device_name"] == "old"]
    assert sorted(kept["section"]) == ["model", "targets"]  # the old pie_profile row is replaced
    assert (new[new["section"] == "pie_profile"]["device_name"] != "old").all()
    assert new["section"].tolist().index("targets") == len(new) - 1  # sections stay in their order


def test_compile_models_compiles_the_named_models_only():
    import pytest

    from bench.errors import UserError

    cfg = load_config(SMOKE, overrides=["train.compile_models=[pie]"])
    assert cfg.train_for("pie").compile and not cfg.train_for("vae").compile
    assert not load_config(SMOKE).train_for("pie").compile
    with pytest.raises(UserError, match="compile_models"):
        load_config(SMOKE, overrides=["train.compile_models=[nope]"])
