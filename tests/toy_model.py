"""A fourth model for the tests that add one at runtime: the smallest the contract admits.

No ``from __future__ import annotations``: the config loader type-checks the config's field types."""

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.contract import GenerativeEncoder
from models.settings import image_shape_setting, setting


@dataclass
class LinearAutoencoderConfig:
    latent_dim: int = setting(4, ge=1, le=784)
    image_shape: list[int] = image_shape_setting()  # the harness sets the dataset's


class LinearAutoencoder(GenerativeEncoder):
    """z = W x + b, x̂ = sigmoid(V z + c), squared error."""

    def __init__(self, cfg: LinearAutoencoderConfig):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.image_shape = tuple(cfg.image_shape)
        self.enc = nn.Linear(math.prod(self.image_shape), cfg.latent_dim)
        self.dec = nn.Linear(cfg.latent_dim, math.prod(self.image_shape))

    def loss(self, x):
        recon = (self.reconstruct(x) - x).pow(2).flatten(1).sum(1).mean()
        return {"loss": recon, "recon": recon}

    def encode(self, x):
        return self.enc(x.reshape(len(x), -1))

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).reshape(-1, *self.image_shape)
