"""The DCGAN-style MNIST encoder/decoder shared by the VAE and WAE baselines.

Widths follow the WAE reference code's MNIST config (Tolstikhin et al. 2018, WAE; their published code): encoder
128 → 256 → 512 → 1024 channels of 4×4 stride-2 convolutions with batch norm and
ReLU; decoder linear to 7×7×1024, two 4×4 stride-2 transposed convs (512, 256) and a
stride-1 transposed conv to one channel. ``width`` multiplies every channel count
(1.0 = reference; CPU presets use less).
"""

from __future__ import annotations

from torch import nn


def _ch(base: int, width: float) -> int:
    return max(1, round(base * width))


class ConvEncoder(nn.Module):
    """``[B, 1, 28, 28] -> [B, out_features]``.

    Padding 1 on the 4×4 stride-2 convs gives 28 → 14 → 7 → 3 → 1 (the reference
    code's TF 'SAME' padding gives 4 and 2 at the last two; the head is sized from the
    actual output, so this only changes the head's input size).
    """

    def __init__(self, out_features: int, width: float = 1.0):
        super().__init__()
        chans = [1] + [_ch(c, width) for c in (128, 256, 512, 1024)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(chans[-1] * 1 * 1, out_features)

    def forward(self, x):
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """``[B, latent_dim] -> [B, 1, 28, 28]`` logits (the caller applies the sigmoid)."""

    def __init__(self, latent_dim: int, width: float = 1.0):
        super().__init__()
        c0, c1, c2 = (_ch(c, width) for c in (1024, 512, 256))
        self.c0 = c0
        self.fc = nn.Sequential(nn.Linear(latent_dim, 7 * 7 * c0), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c0, c1, 4, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, c2, 4, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.ConvTranspose2d(c2, 1, 3, 1, 1),
        )

    def forward(self, z):
        return self.net(self.fc(z).view(-1, self.c0, 7, 7))
