"""Two-sided coupling of the PIE paper (Eq. 18): both halves change in one layer.

Affine (the paper) or additive (s ≡ 1, volume-preserving: an ablation, NICE's coupling).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models.flows.base import Bijector, Shape, check_shape

SubnetFactory = Callable[[int, int], nn.Module]


class AffineCoupling(Bijector):
    """Affine coupling where each half is scaled and shifted by a function of the other.

    Notation (Eq. 18), halves taken along axis 1 (channels for ``[B, C, H, W]``, features
    for ``[B, D]``)::

        y1 = s1(x2) ⊙ x1 + b1(x2)          x2 = (y2 - b2(y1)) / s2(y1)
        y2 = s2(y1) ⊙ x2 + b2(y1)          x1 = (y1 - b1(x2)) / s1(x2)
        log|det J| = Σ log s1 + Σ log s2

    The scales are soft-clamped exponentials, ``s = exp(c · tanh(a / c))`` with ``a`` the
    raw sub-network output and ``c = scale_clamp``, so ``s`` stays in ``(e^-c, e^c)``:
    never near zero (invertibility) nor huge (the NaN losses coupling flows are known for).

    ``additive=True`` fixes ``s ≡ 1`` (the additive coupling of NICE, Dinh et al. 2014): the
    layer is volume-preserving, ``log|det J| = 0``: shrinking the directions a later split
    discards must stretch others by the same factor (docs/results.md, "Does eps² matter?").

    Args:
        shape: per-sample input shape, ``(C,)`` or ``(C, H, W)``; needs ``C >= 2``.
        subnet: factory ``subnet(c_in, c_out) -> nn.Module``. It is called twice: once for
            ``(s1, b1)`` from ``x2`` and once for ``(s2, b2)`` from ``y1``; each module maps
            ``[B, c_in, ...]`` to ``[B, c_out, ...]`` where the first ``c_out / 2`` outputs
            are the raw log-scale ``a`` and the rest the bias ``b`` (additive: ``c_out`` is
            the size of the half and every output is bias). Zero-initialise the last layer
            of the sub-network so that the coupling starts as the identity.
        scale_clamp: ``c`` above, > 0 (unused when additive).
        additive: ``s ≡ 1``.

    Reference: PIE paper Sec. 4.2, Eq. 18 (modifies RealNVP, Dinh et al. 2016).
    """

    def __init__(
        self, shape: Shape, subnet: SubnetFactory, scale_clamp: float = 2.0, additive: bool = False
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3):
            raise ValueError(f"AffineCoupling expects a shape (C,) or (C, H, W), got {shape}")
        if shape[0] < 2:
            raise ValueError(f"AffineCoupling needs at least 2 channels/features, got {shape}")
        if not scale_clamp > 0:
            raise ValueError(f"scale_clamp must be > 0, got {scale_clamp}")
        self.shape = shape
        self.scale_clamp = float(scale_clamp)
        self.additive = bool(additive)
        self.c1 = shape[0] // 2
        self.c2 = shape[0] - self.c1
        per_feature = 1 if self.additive else 2  # outputs per feature: b, or (a, b)
        self.net1 = subnet(self.c2, per_feature * self.c1)  # x2 -> (a1, b1)
        self.net2 = subnet(self.c1, per_feature * self.c2)  # y1 -> (a2, b2)

    def output_shape(self, input_shape: Shape) -> Shape:
        if tuple(input_shape) != self.shape:
            raise ValueError(f"AffineCoupling expects {list(self.shape)}, got {list(input_shape)}")
        return self.shape

    def _scale_shift(
        self, net: nn.Module, h: torch.Tensor, c: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(log s, b)`` for a half of ``c`` channels from the conditioning half ``h``."""
        out = net(h)
        width = c if self.additive else 2 * c
        if out.shape[1] != width or out.shape[2:] != h.shape[2:]:
            raise ValueError(
                f"coupling sub-network must output [B, {width}, ...] matching its input's "
                f"trailing dims {list(h.shape[2:])}, got {list(out.shape)}"
            )
        if self.additive:
            return torch.zeros_like(out), out
        a, b = out.split([c, c], dim=1)
        c_ = self.scale_clamp
        return c_ * torch.tanh(a / c_), b

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape("AffineCoupling", x, self.shape)
        x1, x2 = x.split([self.c1, self.c2], dim=1)
        log_s1, b1 = self._scale_shift(self.net1, x2, self.c1)
        y1 = torch.exp(log_s1) * x1 + b1
        log_s2, b2 = self._scale_shift(self.net2, y1, self.c2)
        y2 = torch.exp(log_s2) * x2 + b2
        logdet = log_s1.flatten(1).sum(1) + log_s2.flatten(1).sum(1)
        return torch.cat([y1, y2], dim=1), logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape("AffineCoupling.inverse", y, self.shape)
        y1, y2 = y.split([self.c1, self.c2], dim=1)
        log_s2, b2 = self._scale_shift(self.net2, y1, self.c2)
        x2 = (y2 - b2) * torch.exp(-log_s2)
        log_s1, b1 = self._scale_shift(self.net1, x2, self.c1)
        x1 = (y1 - b1) * torch.exp(-log_s1)
        logdet = -(log_s1.flatten(1).sum(1) + log_s2.flatten(1).sum(1))
        return torch.cat([x1, x2], dim=1), logdet
