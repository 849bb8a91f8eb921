"""The model contract's checks (``models/contract.py``), shared by ``test_model_contract.py``
(every registered model) and the tests of model variants the registry does not build."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bench.data import preprocess
from models.contract import GenerativeEncoder


def model_inputs(model: GenerativeEncoder, images: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Images as the model sees them (its own preprocessing, fixed dequantisation noise)."""
    return preprocess(images, model.preprocessing, torch.Generator().manual_seed(0), dtype)


def check_images(out: torch.Tensor, n: int, dtype=torch.float32) -> None:
    assert out.shape == (n, 1, 28, 28) and out.dtype == dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def check_contract(model: GenerativeEncoder, images: torch.Tensor) -> None:
    """What the harness relies on, checked through the contract's members only."""
    assert isinstance(model, GenerativeEncoder)
    d = model.latent_dim
    assert isinstance(d, int) and d >= 1
    assert model.preprocessing in ("unit", "dequantize")
    assert isinstance(model.has_density, bool) and isinstance(model.allows_bf16, bool)
    x = model_inputs(model, images)
    n = len(x)

    # loss: a dict of finite scalars with a differentiable "loss"; its gradients are finite.
    model.train()
    torch.manual_seed(0)
    parts = model.loss(x)
    assert "loss" in parts and parts["loss"].requires_grad
    for name, value in parts.items():
        assert isinstance(name, str) and value.shape == () and torch.isfinite(value), (name, value)
    model.zero_grad()
    parts["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()

    model.eval()
    with torch.no_grad():
        # encode: deterministic, [B, d], one image's code independent of its batch (evaluation chunks).
        z = model.encode(x)
        assert z.shape == (n, d) and z.dtype == torch.float32 and torch.isfinite(z).all()
        assert torch.equal(model.encode(x), z)
        torch.testing.assert_close(model.encode(x[:3]), z[:3], atol=1e-5, rtol=1e-5)
        # decode and reconstruct: images in [0, 1]; reconstruct is decode(encode(x)).
        check_images(model.decode(z), n)
        recon = model.reconstruct(x)
        check_images(recon, n)
        torch.testing.assert_close(recon, model.decode(z), atol=1e-5, rtol=1e-5)
        # sample: decode(T z), z ~ N(0, I) drawn from the generator; the temperature scales the std.
        samples = model.sample(5, temperature=0.5, generator=torch.Generator().manual_seed(3))
        check_images(samples, 5)
        z_prior = torch.randn(5, d, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(samples, model.decode(0.5 * z_prior), atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="temperature"):
            model.sample(2, temperature=0.0)
        # log_prob: nats per image where there is a density, and an explicit estimator; else refused.
        if model.has_density:
            assert isinstance(model.log_prob_estimator, str) and model.log_prob_estimator.strip()
            assert "\n" not in model.log_prob_estimator
            torch.manual_seed(0)
            lp = model.log_prob(x)
            assert lp.shape == (n,) and lp.dtype == torch.float32 and torch.isfinite(lp).all()
        else:
            with pytest.raises(NotImplementedError):
                model.log_prob(x)
        # diagnostics: plain finite floats by name.
        diag = model.diagnostics(x)
        assert isinstance(diag, dict)
        for name, value in diag.items():
            assert isinstance(name, str) and isinstance(value, float) and math.isfinite(value), (name, value)
        # train.float64: the model follows its parameters' dtype.
        wide = copy.deepcopy(model).double()
        x64 = model_inputs(model, images[:2], torch.float64)
        assert wide.encode(x64).dtype == torch.float64
        check_images(wide.decode(wide.encode(x64)), 2, torch.float64)
