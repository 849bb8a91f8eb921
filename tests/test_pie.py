"""PIE model tests: right inverse, paper sizes, Eq. 17 against an independent computation,
config refusal. The contract's checks and a smoke training run: test_model_contract.py."""

from __future__ import annotations

import math

import pytest
import torch
from flow_helpers import DTYPE, autograd_logdet, perturb, tiny_pie_config
from torch.distributions import Normal

from models.contract import GenerativeEncoder
from models.flows import AffineCoupling, CheckerboardDownsample, HouseholderConv1x1
from models.flows import HouseholderLinear as HLinear
from models.pie import PIE, PIEConfig


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest.one_thread)."""


SMALL_WIDTHS = dict(
    coupling_conv_hidden=16, coupling_linear_hidden=32, g_conv_hidden=8, g_linear_hidden=32
)


def _images(n: int, shape: tuple[int, ...], seed: int, dtype=torch.float32) -> torch.Tensor:
    """Synthetic dequantised 8-bit images: a bright random bar on a dark background."""
    gen = torch.Generator().manual_seed(seed)
    _, h, w = shape
    k = torch.zeros(n, *shape)
    for i in range(n):
        row, col = torch.randint(0, h - 4, (2,), generator=gen).tolist()
        if i % 2:
            k[i, :, row : row + 4, :] = 255
        else:
            k[i, :, :, col : col + 4] = 255
    k = (k - torch.randint(0, 40, k.shape, generator=gen)).clamp(min=0)
    return ((k + torch.rand(k.shape, generator=gen)) / 256).to(dtype)


def test_paper_config_level_sizes_and_structure():
    model = PIE(PIEConfig(latent_dim=10))
    assert isinstance(model, GenerativeEncoder)
    assert model.has_density and model.preprocessing == "dequantize"
    assert model.level_sizes() == [784, 392, 196, 64, 10]
    assert PIE(PIEConfig()).level_sizes() == [784, 392, 196, 64, 8]  # Table 1 uses latent 8
    # 2 conv blocks, linear blocks to 64 and 10, one more without reduction; K = 3 couplings
    # each followed by a Householder map of 3 reflections.
    assert len(model.blocks) == 5
    assert [b.split is None for b in model.blocks] == [False, False, False, False, True]
    for i, block in enumerate(model.blocks):
        layers = list(block.flow.layers)
        if i < 2:
            assert isinstance(layers.pop(0), CheckerboardDownsample)
        assert len(layers) == 6
        assert all(isinstance(layer, AffineCoupling) for layer in layers[::2])
        mixing = HouseholderConv1x1 if i < 2 else HLinear
        assert all(isinstance(layer, mixing) for layer in layers[1::2])
        assert all(layer.vectors.shape[0] == 3 for layer in layers[1::2])


@pytest.mark.parametrize("transform", ["logit", "center"])
def test_encode_inverts_decode_in_float64(transform):
    # The paper's architecture (784 -> 392 -> 196 -> 64 -> 10) at CPU-test widths: float64
    # convolutions take a slow path on CPU.
    cfg = PIEConfig(latent_dim=10, input_transform=transform, **SMALL_WIDTHS)
    torch.manual_seed(0)
    model = PIE(cfg).to(DTYPE)
    perturb(model, scale=0.05)  # leave the zero-initialised identity, keep values moderate
    z = torch.randn(4, 10, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    x = model.decode_unclipped(z)
    assert x.shape == (4, 1, 28, 28) and x.dtype == DTYPE
    assert x.std() > 1e-2  # a non-trivial image, not a constant
    torch.testing.assert_close(model.encode(x), z, atol=1e-8, rtol=0)
    # Any filling of the residuals would pass the line above; decode fills r_l = g_l(z_l), so
    # each level's residual term is at its maximum, -n_l / 2 · log(2π eps²).
    parts = model.loss(x)
    sizes = model.level_sizes()
    for level, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        peak = -0.5 * (n_in - n_out) * math.log(2 * math.pi * cfg.eps2) / 784
        torch.testing.assert_close(
            parts[f"log_pr_l{level}"], torch.tensor(peak, dtype=DTYPE), atol=1e-10, rtol=0
        )
    clipped = model.decode(z)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert torch.equal(clipped, x.clamp(0, 1))


def _independent_log_prob(model: PIE, x: torch.Tensor) -> torch.Tensor:
    """Eq. 17 from the same layers: compose F(x) = [r_1, ..., r_L, z] by hand, take its
    log-det from the autograd Jacobian and the densities from torch.distributions."""

    def parts(v: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        h, _ = model.input_transform(v)
        zs, rs = [], []
        for block in model.blocks:
            h, _ = block.flow(h.reshape(len(v), *block.in_shape))
            if block.split is not None:
                zs.append(h[:, : block.split.keep])
                rs.append(h[:, block.split.keep :])
                h = zs[-1]
        return zs, [*rs, h]

    out = []
    for v in x.split(1):
        zs, pieces = parts(v)
        z, rs = pieces[-1], pieces[:-1]
        log_p = Normal(0.0, 1.0).log_prob(z).sum()
        for block, z_l, r_l in zip([b for b in model.blocks if b.split], zs, rs, strict=True):
            mean = block.split.g(z_l) if block.split.g is not None else torch.zeros_like(r_l)
            log_p = log_p + Normal(mean, math.sqrt(block.split.eps2)).log_prob(r_l).sum()
        flat = lambda u: torch.cat([p.reshape(1, -1) for p in parts(u)[1]], 1)  # noqa: E731
        out.append(log_p + autograd_logdet(flat, v))
    return torch.stack(out)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(eps2=1.0, learned_g=False),  # Sec. 3.4: a multi-scale RealNVP, an exact density
        dict(eps2=0.1, learned_g=True),
        dict(eps2=1.0, learned_g=False, input_transform="center"),
        dict(eps2=0.1, coupling="additive", n_reflections=0),  # the ablation switches
    ],
    ids=["realnvp", "learned_g", "center", "additive_full_householder"],
)
def test_log_prob_matches_independent_computation(overrides):
    torch.manual_seed(0)
    model = perturb(PIE(tiny_pie_config(**overrides)).to(DTYPE), scale=0.1)
    x = _images(3, (1, 8, 8), seed=2, dtype=DTYPE)
    log_prob = model.log_prob(x)
    assert log_prob.shape == (3,)
    torch.testing.assert_close(log_prob, _independent_log_prob(model, x), atol=1e-8, rtol=0)
    # loss is -Eq. 17 per dimension, and its parts add up.
    parts = model.loss(x)
    levels = [parts[f"log_pr_l{i}"] for i in (1, 2, 3)]
    assert "log_pr_l4" not in parts
    torch.testing.assert_close(parts["loss"], -log_prob.mean() / 64, atol=1e-12, rtol=0)
    torch.testing.assert_close(parts["log_pr"], sum(levels), atol=1e-12, rtol=0)
    total = parts["log_pz"] + parts["log_pr"] + parts["logdet"]
    torch.testing.assert_close(parts["loss"], -total, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(eps2=0.0), "eps2"),
        (dict(eps2=-0.1), "eps2"),
        (dict(latent_dim=64), "latent_dim"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(linear_sizes=[196]), "linear_sizes"),
        (dict(conv_keep=[0.3, 0.5]), "whole number"),
        (dict(conv_keep=[0.5, 0.5, 0.5]), "downsample"),
        (dict(latent_dim=1), "coupling"),
        (dict(scale_clamp=0.0), "scale_clamp"),
        (dict(n_reflections=-1), "n_reflections"),
        (dict(coupling="volume"), "coupling"),
    ],
)
def test_config_that_does_not_fit_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        PIE(PIEConfig(**overrides))


def test_ablation_switches_build_what_they_say():
    additive = PIE(PIEConfig(coupling="additive", n_reflections=0, **SMALL_WIDTHS))
    widths = []
    for block in additive.blocks:
        for layer in block.flow.layers:
            if isinstance(layer, AffineCoupling):
                assert layer.additive
            elif isinstance(layer, HouseholderConv1x1 | HLinear):
                assert layer.vectors.shape[0] == layer.features  # "full": one per dimension
                widths.append(layer.features)
    assert sorted(set(widths)) == [4, 8, 64, 196]  # conv maps of 4 and 8 channels, linear maps
    x = _images(4, (1, 28, 28), seed=3)
    torch.manual_seed(0)
    perturb(additive, scale=0.05)
    _, _, logdet = additive._forward(x, with_density=True)
    transform_only = additive.input_transform(x)[1]
    torch.testing.assert_close(logdet, transform_only, atol=0, rtol=0)  # flow adds exactly 0


def test_diagnostics_agree_with_the_loss_parts():
    torch.manual_seed(0)
    model = perturb(PIE(tiny_pie_config(eps2=0.3)).to(DTYPE), scale=0.1)
    x = _images(5, (1, 8, 8), seed=4, dtype=DTYPE)
    diag = model.diagnostics(x)
    parts = model.loss(x)
    sizes = model.level_sizes()
    assert sorted(diag) == ["flow_logdet_per_dim", "recon_mse_rg", "resid_ratio_l1", "resid_ratio_l2",
                            "resid_ratio_l3"]
    for level, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        d = n_in - n_out
        # log_pr_l = (-||r - g||² / (2 eps²) - d/2 log(2π eps²)) / 64, averaged over the batch.
        mean_sq = -2 * 0.3 * (parts[f"log_pr_l{level}"].item() * 64 + 0.5 * d * math.log(2 * math.pi * 0.3))
        assert diag[f"resid_ratio_l{level}"] == pytest.approx(mean_sq / (d * 0.3), rel=1e-9)
    transform = model.input_transform(x)[1].mean().item() / 64
    assert diag["flow_logdet_per_dim"] == pytest.approx(parts["logdet"].item() - transform, rel=1e-9)
    assert abs(diag["flow_logdet_per_dim"]) > 1e-3  # perturbed couplings do change volume
    assert diag["recon_mse_rg"] == pytest.approx((model.reconstruct(x) - x).pow(2).mean().item(), rel=1e-12)

