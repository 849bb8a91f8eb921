"""Classifier confidence on generated images: are the samples "more accurate" (PIE paper, Fig. 7c)?

A sample the harness's LeNet (bench.classifier) assigns to one class with high probability
looks like a clear digit of that class; the mean max-softmax probability over samples is the
confidence half of the Inception score's idea (Salimans et al. 2016), without its diversity term.
"""

from __future__ import annotations

import torch

CONFIDENT = 0.9  # default threshold of the "confident" fraction (eval.confidence_threshold)


def sample_confidence(logits: torch.Tensor, threshold: float = CONFIDENT) -> tuple[float, float]:
    """(mean over rows of the max softmax probability, fraction of rows whose max exceeds ``threshold``)
    of classifier logits ``[N, C]``, in float64. Non-finite logits give (NaN, NaN)."""
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"expected logits [N, C] with N > 0, got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        return float("nan"), float("nan")
    top = torch.softmax(logits.detach().to(torch.float64), dim=1).amax(dim=1)
    return float(top.mean()), float((top > threshold).double().mean())
