"""Orthogonal 1×1 convolution and linear map as products of Householder reflections (Eq. 19)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.flows.base import Bijector, Shape, check_shape

# Up to this many reflections, ``matrix`` multiplies them in one by one (the paper's 3: the
# path of every committed run, kept so their numbers do not move); more use the compact WY
# form, a handful of kernels whatever n (full-width maps: 196 sequential steps otherwise).
SEQUENTIAL_MAX_REFLECTIONS = 3

# How a map applies W: "matrix" materialises the C×C matrix and applies it as one matmul or
# 1×1 convolution (the default: every committed run); "reflections" applies the n reflections
# to the activations one by one (bench.perf's "householder" section times the two).
Impl = Literal["matrix", "reflections"]
IMPLS: tuple[str, ...] = ("matrix", "reflections")


def reflect(x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``H(v_n) ... H(v_1) x`` along axis 1, one reflection at a time (``vectors`` ``[n, C]``).

    ``H(v) x = x - 2 v (vᵀx) / (vᵀv)`` at every position of the other axes (Eq. 19).
    """
    shape = (1, -1) + (1,) * (x.dim() - 2)
    for v in vectors:
        coef = (x * v.view(shape)).sum(1, keepdim=True)  # vᵀx per position
        x = x - (2.0 / v.dot(v)) * coef * v.view(shape)
    return x


class _Householder(Bijector):
    """Plumbing shared by the conv and linear maps: ``W = H(v_n) ... H(v_1)``.

    ``H(v) = I - 2 v vᵀ / (vᵀ v)`` is an orthogonal reflection, so ``W`` is orthogonal,
    ``W^-1 = Wᵀ`` and ``log|det W| = 0``. Each reflection uses a full-length vector (the
    paper's "biggest possible" reflections). ``W`` is C×C, so it is materialised once per
    call rather than applying the reflections to the activations one by one (``impl``
    switches to the latter; the two agree up to rounding). With ``n_reflections = C``
    ("full") W can be any orthogonal matrix of determinant (-1)^C.

    Args:
        features: C, the size of the axis the map mixes.
        n_reflections: n, the number of reflections (3 in the paper's MNIST model).
        impl: ``"matrix"`` (default) or ``"reflections"``, see :data:`Impl`; an attribute
            that may be changed after construction (:func:`set_impl`).

    Reference: PIE paper Sec. 4.3, Eq. 19.
    """

    def __init__(self, features: int, n_reflections: int, impl: Impl = "matrix") -> None:
        super().__init__()
        _check_impl(impl)
        if features < 1:
            raise ValueError(f"{type(self).__name__} needs features >= 1, got {features}")
        if n_reflections < 1:
            raise ValueError(f"{type(self).__name__} needs n_reflections >= 1, got {n_reflections}")
        self.features = features
        # Random directions: a random orthogonal mixing at initialisation.
        self.vectors = nn.Parameter(torch.randn(n_reflections, features))
        self.impl: Impl = impl

    def extra_repr(self) -> str:
        return f"features={self.features}, n_reflections={self.vectors.shape[0]}, impl={self.impl}"

    def _apply_w(self, x: torch.Tensor) -> torch.Tensor:
        """``W x`` along axis 1 by successive reflections (``impl="reflections"``)."""
        return reflect(x, self.vectors)

    def _apply_w_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``Wᵀ y = H(v_1) ... H(v_n) y``: the reflections in reverse order (each is its own inverse)."""
        return reflect(y, self.vectors.flip(0))

    def matrix(self) -> torch.Tensor:
        """The orthogonal matrix ``W = H(v_n) ... H(v_1)``, ``[C, C]``.

        Many reflections: compact WY form (Joffrain et al. 2006, "Accumulating Householder
        transformations, revisited"): with V = [v_1 ... v_n] (columns) and the upper
        triangular ``T = striu(VᵀV) + diag(VᵀV) / 2``, ``H(v_1) ... H(v_n) = I - V T⁻¹ Vᵀ``,
        which is ``Wᵀ``. Equal to the one-by-one product up to rounding (tested).
        """
        v = self.vectors
        eye = torch.eye(self.features, dtype=v.dtype, device=v.device)
        if v.shape[0] > SEQUENTIAL_MAX_REFLECTIONS:
            gram = v @ v.T
            t = torch.triu(gram, diagonal=1) + torch.diag(torch.diagonal(gram) / 2)
            t_inv_vt = torch.linalg.solve_triangular(t, v, upper=True)  # T⁻¹ Vᵀ, [n, C]
            return eye - t_inv_vt.T @ v  # (I - V T⁻¹ Vᵀ)ᵀ = I - V T⁻ᵀ Vᵀ
        w = eye
        for vk in v:
            # H(v) W = W - 2 v (vᵀ W) / (vᵀ v)
            w = w - (2.0 / vk.dot(vk)) * torch.outer(vk, vk @ w)
        return w


class HouseholderLinear(_Householder):
    """Invertible linear map ``y = W x`` on ``[B, C]`` with orthogonal ``W`` (log-det 0)."""

    def output_shape(self, input_shape: Shape) -> Shape:
        if tuple(input_shape) != (self.features,):
            raise ValueError(
                f"HouseholderLinear expects [{self.features}], got {list(input_shape)}"
            )
        return tuple(input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape("HouseholderLinear", x, (self.features,))
        if self.impl == "reflections":
            return self._apply_w(x), x.new_zeros(x.shape[0])
        return x @ self.matrix().T, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape("HouseholderLinear.inverse", y, (self.features,))
        if self.impl == "reflections":
            return self._apply_w_inverse(y), y.new_zeros(y.shape[0])
        return y @ self.matrix(), y.new_zeros(y.shape[0])


class HouseholderConv1x1(_Householder):
    """Invertible 1×1 convolution on ``[B, C, H, W]``: ``W`` mixes channels at every pixel.

    The log-det is ``H·W·log|det W| = 0`` because ``W`` is orthogonal.
    """

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3 or input_shape[0] != self.features:
            raise ValueError(
                f"HouseholderConv1x1 expects [{self.features}, H, W], got {list(input_shape)}"
            )
        return tuple(input_shape)

    def _check(self, name: str, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.features:
            raise ValueError(f"{name} expects [B, {self.features}, H, W], got {list(x.shape)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check("HouseholderConv1x1", x)
        if self.impl == "reflections":
            return self._apply_w(x), x.new_zeros(x.shape[0])
        w = self.matrix()
        return F.conv2d(x, w[:, :, None, None]), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check("HouseholderConv1x1.inverse", y)
        if self.impl == "reflections":
            return self._apply_w_inverse(y), y.new_zeros(y.shape[0])
        w = self.matrix()
        return F.conv2d(y, w.T[:, :, None, None].contiguous()), y.new_zeros(y.shape[0])


def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"Householder impl must be one of {', '.join(IMPLS)}, got {impl!r}")


def householder_maps(module: nn.Module) -> list[HouseholderConv1x1 | HouseholderLinear]:
    """Every Householder map inside ``module`` (itself included), in module order."""
    return [m for m in module.modules() if isinstance(m, HouseholderConv1x1 | HouseholderLinear)]


def set_impl(module: nn.Module, impl: Impl) -> int:
    """Switch every Householder map inside ``module`` to ``impl``; returns how many maps.

    Parameters are untouched, so a trained model gives the same outputs (up to rounding)
    either way.
    """
    _check_impl(impl)
    maps = householder_maps(module)
    for m in maps:
        m.impl = impl
    return len(maps)
