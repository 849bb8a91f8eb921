"""The one model contract every registered model satisfies (PIE, VAE, WAE).

The harness (``bench``) only ever talks to a model through these methods; it never
branches on a model's name. Images are ``[B, C, H, W]`` floats; latents ``[B, d]``. The image shape
is the dataset's: a model config with a field ``image_shape`` (``models.settings.image_shape_setting``)
gets it from the harness's dataset table when the config is resolved.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Preprocessing = Literal["unit", "dequantize"]


class GenerativeEncoder(nn.Module):
    """Base class of the model contract.

    Attributes:
        latent_dim: size d of the code ``z``.
        has_density: True if :meth:`log_prob` is defined (PIE, VAE); False for WAE.
        log_prob_estimator: one line saying what :meth:`log_prob` computes (exact, a bound, an
            approximation) and with which settings; the harness copies it into the bits/dim
            note. Required when ``has_density`` (the registry refuses a density model without it).
        preprocessing: how the harness maps 8-bit pixels ``k`` to model inputs:
            ``"unit"`` is ``k / 255`` (autoencoders), ``"dequantize"`` is ``(k + u) / 256``
            with ``u ~ U(0, 1)`` (density models, so bits/dim are comparable).

    Methods to implement: ``loss``, ``encode``, ``decode`` and, for density models,
    ``log_prob`` (with ``has_density = True`` and ``log_prob_estimator``). ``reconstruct``
    and ``sample`` follow from them; ``diagnostics`` is optional.
    """

    latent_dim: int
    has_density: bool = False
    log_prob_estimator: str = ""  # how log_prob is obtained; required when has_density
    allows_bf16: bool = False  # bf16 autocast is safe (not for flows: log-dets stay fp32)
    preprocessing: Preprocessing = "unit"

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training objective on a batch ``[B, C, H, W]``.

        Returns a dict with key ``"loss"`` (a scalar to minimise) plus named parts
        (scalars, detached or not) that the harness logs.
        """
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic code of ``x``: ``[B, C, H, W] -> [B, latent_dim]``."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image of a code: ``[B, latent_dim] -> [B, C, H, W]`` in ``[0, 1]``."""
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``, in ``[0, 1]``."""
        return self.decode(self.encode(x))

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decode ``n`` codes ``z ~ N(0, T^2 I)``: temperature multiplies the prior's std."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        z = torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=dtype)
        return self.decode(temperature * z)

    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """Cheap scalar diagnostics of a batch ``x`` (as the model sees it, preprocessed).

        Logged per epoch and at evaluation (as ``diag_<name>``); a model with nothing to
        report returns ``{}`` (the default).
        """
        return {}

    @classmethod
    def log_prob_passes(cls, cfg) -> int:
        """Model passes per image of one :meth:`log_prob` call under config ``cfg`` (the harness's cost
        estimates): 1 for a density model, 0 without one; more for a sampled estimate."""
        return 1 if cls.has_density else 0

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of dequantised images in nats per image, ``[B]``.

        Only density models define it; others raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no density")
