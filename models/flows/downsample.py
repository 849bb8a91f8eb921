"""Checkerboard (space-to-depth) downsampling: C×H×W -> 4C×H/2×W/2, a permutation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.flows.base import Bijector, Shape


class CheckerboardDownsample(Bijector):
    """Invertible downsampling by a 2×2 checkerboard (i-RevNet / RealNVP "squeeze").

    Layout: ``y[:, 4c + 2i + j, h, w] = x[:, c, 2h + i, 2w + j]`` for ``i, j in {0, 1}``,
    i.e. each input channel becomes four consecutive output channels, one per phase of
    the 2×2 checkerboard. A permutation of the variables, so the log-det is 0.

    Reference: PIE paper Sec. 4.4; Dinh et al. (2016); Jacobsen et al. (2018).
    """

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"CheckerboardDownsample expects [C, H, W], got {list(input_shape)}")
        c, h, w = input_shape
        if h % 2 or w % 2:
            raise ValueError(f"CheckerboardDownsample needs even height and width, got {h}×{w}")
        return (4 * c, h // 2, w // 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"CheckerboardDownsample expects [B, C, H, W], got {list(x.shape)}")
        self.output_shape(tuple(x.shape[1:]))
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y.dim() != 4 or y.shape[1] % 4:
            raise ValueError(
                f"CheckerboardDownsample.inverse expects [B, 4C, H, W], got {list(y.shape)}"
            )
        return F.pixel_shuffle(y, 2), y.new_zeros(y.shape[0])
