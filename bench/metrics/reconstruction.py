"""Reconstruction error of ``decode(encode(x))`` against ``x``."""

from __future__ import annotations

import torch


def reconstruction_errors(x: torch.Tensor, recon: torch.Tensor) -> tuple[float, float]:
    """(MSE per pixel, SSE per image) between images ``[N, ...]`` and their reconstructions."""
    if x.shape != recon.shape:
        raise ValueError(f"images and reconstructions differ in shape: {tuple(x.shape)} vs {tuple(recon.shape)}")
    err = (recon.to(torch.float64) - x.to(torch.float64)).pow(2).flatten(1)
    return float(err.mean()), float(err.sum(1).mean())
