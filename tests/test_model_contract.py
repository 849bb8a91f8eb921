"""Every registered model (``bench.registry.MODELS``) against the model contract (``models/contract.py``).

Each model gets, with no test of its own: the contract's checks on real MNIST images, a smoke
training through the harness's one training loop (``bench.train.train_model``, smoke preset), and
a round trip through that loop's checkpoint giving identical outputs. Adding a model takes one
file, one registry line and one config block; the last tests prove it with a linear autoencoder
registered at runtime and run through ``bench.run``. Model-specific maths (PIE's Eq. 17, the
VAE's KL, the WAE's MMD) stays in ``test_pie.py`` and ``test_baselines.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from torch import nn

from bench import metrics as M
from bench.config import load_config
from bench.record import RunRecord
from bench.registry import MODELS, build_model, register
from bench.run import main, parse_args
from bench.train import CHECKPOINT, load_checkpoint, train_model
from models.contract import GenerativeEncoder
from models.settings import setting
from tests.contract_helpers import check_contract, model_inputs
from tests.helpers import SMOKE
from tests.toy_model import LinearAutoencoder, LinearAutoencoderConfig

NAMES = list(MODELS)  # every registered model, at collection time
CFG = load_config(SMOKE)
N_TRAIN = 200  # training images of the smoke training: 4 steps at the smoke batch size
N_VAL = 100
N_CHECK = 16  # test images of the contract checks


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small models and batches: one intra-op thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def images(mnist) -> torch.Tensor:
    """Real MNIST test digits as uint8 ``[N_CHECK, 1, 28, 28]``."""
    return mnist.test_images[:N_CHECK]


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_model_keeps_the_contract_on_real_images(name, images):
    torch.manual_seed(0)
    check_contract(build_model(name, CFG), images)


def fixed_batch_loss(model: GenerativeEncoder, images: torch.Tensor) -> float:
    """The training loss on fixed images, with the loss's own noise (if any) seeded.

    In train mode, as the loop sees it: in eval mode BatchNorm's running statistics, which a
    forward pass updates without any optimiser step, would lower the loss by themselves. On a
    copy, since a train-mode pass moves those statistics.
    """
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        torch.manual_seed(1)
        return float(model.loss(model_inputs(model, images))["loss"])


@dataclass
class Trained:
    model: GenerativeEncoder
    run_dir: object
    history: pd.DataFrame
    loss_before: float
    loss_after: float


@pytest.fixture(scope="module", params=NAMES)
def trained(request, mnist, tmp_path_factory) -> Trained:
    """One smoke epoch on N_TRAIN real training images through the harness's training loop."""
    name = request.param
    data = dataclasses.replace(mnist, train_images=mnist.train_images[:N_TRAIN],
                               train_labels=mnist.train_labels[:N_TRAIN],
                               val_images=mnist.val_images[:N_VAL], val_labels=mnist.val_labels[:N_VAL])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the function-scoped one_thread fixture does not reach here
    try:
        torch.manual_seed(0)
        model = build_model(name, CFG)
        probe = mnist.test_images[:64]
        before = fixed_batch_loss(model, probe)
        run_dir = tmp_path_factory.mktemp(f"train-{name}")
        result = train_model(model, data, CFG.train, seed=0, run_dir=run_dir, record=RunRecord.of(CFG, name, 0),
                             log=lambda _m: None, extend_shorter=False)
        return Trained(model, run_dir, result.history, before, fixed_batch_loss(model, probe))
    finally:
        torch.set_num_threads(threads)


def test_smoke_training_through_the_harness_loop_lowers_the_loss(trained, images):
    history = trained.history
    assert len(history) == CFG.train.epochs and history["step"].iloc[-1] == N_TRAIN // CFG.train.batch_size
    assert math.isfinite(history["train_loss"].iloc[-1]) and math.isfinite(history["val_loss"].iloc[-1])
    assert trained.loss_after < trained.loss_before, (trained.loss_before, trained.loss_after)
    check_contract(copy.deepcopy(trained.model), images)  # trained weights keep the contract too


def test_checkpoint_round_trip_gives_identical_outputs(trained, images):
    assert (trained.run_dir / CHECKPOINT).is_file()
    ckpt = load_checkpoint(trained.run_dir, log=lambda _m: None)  # weights_only, as a resumed run loads it
    name = ckpt["config"]["model"]
    torch.manual_seed(123)  # other initial weights: only the checkpoint can make the outputs agree
    loaded = build_model(name, CFG)
    loaded.load_state_dict(ckpt["model"])
    original = trained.model
    for model in (original, loaded):  # same layout for both (training leaves channels-last weights)
        model.to(memory_format=torch.contiguous_format).eval()
    x = model_inputs(loaded, images)

    def outputs(model):
        with torch.no_grad():
            z = model.encode(x)
            torch.manual_seed(5)
            out = {"z": z, "decode": model.decode(z), "reconstruct": model.reconstruct(x),
                   "sample": model.sample(4, generator=torch.Generator().manual_seed(2)),
                   "loss": torch.stack(list(model.loss(x).values()))}
            if model.has_density:
                out["log_prob"] = model.log_prob(x)
            out["diagnostics"] = torch.tensor(list(model.diagnostics(x).values()))
            return out

    a, b = outputs(original), outputs(loaded)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- a model added at runtime


@dataclass
class UnrangedConfig:  # a setting added without saying which values make sense
    latent_dim: int = 4


@dataclass
class UnboundedConfig:  # a number declared, but with no bound and no unbounded=True
    latent_dim: int = setting(4)


def test_a_model_registered_at_runtime_runs_through_bench_run(linear_ae, images, tmp_path):
    cfg = load_config(SMOKE)  # a config loaded after registering has the model's section
    assert cfg.models[linear_ae] == LinearAutoencoderConfig()
    check_contract(build_model(linear_ae, cfg), images)
    assert parse_args([]).models.split(",") == [*NAMES, linear_ae]  # the runner's default: every model
    out = tmp_path / "results"
    code = main(["--config", SMOKE, "--models", linear_ae, "--seeds", "1", "--out", str(out), "--no-progress",
                 "--set", f"{linear_ae}.latent_dim=3"])
    assert code == 0
    table = pd.read_csv(out / "metrics.csv")
    rows = table[table["model"] == linear_ae]
    assert set(table["model"]) == {linear_ae, "real"}
    assert rows["run_id"].nunique() == 1 and rows["run_id"].iloc[0].startswith(f"{linear_ae}-")
    assert set(rows["status"]) == {"ok"} and set(rows["latent_dim"]) == {3}
    values = dict(zip(rows["metric"], rows["value"], strict=True))
    assert set(M.MODEL_METRICS) <= set(values)
    assert math.isnan(values[M.BITS_PER_DIM])  # no density declared
    for metric in (M.RECON_MSE, M.SHARPNESS, M.FD_LENET, M.PROBE_ACCURACY, "final_loss", "loss"):
        assert math.isfinite(values[metric]), metric
    run_dir = out / "runs" / rows["run_id"].iloc[0]
    for artefact in ("config.json", "train_log.csv", "metrics.csv", "samples.png", "figures.npz", "done.json"):
        assert (run_dir / artefact).is_file(), artefact


@pytest.mark.parametrize("name, model_cls, config_cls, error", [
    ("vae", LinearAutoencoder, LinearAutoencoderConfig, "taken"),
    ("train", LinearAutoencoder, LinearAutoencoderConfig, "taken"),  # a harness config section
    ("real", LinearAutoencoder, LinearAutoencoderConfig, "taken"),  # the real-image rows' model name
    ("Linear-AE", LinearAutoencoder, LinearAutoencoderConfig, "must match"),
    ("plain", nn.Linear, LinearAutoencoderConfig, "GenerativeEncoder"),
    ("plain", LinearAutoencoder, dict, "dataclass"),
    ("plain", LinearAutoencoder, UnrangedConfig, "latent_dim has no declared range"),
    ("plain", LinearAutoencoder, UnboundedConfig, "latent_dim is a number without bounds"),
])
def test_register_refuses_what_the_harness_could_not_run(name, model_cls, config_cls, error):
    before = dict(MODELS)
    with pytest.raises((ValueError, TypeError), match=error):
        register(name, model_cls, config_cls)
    assert MODELS == before


def test_a_density_without_an_estimator_is_refused_at_build(linear_ae):
    class Undocumented(LinearAutoencoder):
        has_density = True

        def log_prob(self, x):
            return -self.loss(x)["loss"].expand(len(x))

    MODELS[linear_ae] = dataclasses.replace(MODELS[linear_ae], model_cls=Undocumented)
    with pytest.raises(TypeError, match="log_prob_estimator"):
        build_model(linear_ae, load_config(SMOKE))


def test_reserved_names_cover_every_harness_section():
    from bench.config import SECTION_TYPES
    from bench.registry import RESERVED_NAMES

    assert set(SECTION_TYPES) <= RESERVED_NAMES
