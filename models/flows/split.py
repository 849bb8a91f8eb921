"""The PIE split (Eq. 20): keep z, score the residual r under N(g(z), eps² I). Not a bijection."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.flows.base import Shape, check_shape


class PseudoSplit(nn.Module):
    """Dimensionality reduction step of PIE: ``x -> z`` with ``x = [z, r]`` along axis 1.

    Notation (Eq. 20)::

        z = x[:, :keep]           r = x[:, keep:]         (forward / "split")
        r ~ N(g(z), eps² I)       x = [z, g(z)]           (merge, the pseudo-inverse)

    This is NOT a bijector: it drops ``r``. It therefore has no log-det; instead it reports
    the residual log-density ``log N(r; g(z), eps² I)``, summed per sample, which is the
    ``l``-th residual term of Eq. 17. ``merge`` is a right inverse of ``split``
    (``split(merge(z))`` returns ``z``); ``merge(split(x))`` returns ``x`` only if
    ``r = g(z)``.

    Args:
        shape: per-sample input shape, ``(C,)`` or ``(C, H, W)``; split along ``C``.
        keep: number of channels/features kept as ``z``, ``1 <= keep < C``.
        eps2: the variance ``eps²`` of the residual Gaussian (not a std), > 0.
        g: module mapping ``z`` ``[B, keep, ...]`` to ``[B, C - keep, ...]``, or ``None`` for
            ``g ≡ 0`` (with ``eps² = 1`` this is the multi-scale RealNVP of Sec. 3.4).

    Reference: PIE paper Sec. 4.5, Eq. 20, and Eq. 12/17 for the residual density.
    """

    def __init__(self, shape: Shape, keep: int, eps2: float, g: nn.Module | None) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3):
            raise ValueError(f"PseudoSplit expects a shape (C,) or (C, H, W), got {shape}")
        if not 1 <= keep < shape[0]:
            raise ValueError(
                f"PseudoSplit must keep between 1 and {shape[0] - 1} of {shape[0]} "
                f"channels/features, got keep={keep}"
            )
        if not eps2 > 0:
            raise ValueError(f"eps2 (a variance) must be > 0, got {eps2}")
        self.shape = shape
        self.keep = int(keep)
        self.eps2 = float(eps2)
        self.g = g

    @property
    def z_shape(self) -> Shape:
        return (self.keep, *self.shape[1:])

    @property
    def r_shape(self) -> Shape:
        return (self.shape[0] - self.keep, *self.shape[1:])

    def output_shape(self, input_shape: Shape) -> Shape:
        if tuple(input_shape) != self.shape:
            raise ValueError(f"PseudoSplit expects {list(self.shape)}, got {list(input_shape)}")
        return self.z_shape

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, ...] -> (z [B, keep, ...], r [B, C - keep, ...])``."""
        check_shape("PseudoSplit", x, self.shape)
        z, r = x.split([self.keep, self.shape[0] - self.keep], dim=1)
        return z, r

    def predict_residual(self, z: torch.Tensor) -> torch.Tensor:
        """``g(z)``, ``[B, C - keep, ...]`` (zeros when ``g ≡ 0``)."""
        check_shape("PseudoSplit.predict_residual", z, self.z_shape)
        if self.g is None:
            return z.new_zeros(z.shape[0], *self.r_shape)
        mean = self.g(z)
        check_shape("PseudoSplit's g output", mean, self.r_shape)
        return mean

    def residual_log_prob(self, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``log N(r; g(z), eps² I)`` summed over the residual's elements, ``[B]``."""
        check_shape("PseudoSplit.residual_log_prob", r, self.r_shape)
        sq = (r - self.predict_residual(z)).pow(2).flatten(1).sum(1)
        n = r[0].numel()
        return -0.5 * sq / self.eps2 - 0.5 * n * math.log(2 * math.pi * self.eps2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(z, r, log_pr)``: kept part, residual and its log-density ``[B]``."""
        z, r = self.split(x)
        return z, r, self.residual_log_prob(z, r)

    def merge(self, z: torch.Tensor) -> torch.Tensor:
        """The pseudo-inverse ``z -> [z, g(z)]``, ``[B, keep, ...] -> [B, C, ...]``."""
        return torch.cat([z, self.predict_residual(z)], dim=1)
