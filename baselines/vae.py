"""Variational auto-encoder baseline (Kingma & Welling 2013) on the shared DCGAN nets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from baselines.nets import ConvDecoder, ConvEncoder
from models.contract import GenerativeEncoder
from models.settings import image_shape_setting, setting


@dataclass
class VAEConfig:
    """VAE hyper-parameters."""

    latent_dim: int = setting(8, ge=1, le=4096)  # Table 1 uses 8 for all models
    width: float = setting(1.0, gt=0, le=4)  # channel multiplier of the DCGAN nets (1.0 = reference)
    likelihood: Literal["gaussian", "bernoulli"] = setting("gaussian")  # decoder p(x|z)
    init_log_scale: float = setting(-2.0, unbounded=True)  # initial log-std of the Gaussian decoder (learned)
    # Scale of the Gaussian decoder: "shared", one learned std for all pixels (Table 1's VAE);
    # "per_pixel", one learned std per pixel, independent of z: the shell density of AEF
    # (models/aef.py), for a like-for-like bits/dim.
    decoder_scale: Literal["shared", "per_pixel"] = setting("shared")
    iw_samples: int = setting(100, ge=1, le=100_000)  # K of the importance-weighted log p(x) estimate (bits/dim)
    preprocessing: Literal["unit", "dequantize"] = setting("dequantize")
    image_shape: list[int] = image_shape_setting()  # [C, H, W]: the harness sets the dataset's


class VAE(GenerativeEncoder):
    """Gaussian encoder q(z|x) = N(mu(x), diag sigma(x)^2), prior N(0, I).

    The decoder likelihood is a Gaussian with one learned scale shared by all pixels
    (a proper density on dequantised pixels, so bits/dim compare with PIE) or, with
    ``decoder_scale="per_pixel"``, one learned scale per pixel; or Bernoulli as an option
    (no density on continuous pixels then).
    """

    allows_bf16 = True  # a plain conv autoencoder: bf16 autocast on CUDA is safe

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.latent_dim < 1:
            raise ValueError(f"vae.latent_dim must be >= 1, got {cfg.latent_dim}")
        if cfg.width <= 0:
            raise ValueError(f"vae.width must be > 0, got {cfg.width}")
        if cfg.iw_samples < 1:
            raise ValueError(f"vae.iw_samples must be >= 1, got {cfg.iw_samples}")
        if cfg.decoder_scale not in ("shared", "per_pixel"):
            raise ValueError(f"vae.decoder_scale must be shared or per_pixel, got {cfg.decoder_scale!r}")
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.preprocessing = cfg.preprocessing
        self.has_density = cfg.likelihood == "gaussian"
        self.encoder = ConvEncoder(2 * cfg.latent_dim, cfg.width, image_shape=cfg.image_shape)
        self.decoder = ConvDecoder(cfg.latent_dim, cfg.width, image_shape=cfg.image_shape)
        scale_shape = (1, *cfg.image_shape) if cfg.decoder_scale == "per_pixel" else ()
        self.log_scale = nn.Parameter(torch.full(scale_shape, float(cfg.init_log_scale)))

    @property
    def log_prob_estimator(self) -> str:
        per_pixel = ", per-pixel decoder scale" if self.cfg.decoder_scale == "per_pixel" else ""
        return (f"importance-weighted lower bound (IWAE) with K = iw_samples samples from q(z|x) "
                f"(iw_samples={self.cfg.iw_samples}{per_pixel})")

    @classmethod
    def log_prob_passes(cls, cfg: VAEConfig) -> int:
        """K = iw_samples decoder passes per image (the IWAE estimate); none with a Bernoulli decoder."""
        return cfg.iw_samples if cfg.likelihood == "gaussian" else 0

    def _posterior(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def _log_px_given_z(self, x, logits):
        """log p(x|z) summed over pixels, ``[B]``."""
        if self.cfg.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        mean = torch.sigmoid(logits)
        var = torch.exp(2 * self.log_scale)
        ll = -0.5 * ((x - mean) ** 2 / var + 2 * self.log_scale + math.log(2 * math.pi))
        return ll.flatten(1).sum(1)

    def loss(self, x):
        """Negative ELBO per image: -E_q[log p(x|z)] + KL(q(z|x) || N(0, I))."""
        mu, logvar = self._posterior(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = -self._log_px_given_z(x, self.decoder(z)).mean()
        kl = (0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)).mean()
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    def encode(self, x):
        return self._posterior(x)[0]

    def decode(self, z):
        return torch.sigmoid(self.decoder(z))

    def log_prob(self, x):
        """Importance-weighted estimate (IWAE bound, Burda et al. 2016) of log p(x), ``[B]``.

        log p(x) ≈ logsumexp_k [log p(x|z_k) + log p(z_k) − log q(z_k|x)] − log K,
        z_k ~ q(z|x), K = ``iw_samples``. A lower bound that tightens as K grows.
        """
        if not self.has_density:
            raise NotImplementedError("VAE with a Bernoulli decoder defines no density on [0, 1]")
        mu, logvar = self._posterior(x)
        std = torch.exp(0.5 * logvar)
        k = self.cfg.iw_samples
        terms = []
        for _ in range(k):  # a loop over importance samples, not over images
            eps = torch.randn_like(mu)
            z = mu + eps * std
            log_q = (-0.5 * (eps**2 + logvar + math.log(2 * math.pi))).sum(1)
            log_pz = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(1)
            terms.append(self._log_px_given_z(x, self.decoder(z)) + log_pz - log_q)
        return torch.logsumexp(torch.stack(terms), dim=0) - math.log(k)
