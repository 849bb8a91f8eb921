"""VAE and WAE-MMD: hand-checked losses, the MMD estimator, the IWAE bound, the Bernoulli option.
The contract's checks and a smoke training run of the registered VAE and WAE: test_model_contract.py."""

import math

import pytest
import torch
from torch.distributions import Normal

from baselines.vae import VAE, VAEConfig
from baselines.wae import WAE, WAEConfig, imq_mmd
from tests.contract_helpers import check_contract, model_inputs

SCALES = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]


def slow_mmd(z, p, scales, unbiased=True):
    n, d = z.shape
    total = 0.0
    for s in scales:
        c = 2 * d * s
        k = lambda a, b, c=c: c / (c + float(((a - b) ** 2).sum()))  # noqa: E731
        zz = sum(k(z[i], z[j]) for i in range(n) for j in range(n) if i != j or not unbiased)
        pp = sum(k(p[i], p[j]) for i in range(n) for j in range(n) if i != j or not unbiased)
        zp = sum(k(z[i], p[j]) for i in range(n) for j in range(n))
        denom = n * (n - 1) if unbiased else n * n
        total += zz / denom + pp / denom - 2 * zp / (n * n)
    return total


def test_mmd_matches_slow_double_loop():
    g = torch.Generator().manual_seed(0)
    z, p = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    assert float(imq_mmd(z, p, SCALES)) == pytest.approx(slow_mmd(z, p, SCALES), abs=1e-12)


def test_mmd_of_a_sample_with_itself_is_the_biased_zero_minus_the_diagonal():
    # The biased estimator of a sample against itself is exactly 0; the unbiased one differs
    # only in leaving out the diagonal k(z_i, z_i) = 1 of the within-sample terms, which gives
    # MMD²_u(z, z) = (2 / n) · Σ_s (mean off-diagonal k_s − 1): a known, negative value.
    # n = 40 > 25 also takes torch.cdist's matrix-product path, whose diagonal is not exactly 0.
    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 4, generator=g, dtype=torch.float64)
    n, d = z.shape
    expected = 0.0
    for s in SCALES:
        c = 2 * d * s
        off = [c / (c + float(((z[i] - z[j]) ** 2).sum())) for i in range(n) for j in range(n) if i != j]
        expected += 2 / n * (sum(off) / len(off) - 1)
    assert slow_mmd(z[:8], z[:8], SCALES, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    assert float(imq_mmd(z, z, SCALES)) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert expected < -0.01  # far from 0: the check above would notice a biased estimator


def test_mmd_separates_shifted_distributions():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(200, 8, generator=g)
    same = imq_mmd(z, torch.randn(200, 8, generator=g), SCALES)
    shifted = imq_mmd(z + 1.0, torch.randn(200, 8, generator=g), SCALES)
    # Same-distribution noise is ~0.02 at n = 200 (7 kernel scales); a unit shift gives ~1.
    assert abs(float(same)) < 0.1 < 0.5 < float(shifted)


class FixedPosterior(torch.nn.Module):
    """Stands in for the VAE's encoder: outputs the given [mu, logvar] for every image."""

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor):
        super().__init__()
        self.out = torch.cat([mu, logvar], dim=1)

    def forward(self, x):
        return self.out[: len(x)]


def _vae_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The ``kl`` part of the VAE's own loss for a posterior N(mu, exp(logvar))."""
    model = VAE(VAEConfig(width=0.0625, latent_dim=mu.shape[1])).double()
    model.encoder = FixedPosterior(mu, logvar)
    torch.manual_seed(0)
    return model.loss(torch.rand(len(mu), 1, 28, 28, dtype=torch.float64))["kl"]


def test_vae_kl_of_standard_normal_is_zero():
    assert float(_vae_kl(torch.zeros(3, 8, dtype=torch.float64), torch.zeros(3, 8, dtype=torch.float64))) == 0.0


def test_vae_kl_matches_the_closed_form_and_torch_distributions():
    # KL(N(mu, sigma²) || N(0, 1)) = 0.5 (mu² + sigma² − 1 − ln sigma²) per dimension, summed over
    # dimensions, averaged over images. Here sigma² = 4 everywhere and mu = (1, 2), (−1, 0).
    mu = torch.tensor([[1.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
    logvar = torch.full_like(mu, math.log(4.0))
    closed = (0.5 * (1 + 4 - 1 - math.log(4)) + 0.5 * (4 + 4 - 1 - math.log(4))
              + 0.5 * (1 + 4 - 1 - math.log(4)) + 0.5 * (0 + 4 - 1 - math.log(4))) / 2
    reference = torch.distributions.kl_divergence(Normal(mu, logvar.mul(0.5).exp()), Normal(0.0, 1.0)).sum(1).mean()
    kl = float(_vae_kl(mu, logvar))
    assert kl == pytest.approx(closed, rel=1e-12)
    assert kl == pytest.approx(float(reference), rel=1e-12)


def test_bernoulli_vae_keeps_the_contract_without_a_density_and_learns(mnist, one_thread):
    """The registry builds the Gaussian VAE (checked with every model in test_model_contract.py);
    the Bernoulli decoder is an option with its own loss and no density on [0, 1]."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(width=0.0625, likelihood="bernoulli"))
    assert not model.has_density
    check_contract(model, mnist.test_images[:16])
    x = model_inputs(model, mnist.test_images[:16])
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(1)
    first = float(model.loss(x)["loss"].detach())
    for _ in range(30):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    torch.manual_seed(1)
    assert float(model.loss(x)["loss"].detach()) < first


def test_vae_log_prob_is_a_bound_that_tightens():
    torch.manual_seed(0)
    model = VAE(VAEConfig(width=0.0625, iw_samples=1)).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.manual_seed(2)
        elbo_like = model.log_prob(x).mean()
        model.cfg.iw_samples = 64
        torch.manual_seed(2)
        iwae = model.log_prob(x).mean()
    assert torch.isfinite(iwae) and iwae >= elbo_like


@pytest.mark.parametrize("scale", ["shared", "per_pixel"])
def test_vae_decoder_density_is_a_gaussian_with_the_configured_scale(scale, mnist, one_thread):
    """log p(x|z) summed over pixels is N(x; sigmoid(logits), sigma²) with one learned sigma
    (shared) or one per pixel (per_pixel, the shell density of AEF); both keep the contract."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(width=0.0625, decoder_scale=scale)).double()
    assert model.log_scale.shape == ((1, 1, 28, 28) if scale == "per_pixel" else ())
    with torch.no_grad():
        model.log_scale.add_(0.3 * torch.randn(model.log_scale.shape, dtype=torch.float64))
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    logits = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    std = model.log_scale.exp().expand(1, 1, 28, 28)
    reference = Normal(torch.sigmoid(logits), std).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model._log_px_given_z(x, logits), reference, atol=1e-10, rtol=0)
    check_contract(VAE(VAEConfig(width=0.0625, decoder_scale=scale, iw_samples=2)), mnist.test_images[:16])


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(VAEConfig(latent_dim=0))
    with pytest.raises(ValueError, match="width"):
        WAE(WAEConfig(width=0))
