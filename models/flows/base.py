"""Bijector base class and Sequential composition (the contract every PIE layer follows)."""

from __future__ import annotations

import torch
from torch import nn

Shape = tuple[int, ...]


class Bijector(nn.Module):
    """An invertible layer with a tractable log-determinant.

    Direction (fixed for the whole package): ``forward`` ENCODES, i.e. maps data to latent,
    ``y = f(x)``; ``inverse`` decodes, ``x = f^-1(y)``.

    * ``forward(x) -> (y, logdet)`` with ``logdet = log|det df/dx|`` of shape ``[B]``.
    * ``inverse(y) -> (x, logdet_inverse)`` with ``logdet_inverse = log|det df^-1/dy|``,
      so the log-dets of a forward pass and of the inverse pass on its output sum to zero.
    * ``output_shape(input_shape)`` maps a per-sample shape (no batch axis) to the
      per-sample output shape and raises ``ValueError`` if the layer cannot take it; the
      PIE builder calls it at construction so mismatched sizes fail before training.

    Log-dets are always created from the input (``x.new_zeros(x.shape[0])``) so they have
    the input's device and dtype. Fixed tensors are registered buffers.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def output_shape(self, input_shape: Shape) -> Shape:
        raise NotImplementedError


def check_shape(name: str, x: torch.Tensor, expected: Shape) -> None:
    """Raise ``ValueError`` unless ``x`` is ``[B, *expected]``."""
    if tuple(x.shape[1:]) != tuple(expected) or x.dim() != len(expected) + 1:
        raise ValueError(
            f"{name} expects input of shape [B, {', '.join(map(str, expected))}], "
            f"got {list(x.shape)}"
        )


class Sequential(Bijector):
    """Composition ``f_n ∘ ... ∘ f_1``: log-dets add going forward, layers reverse going back."""

    def __init__(self, *layers: Bijector) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, ld = layer.inverse(y)
            logdet = logdet + ld
        return y, logdet

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape
