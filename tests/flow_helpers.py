"""Shared pieces of the flow and PIE tests: layer factories, perturbation, autograd log-dets."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from models.flows import (
    AffineCoupling,
    Bijector,
    CenterTransform,
    CheckerboardDownsample,
    HouseholderConv1x1,
    HouseholderLinear,
    LogitTransform,
    Sequential,
    conv_net,
    mlp,
)
from models.pie import PIE, PIEConfig

DTYPE = torch.float64


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Add Gaussian noise to every parameter: zero-initialised couplings are identities, and
    an identity layer would pass every round-trip and log-det test trivially."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def autograd_logdet(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``log|det dfn/dx|`` for ONE sample ``x`` ``[1, ...]``, from the full autograd Jacobian."""
    flat = x.reshape(-1)
    # One backward pass per output row; vmap (vectorize=True) is slower for these tiny convs.
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).reshape(-1), flat)
    if jac.shape != (flat.numel(), flat.numel()):
        raise AssertionError(f"Jacobian of a bijection must be square, got {tuple(jac.shape)}")
    return torch.linalg.slogdet(jac).logabsdet


def tiny_pie_config(**overrides: object) -> PIEConfig:
    """A PIE on 1×8×8 images, 64 -> 32 -> 8 -> 4, small widths: fast enough for Jacobians."""
    base = dict(
        image_shape=[1, 8, 8],
        conv_keep=[0.5],
        linear_sizes=[8],
        latent_dim=4,
        couplings_per_block=2,
        n_reflections=2,
        coupling_conv_hidden=8,
        coupling_linear_hidden=16,
        g_conv_hidden=8,
        g_linear_hidden=16,
    )
    base.update(overrides)
    return PIEConfig(**base)  # type: ignore[arg-type]


# --- layer factories: make(batch) -> (layer in float64 with non-identity parameters, x) ---


def _randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def downsample(batch: int) -> tuple[Bijector, torch.Tensor]:
    return CheckerboardDownsample(), _randn(batch, 2, 4, 4)


def householder_conv(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    return perturb(HouseholderConv1x1(4, 3).to(DTYPE)), _randn(batch, 4, 2, 2)


def householder_linear(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    return perturb(HouseholderLinear(6, 3).to(DTYPE)), _randn(batch, 6)


def coupling_conv(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    layer = AffineCoupling((4, 3, 3), partial(conv_net, hidden=6), scale_clamp=2.0)
    return perturb(layer.to(DTYPE)), _randn(batch, 4, 3, 3)


def coupling_linear_odd(batch: int) -> tuple[Bijector, torch.Tensor]:
    """Odd width: halves of 2 and 3 features."""
    torch.manual_seed(0)
    layer = AffineCoupling((5,), partial(mlp, hidden=8), scale_clamp=1.5)
    return perturb(layer.to(DTYPE), scale=0.5), _randn(batch, 5)


def coupling_additive_conv(batch: int) -> tuple[Bijector, torch.Tensor]:
    """``pie.coupling=additive``: s ≡ 1, log-det 0."""
    torch.manual_seed(0)
    layer = AffineCoupling((4, 3, 3), partial(conv_net, hidden=6), additive=True)
    return perturb(layer.to(DTYPE)), _randn(batch, 4, 3, 3)


def coupling_additive_linear_odd(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    layer = AffineCoupling((5,), partial(mlp, hidden=8), additive=True)
    return perturb(layer.to(DTYPE), scale=0.5), _randn(batch, 5)


def coupling_saturated(batch: int) -> tuple[Bijector, torch.Tensor]:
    """Weights large enough to drive raw log-scales past the clamp c = 0.5: s = exp(c tanh(a/c))."""
    torch.manual_seed(0)
    layer = AffineCoupling((6,), partial(mlp, hidden=8), scale_clamp=0.5)
    return perturb(layer.to(DTYPE), scale=1.0), _randn(batch, 6)


def householder_conv_full(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    return perturb(HouseholderConv1x1(4, 4).to(DTYPE)), _randn(batch, 4, 2, 2)


def householder_linear_full(batch: int) -> tuple[Bijector, torch.Tensor]:
    """``pie.n_reflections=0``: as many reflections as the width."""
    torch.manual_seed(0)
    return perturb(HouseholderLinear(6, 6).to(DTYPE)), _randn(batch, 6)


def householder_conv_reflections(batch: int) -> tuple[Bijector, torch.Tensor]:
    """``impl="reflections"``: the same map applied one reflection at a time."""
    torch.manual_seed(0)
    return perturb(HouseholderConv1x1(4, 3, impl="reflections").to(DTYPE)), _randn(batch, 4, 2, 2)


def householder_linear_reflections(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    return perturb(HouseholderLinear(6, 6, impl="reflections").to(DTYPE)), _randn(batch, 6)


def logit_transform(batch: int) -> tuple[Bijector, torch.Tensor]:
    x = torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    return LogitTransform(0.05), x


def center_transform(batch: int) -> tuple[Bijector, torch.Tensor]:
    x = torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    return CenterTransform(), x


def sequential(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    layer = Sequential(
        CheckerboardDownsample(),
        AffineCoupling((4, 2, 2), partial(conv_net, hidden=6)),
        HouseholderConv1x1(4, 2),
    )
    return perturb(layer.to(DTYPE)), _randn(batch, 1, 4, 4)


def pie_conv_block_flow(batch: int) -> tuple[Bijector, torch.Tensor]:
    """The invertible part of the first block of a (tiny) PIE model, as the model builds it."""
    torch.manual_seed(0)
    model = perturb(PIE(tiny_pie_config()).to(DTYPE), scale=0.1)
    return model.blocks[0].flow, _randn(batch, 1, 8, 8)


def pie_linear_block_flow(batch: int) -> tuple[Bijector, torch.Tensor]:
    torch.manual_seed(0)
    model = perturb(PIE(tiny_pie_config()).to(DTYPE), scale=0.1)
    return model.blocks[1].flow, _randn(batch, 32)


def pie_linear_block_flow_ablations(batch: int) -> tuple[Bijector, torch.Tensor]:
    """A linear block built with the ablation switches: additive couplings, full Householder."""
    torch.manual_seed(0)
    model = PIE(tiny_pie_config(coupling="additive", n_reflections=0)).to(DTYPE)
    return perturb(model, scale=0.1).blocks[1].flow, _randn(batch, 32)


BIJECTORS = [
    downsample,
    householder_conv,
    householder_linear,
    coupling_conv,
    coupling_linear_odd,
    coupling_additive_conv,
    coupling_additive_linear_odd,
    coupling_saturated,
    householder_conv_full,
    householder_linear_full,
    householder_conv_reflections,
    householder_linear_reflections,
    logit_transform,
    center_transform,
    sequential,
    pie_conv_block_flow,
    pie_linear_block_flow,
    pie_linear_block_flow_ablations,
]
