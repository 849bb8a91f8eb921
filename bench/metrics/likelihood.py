"""Likelihood in bits per dimension on dequantised 8-bit images (Theis et al. 2016, "A note on the
evaluation of generative models"; Dinh et al. 2017, RealNVP)."""

from __future__ import annotations

import math

import torch


def bits_per_dim(log_prob: torch.Tensor, n_dims: int, n_levels: int = 256) -> float:
    """Mean bits/dim of images whose log-density (nats per image, on ``[0, 1]^D``) is given.

    bits/dim = (−ln p(x) + D · ln n_levels) / (D · ln 2), averaged over images: the
    ``D · ln 256`` term moves the density from ``[0, 1]^D`` to the 8-bit pixel scale.

    Args:
        log_prob: ``[N]`` ln p(x) in nats of dequantised images ``x = (k + u) / 256``.
        n_dims: D, pixels per image (784 for MNIST).
        n_levels: quantisation levels per pixel (256 for 8 bits).

    Reference: Theis et al. 2016, "A note on the evaluation of generative models", Sec. 3.1;
    Dinh et al. 2017 (RealNVP), Sec. 4.1.
    """
    if log_prob.dim() != 1 or log_prob.numel() == 0:
        raise ValueError(f"expected log-densities [N] with N >= 1, got shape {tuple(log_prob.shape)}")
    if n_dims < 1:
        raise ValueError(f"n_dims must be >= 1, got {n_dims}")
    nll = -log_prob.to(torch.float64).mean()
    return float((nll + n_dims * math.log(n_levels)) / (n_dims * math.log(2.0)))
