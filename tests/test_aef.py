"""AEF (models/aef.py): the center mask, the core/shell bijection and its log-det, the exact
likelihood against a slow reference, and sampling as the inverse of encoding. The contract
checks and a smoke training come from tests/test_model_contract.py (AEF is registered)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from flow_helpers import DTYPE, autograd_logdet, perturb
from torch.distributions import Normal

from models.aef import AEF, AEFConfig, center_mask_indices

SWITCHES = [
    dict(),
    dict(decoder_scale="shared", encoder_scale="exp", input_norm="none"),
]
SWITCH_IDS = ["defaults", "shared_exp_nonorm"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny nets, one image at a time: one intra-op thread (see conftest.one_thread)."""


def tiny_aef(latent_dim: int = 4, **overrides: object) -> AEF:
    """A float64 AEF with the smoke width and every parameter moved off its initial value (a
    zero bias or a uniform decoder scale would let a wrong index or sign pass)."""
    torch.manual_seed(0)
    model = AEF(AEFConfig(latent_dim=latent_dim, width=0.0625, **overrides))  # type: ignore[arg-type]
    return perturb(model.to(DTYPE), scale=0.05).eval()


def pixels(n: int, seed: int = 1) -> torch.Tensor:
    """Dequantised 8-bit images (k + u) / 256 in float64, ``[n, 1, 28, 28]``."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, 1, 28, 28), generator=gen).to(DTYPE)
    return (k + torch.rand(k.shape, generator=gen, dtype=DTYPE)) / 256


def flow_inputs(n: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def core_pixels(d: int) -> list[tuple[int, int]]:
    """The center mask written independently: the d (row, col) nearest (13.5, 13.5), ties raster."""
    cells = [(r, c) for r in range(28) for c in range(28)]
    return sorted(cells, key=lambda rc: ((rc[0] - 13.5) ** 2 + (rc[1] - 13.5) ** 2, rc))[:d]


@pytest.mark.parametrize("d", [1, 4, 8, 16, 32])
def test_center_mask_takes_the_pixels_nearest_the_centre(d):
    idx = center_mask_indices(d, 28, 28)
    assert idx.shape == (d,) and torch.equal(idx, idx.unique())
    assert sorted(divmod(int(i), 28) for i in idx) == sorted(core_pixels(d))
    if d == 4:  # the 2x2 block around the centre of a 28x28 image
        assert sorted(divmod(int(i), 28) for i in idx) == [(13, 13), (13, 14), (14, 13), (14, 14)]
    for bad in (0, 784):
        with pytest.raises(ValueError, match="core"):
            center_mask_indices(bad, 28, 28)


@pytest.mark.parametrize("overrides", SWITCHES, ids=SWITCH_IDS)
def test_core_shell_map_round_trips(overrides):
    model = tiny_aef(**overrides)
    y = flow_inputs(3)
    with torch.no_grad():
        z, eps, _ = model.embed(y)
        assert z.shape == (3, 4) and eps.shape == (3, 780)
        torch.testing.assert_close(model.unembed(z, eps), y, atol=1e-10, rtol=0)
        x = pixels(3)
        torch.testing.assert_close(model.from_flow_space(model.to_flow_space(x)[0]), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("overrides", SWITCHES, ids=SWITCH_IDS)
def test_logdet_matches_the_autograd_jacobian(overrides):
    model = tiny_aef(**overrides)
    y = flow_inputs(1)
    core_shell = model.embed(y)[2]
    torch.testing.assert_close(core_shell, autograd_logdet(lambda v: torch.cat(model.embed(v)[:2], 1), y)[None],
                               atol=1e-9, rtol=0)
    x = pixels(1)
    transform = model.to_flow_space(x)[1]
    torch.testing.assert_close(transform, autograd_logdet(lambda v: model.to_flow_space(v)[0], x)[None],
                               atol=1e-9, rtol=0)


def _slow_log_prob(model: AEF, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of the AEF paper's partitioned model, built by hand from the model's nets and
    parameters: the map x -> (z, eps) from an independently built mask, its log-det from the autograd Jacobian,
    the densities from torch.distributions."""
    cfg, d = model.cfg, model.latent_dim
    core = core_pixels(d)
    shell = [(r, c) for r in range(28) for c in range(28) if (r, c) not in core]
    core_r, core_c = (torch.tensor(t) for t in zip(*core, strict=True))
    shell_r, shell_c = (torch.tensor(t) for t in zip(*shell, strict=True))
    log_sd = model.dec_log_scale.expand(1, 1, 28, 28)[0, 0]

    def f(v: torch.Tensor) -> torch.Tensor:
        p = cfg.logit_alpha + (1 - 2 * cfg.logit_alpha) * v
        y = torch.log(p) - torch.log(1 - p)
        if cfg.input_norm == "actnorm":
            y = (y + model.norm.bias) * torch.exp(model.norm.log_scale)
        img = y[0, 0]
        keep = torch.ones(28, 28, dtype=v.dtype)
        keep[core_r, core_c] = 0.0
        mu_e, a = model.encoder((img * keep)[None, None]).split(d, dim=1)
        sigma_e = (F.softplus(a) if cfg.encoder_scale == "softplus" else torch.exp(a)) + cfg.min_scale
        z = mu_e + sigma_e * img[core_r, core_c][None]
        mu_d = model.decoder(z)[0, 0]
        eps = (img[shell_r, shell_c] - mu_d[shell_r, shell_c]) / torch.exp(log_sd[shell_r, shell_c])
        return torch.cat([z, eps[None]], 1)

    out = []
    for v in x.split(1):
        out.append(Normal(0.0, 1.0).log_prob(f(v)).sum() + autograd_logdet(f, v))
    return torch.stack(out)


@pytest.mark.parametrize("overrides", SWITCHES, ids=SWITCH_IDS)
def test_log_prob_matches_a_slow_reference(overrides):
    model = tiny_aef(**overrides)
    x = pixels(2)
    log_prob = model.log_prob(x)
    assert log_prob.shape == (2,) and log_prob.dtype == DTYPE
    torch.testing.assert_close(log_prob, _slow_log_prob(model, x), atol=1e-8, rtol=0)
    # The loss is -log p per dimension, and its parts add up to it.
    parts = model.loss(x)
    torch.testing.assert_close(parts["loss"], -log_prob.mean() / 784, atol=1e-12, rtol=0)
    torch.testing.assert_close(parts["log_pz"] + parts["log_pshell"] + parts["logdet"], -parts["loss"],
                               atol=1e-12, rtol=0)


def test_sampling_inverts_encoding():
    model = tiny_aef(latent_dim=8)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    with torch.no_grad():
        x = model.decode_unclipped(z)
        torch.testing.assert_close(model.encode(x), z, atol=1e-8, rtol=0)
        # decode: the shell at the decoder's mean (eps = 0), clipped to [0, 1].
        y = model.unembed(z)
        _, eps, _ = model.embed(y)
        assert eps.abs().max() < 1e-8
        torch.testing.assert_close(model.decode(z), x.clamp(0, 1), atol=0, rtol=0)
        # sample(n, T) decodes T * z, z ~ N(0, I) from the generator.
        samples = model.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(9))
        z_prior = torch.randn(5, 8, generator=torch.Generator().manual_seed(9), dtype=DTYPE)
        torch.testing.assert_close(samples, model.decode(0.7 * z_prior), atol=1e-12, rtol=0)


def test_actnorm_starts_from_the_first_training_batch(mnist):
    torch.manual_seed(0)
    model = AEF(AEFConfig(latent_dim=8, width=0.0625))
    x = (mnist.train_images[:64].float() + torch.rand(64, 1, 28, 28)) / 256
    model.eval()
    assert torch.equal(model.to_flow_space(x)[0], model.logit(x)[0])  # identity until trained
    model.train()
    model.loss(x)
    y, _ = model.to_flow_space(x)
    assert abs(float(y.detach().mean())) < 1e-5 and abs(float(y.detach().std()) - 1) < 1e-4
    assert bool(model.norm.initialized) and "norm.initialized" in model.state_dict()
    before = model.norm.log_scale.detach().clone()
    model.loss(x[:8] * 0.5)  # a later batch does not re-initialise it
    assert torch.equal(model.norm.log_scale.detach(), before)


@pytest.mark.parametrize("overrides, message", [
    (dict(latent_dim=0), "latent_dim"),
    (dict(latent_dim=784), "latent_dim"),
    (dict(min_scale=0.0), "min_scale"),
    (dict(logit_alpha=0.5), "logit_alpha"),
    (dict(width=0.0), "width"),
    (dict(decoder_scale="both"), "decoder_scale"),
])
def test_bad_config_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        AEF(AEFConfig(**overrides))  # type: ignore[arg-type]

