"""Wasserstein auto-encoder with the MMD penalty (Tolstikhin et al. 2018), WAE-MMD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from baselines.nets import ConvDecoder, ConvEncoder
from models.contract import GenerativeEncoder
from models.settings import image_shape_setting, setting


def imq_mmd(z: torch.Tensor, z_prior: torch.Tensor, scales: list[float]) -> torch.Tensor:
    """Unbiased MMD² with the multi-scale inverse multiquadratic kernel (Tolstikhin et al. 2018, WAE).

    k(a, b) = sum_s C_s / (C_s + ||a - b||²), C_s = 2 · d · s. Within-sample terms
    exclude the diagonal and divide by n(n − 1); the cross term divides by n².
    """
    n, d = z.shape
    dist_zz = torch.cdist(z, z).pow(2)
    dist_pp = torch.cdist(z_prior, z_prior).pow(2)
    dist_zp = torch.cdist(z, z_prior).pow(2)
    off_diag = 1.0 - torch.eye(n, device=z.device, dtype=z.dtype)
    total = z.new_zeros(())
    for s in scales:
        c = 2.0 * d * s
        k_zz = (c / (c + dist_zz) * off_diag).sum() / (n * (n - 1))
        k_pp = (c / (c + dist_pp) * off_diag).sum() / (n * (n - 1))
        k_zp = (c / (c + dist_zp)).sum() / (n * n)
        total = total + k_zz + k_pp - 2 * k_zp
    return total


@dataclass
class WAEConfig:
    """WAE-MMD hyper-parameters (reference MNIST setup)."""

    latent_dim: int = setting(8, ge=1, le=4096)
    width: float = setting(1.0, gt=0, le=4)  # channel multiplier of the DCGAN nets
    recon_weight: float = setting(0.05, ge=0)  # cost c(x, y) = 0.05 · Σ (x − y)²
    mmd_weight: float = setting(10.0, ge=0)  # λ
    # Scales s of the IMQ kernel C_s = 2 d s (Tolstikhin et al. 2018); at least one, each > 0.
    kernel_scales: list[float] = setting(default_factory=lambda: [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0], gt=0,
                                         length=(1, None))
    preprocessing: Literal["unit", "dequantize"] = setting("unit")
    image_shape: list[int] = image_shape_setting()  # [C, H, W]: the harness sets the dataset's


class WAE(GenerativeEncoder):
    """Deterministic encoder, decoder with sigmoid output, MMD between q(z) and N(0, I)."""

    has_density = False

    allows_bf16 = True  # a plain conv autoencoder: bf16 autocast on CUDA is safe

    def __init__(self, cfg: WAEConfig):
        super().__init__()
        if cfg.latent_dim < 1:
            raise ValueError(f"wae.latent_dim must be >= 1, got {cfg.latent_dim}")
        if cfg.width <= 0:
            raise ValueError(f"wae.width must be > 0, got {cfg.width}")
        if not cfg.kernel_scales or min(cfg.kernel_scales) <= 0:
            raise ValueError("wae.kernel_scales must be a non-empty list of positive numbers")
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.preprocessing = cfg.preprocessing
        self.encoder = ConvEncoder(cfg.latent_dim, cfg.width, image_shape=cfg.image_shape)
        self.decoder = ConvDecoder(cfg.latent_dim, cfg.width, image_shape=cfg.image_shape)

    def loss(self, x):
        """Eq. of WAE-MMD: E[c(x, G(Q(x)))] + λ · MMD(q(z), p(z)), per image."""
        z = self.encoder(x)
        x_hat = torch.sigmoid(self.decoder(z))
        recon = self.cfg.recon_weight * (x - x_hat).pow(2).flatten(1).sum(1).mean()
        mmd = imq_mmd(z, torch.randn_like(z), self.cfg.kernel_scales)
        return {"loss": recon + self.cfg.mmd_weight * mmd, "recon": recon, "mmd": mmd}

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return torch.sigmoid(self.decoder(z))
