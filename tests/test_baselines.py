"""VAE and WAE-MMD: hand-checked losses, the MMD estimator, shapes, and learning."""

import pytest
import torch

from baselines.vae import VAE, VAEConfig
from baselines.wae import WAE, WAEConfig, imq_mmd

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


def test_biased_mmd_of_sample_with_itself_is_zero():
    z = torch.randn(6, 4, dtype=torch.float64)
    assert slow_mmd(z, z, SCALES, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    # The unbiased estimator on the same sample differs from 0 only by the diagonal terms.
    assert abs(float(imq_mmd(z, z, SCALES))) < 2 * len(SCALES) / 6


def test_mmd_separates_shifted_distributions():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(200, 8, generator=g)
    same = imq_mmd(z, torch.randn(200, 8, generator=g), SCALES)
    shifted = imq_mmd(z + 1.0, torch.randn(200, 8, generator=g), SCALES)
    # Same-distribution noise is ~0.02 at n = 200 (7 kernel scales); a unit shift gives ~1.
    assert abs(float(same)) < 0.1 < 0.5 < float(shifted)


def test_vae_kl_of_standard_normal_is_zero():
    mu, logvar = torch.zeros(3, 8), torch.zeros(3, 8)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    assert torch.equal(kl, torch.zeros(3))


@pytest.mark.parametrize("make", [lambda: VAE(VAEConfig(width=0.0625)), lambda: WAE(WAEConfig(width=0.0625)),
                                  lambda: VAE(VAEConfig(width=0.0625, likelihood="bernoulli"))],
                         ids=["vae", "wae", "vae-bernoulli"])
def test_shapes_ranges_and_learning(make):
    torch.manual_seed(0)
    model = make()
    x = torch.rand(16, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (16, 8)
    out = model.decode(z)
    assert out.shape == (16, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    assert model.sample(5, temperature=0.5).shape == (5, 1, 28, 28)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(1)
    first = float(model.loss(x)["loss"].detach())
    for _ in range(30):
        opt.zero_grad()
        parts = model.loss(x)
        parts["loss"].backward()
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


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(VAEConfig(latent_dim=0))
    with pytest.raises(ValueError, match="width"):
        WAE(WAEConfig(width=0))
