"""The sub-networks of couplings and of the split's g_l: size-preserving convs and MLPs whose last
layer starts at zero, so a coupling starts as the identity and g as g ≡ 0."""

from __future__ import annotations

from torch import nn


def _zero_last(net: nn.Sequential) -> nn.Sequential:
    """Zero the last layer so the coupling starts as the identity (and g as g ≡ 0)."""
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def conv_net(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    """3×3 conv -> ReLU -> 1×1 conv -> ReLU -> 3×3 conv (zero-initialised), size-preserving."""
    return _zero_last(
        nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, c_out, 3, padding=1),
        )
    )


def mlp(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear -> ReLU -> Linear (zero-initialised)."""
    return _zero_last(
        nn.Sequential(
            nn.Linear(c_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, c_out),
        )
    )
