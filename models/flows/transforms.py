"""Input transforms: from [0, 1] pixels to the flow's domain, with their log-dets.

``LogitTransform`` is RealNVP's (Dinh et al. 2017) choice for images, ``CenterTransform``
Glow's (Kingma & Dhariwal 2018). Both are bijectors, so their log-det enters ``log_prob``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.flows.base import Bijector, Shape


class LogitTransform(Bijector):
    """``y = logit(alpha + (1 - 2 alpha) x)``, elementwise, from [0, 1] pixels to R."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(p) - torch.log1p(-p)
        # dy/dx = (1 - 2 alpha) / (p (1 - p))
        ld = math.log(1 - 2 * self.alpha) - torch.log(p) - torch.log1p(-p)
        return y, ld.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        ld = F.logsigmoid(y) + F.logsigmoid(-y) - math.log(1 - 2 * self.alpha)
        return x, ld.flatten(1).sum(1)


class CenterTransform(Bijector):
    """``y = x - 0.5``, from [0, 1] pixels to [-0.5, 0.5]; log-det 0."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x - 0.5, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y + 0.5, y.new_zeros(y.shape[0])
