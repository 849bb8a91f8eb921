"""The DCGAN-style encoder/decoder shared by the VAE and WAE baselines (and AEF).

Widths follow the WAE reference code's MNIST config (Tolstikhin et al. 2018, WAE; their published code): encoder
128 → 256 → 512 → 1024 channels of 4×4 stride-2 convolutions with batch norm and
ReLU; decoder linear to (H/4)×(W/4)×1024 (7×7 on 28×28 images), two 4×4 stride-2 transposed convs
(512, 256) and a stride-1 transposed conv to the image's channels. ``width`` multiplies every
channel count (1.0 = reference; CPU presets use less). ``image_shape`` is the per-sample
[C, H, W], the dataset's (the harness sets it in the model config).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def _ch(base: int, width: float) -> int:
    return max(1, round(base * width))


def _check_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    c, h, w = (int(s) for s in image_shape)
    if h % 4 or w % 4 or h < 16 or w < 16:
        raise ValueError(f"the DCGAN nets need a height and width that are multiples of 4 and at least 16, "
                         f"got image_shape {list(image_shape)}")
    return c, h, w


class ConvEncoder(nn.Module):
    """``[B, C, H, W] -> [B, out_features]``.

    Padding 1 on the 4×4 stride-2 convs halves each side, rounding down: 28 → 14 → 7 → 3 → 1
    (the reference code's TF 'SAME' padding gives 4 and 2 at the last two; the head is sized
    from the actual output, so this only changes the head's input size).
    """

    def __init__(self, out_features: int, width: float = 1.0, *, image_shape: Sequence[int]):
        super().__init__()
        c, h, w = _check_shape(image_shape)
        chans = [c] + [_ch(k, width) for k in (128, 256, 512, 1024)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(chans[-1] * (h // 16) * (w // 16), out_features)

    def forward(self, x):
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """``[B, latent_dim] -> [B, C, H, W]`` logits (the caller applies the sigmoid)."""

    def __init__(self, latent_dim: int, width: float = 1.0, *, image_shape: Sequence[int]):
        super().__init__()
        c, h, w = _check_shape(image_shape)
        c0, c1, c2 = (_ch(k, width) for k in (1024, 512, 256))
        self.base = (c0, h // 4, w // 4)  # two stride-2 transposed convs double each side twice
        self.fc = nn.Sequential(nn.Linear(latent_dim, c0 * (h // 4) * (w // 4)), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c0, c1, 4, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, c2, 4, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.ConvTranspose2d(c2, c, 3, 1, 1),
        )

    def forward(self, z):
        return self.net(self.fc(z).view(-1, *self.base))
