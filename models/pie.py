"""PIE, the Pseudo-Invertible Encoder (anonymous ICLR 2019 submission), assembled from config.

Implements Eq. 4 (G(x) = z, G^-1(z) = F^-1([z, g(z)])), Eq. 17 (the approximate
log-likelihood that is maximised) and the architecture of Sec. 4-5.1 / Fig. 4: convolutional
blocks (checkerboard downsampling, K × [affine coupling (Eq. 18), Householder 1×1 conv
(Eq. 19)], split (Eq. 20)) followed by linear blocks (K × [coupling, Householder linear map],
split to a size, or no split).
"""

# No ``from __future__ import annotations`` here: PIEConfig's field types must stay real
# types (not strings) for the config loader that type-checks them.
import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import nn

from models.contract import GenerativeEncoder
from models.flows import (
    AffineCoupling,
    Bijector,
    CenterTransform,
    CheckerboardDownsample,
    HouseholderConv1x1,
    HouseholderLinear,
    LogitTransform,
    PseudoSplit,
    Sequential,
    Shape,
    SubnetFactory,
    conv_net,
    mlp,
)
from models.settings import image_shape_setting, setting


@dataclass
class PIEConfig:
    """Configuration of :class:`PIE`; the defaults are the paper's MNIST model (Sec. 5.1).

    Paper-silent choices made here (harness decisions, switchable): sub-network design and
    widths, the form of g, the scale clamp, the input transform and eps².

    Input transform: the flow's base density lives on all of R^D but pixels lie in [0, 1].
    ``"logit"`` (default, RealNVP's choice for images) maps ``x`` to
    ``logit(alpha + (1 - 2 alpha) x)``, so the model is a density on the open unit box and
    decoded images land in [0, 1] by construction (``alpha`` keeps pixels 0 and 1 finite);
    ``"center"`` (Glow's choice) uses ``x - 0.5``. Either way the transform's log-det is
    part of ``log_prob``, so likelihoods are densities of ``x`` in [0, 1] pixel units.
    """

    # Size d of the code z (Table 1 uses 8; Fig. 7 uses 10).
    latent_dim: int = setting(8, ge=1, le=4096)
    # Variance (not std) eps² of every residual Gaussian N(r; g(z), eps² I); paper: 0.01/0.1/1.
    eps2: float = setting(0.1, gt=0)
    # True: a learned g_l per split (the paper); False: g ≡ 0 (ablation; eps2=1 -> RealNVP).
    learned_g: bool = setting(True)
    # How the harness maps 8-bit pixels to inputs; dequantised for a proper density.
    preprocessing: Literal["unit", "dequantize"] = setting("dequantize")
    # Per-sample image shape [C, H, W]: the harness sets the dataset's (bench.datasets).
    image_shape: list[int] = image_shape_setting()
    # Map from [0, 1] pixels to the flow's input, see the class docstring.
    input_transform: Literal["logit", "center"] = setting("logit")
    # alpha of the logit transform logit(alpha + (1 - 2 alpha) x), in (0, 0.5).
    logit_alpha: float = setting(0.05, gt=0, lt=0.5)
    # One conv block per entry; each keeps this fraction of its channels at its split.
    conv_keep: list[float] = setting(default_factory=lambda: [0.5, 0.5], gt=0, lt=1)
    # Sizes the linear blocks reduce to, in order, before a last block reducing to latent_dim.
    linear_sizes: list[int] = setting(default_factory=lambda: [64], ge=1, le=65536)
    # Linear blocks at latent_dim with no split, after the reduction to latent_dim (paper: 1).
    final_blocks: int = setting(1, ge=0, le=64)
    # K_l: [coupling, Householder map] pairs per block (paper: 3).
    couplings_per_block: int = setting(3, ge=1, le=64)
    # Householder reflections per 1×1 conv / linear map (paper: 3). 0 means "full": as many as
    # the map's width C, so the map can be any orthogonal matrix of determinant (-1)^C
    # (3 reflections only move a 3-d subspace of a 196-wide map).
    n_reflections: int = setting(3, ge=0, le=65536)
    # Hidden channels of the conv coupling sub-networks (3×3, 1×1, 3×3 convolutions).
    coupling_conv_hidden: int = setting(64, ge=1, le=4096)
    # Hidden units of the MLP coupling sub-networks (two hidden layers).
    coupling_linear_hidden: int = setting(256, ge=1, le=8192)
    # Hidden channels of the conv g_l networks (same layout as the conv sub-networks).
    g_conv_hidden: int = setting(64, ge=1, le=4096)
    # Hidden units of the MLP g_l networks (two hidden layers).
    g_linear_hidden: int = setting(256, ge=1, le=8192)
    # Coupling scales are s = exp(c tanh(a / c)) with c = scale_clamp, so s in (e^-c, e^c).
    scale_clamp: float = setting(2.0, gt=0)
    # "affine": Eq. 18 (the paper). "additive": s ≡ 1, volume-preserving (ablation): the flow
    # cannot shrink the residuals for free before a split (docs/results.md, "Does eps² matter?").
    coupling: Literal["affine", "additive"] = setting("affine")


class PIEBlock(nn.Module):
    """One PIE block: an invertible ``flow`` on ``in_shape`` then an optional ``split``.

    Attributes:
        in_shape: per-sample input shape (the model reshapes to it, which flattens the
            output of the last conv block for the first linear block).
        out_shape: per-sample shape after ``flow`` (before the split).
    """

    def __init__(self, in_shape: Shape, flow: Sequential, split: PseudoSplit | None) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = flow.output_shape(self.in_shape)
        if split is not None:
            split.output_shape(self.out_shape)
        self.flow = flow
        self.split = split

    @property
    def z_shape(self) -> Shape:
        """Per-sample shape passed on to the next block."""
        return self.out_shape if self.split is None else self.split.z_shape


class PIE(GenerativeEncoder):
    """The Pseudo-Invertible Encoder: a multi-scale flow whose splits drop variables.

    ``F(x) = [z, r_1, ..., r_L]``; ``encode(x) = z``; ``decode(z)`` walks the blocks back,
    filling each dropped residual with ``g_l(z_l)``. Training maximises Eq. 17::

        log p(x) ≈ log N(z; 0, I) + Σ_l log N(r_l; g_l(z_l), eps² I) + Σ_lk log|det J_kl|

    plus the log-det of the input transform (see :class:`PIEConfig`).

    Reference: PIE paper Eq. 4, 17; Sec. 4, 5.1; Fig. 4.
    """

    has_density = True

    def __init__(self, cfg: PIEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_dim = int(cfg.latent_dim)
        self.preprocessing = cfg.preprocessing
        self._validate(cfg)
        self.image_shape: Shape = tuple(int(s) for s in cfg.image_shape)
        self.input_transform: Bijector = (
            LogitTransform(cfg.logit_alpha) if cfg.input_transform == "logit" else CenterTransform()
        )
        self.blocks = nn.ModuleList(self._build_blocks(cfg))

    @property
    def log_prob_estimator(self) -> str:
        return f"Eq. 17 approximation of log p(x); its error depends on eps2 (eps2={self.cfg.eps2})"

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _validate(cfg: PIEConfig) -> None:
        if not cfg.eps2 > 0:
            raise ValueError(f"eps2 is a variance and must be > 0, got {cfg.eps2}")
        if not cfg.scale_clamp > 0:
            raise ValueError(f"scale_clamp must be > 0, got {cfg.scale_clamp}")
        if cfg.coupling not in ("affine", "additive"):
            raise ValueError(f"coupling must be 'affine' or 'additive', got {cfg.coupling!r}")
        if cfg.n_reflections < 0:
            raise ValueError(
                f"n_reflections must be >= 1, or 0 for the map's full width, got {cfg.n_reflections}"
            )
        if cfg.input_transform not in ("logit", "center"):
            raise ValueError(
                f"input_transform must be 'logit' or 'center', got {cfg.input_transform!r}"
            )
        if cfg.preprocessing not in ("unit", "dequantize"):
            raise ValueError(
                f"preprocessing must be 'unit' or 'dequantize', got {cfg.preprocessing!r}"
            )
        if len(cfg.image_shape) != 3 or min(cfg.image_shape) < 1:
            raise ValueError(f"image_shape must be [C, H, W], positive, got {cfg.image_shape}")
        for name in (
            "couplings_per_block",
            "coupling_conv_hidden",
            "coupling_linear_hidden",
            "g_conv_hidden",
            "g_linear_hidden",
        ):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.final_blocks < 0:
            raise ValueError(f"final_blocks must be >= 0, got {cfg.final_blocks}")
        if cfg.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {cfg.latent_dim}")

    @staticmethod
    def _coupling(shape: Shape, subnet: SubnetFactory, cfg: PIEConfig) -> AffineCoupling:
        return AffineCoupling(shape, subnet, cfg.scale_clamp, additive=cfg.coupling == "additive")

    @staticmethod
    def _reflections(width: int, cfg: PIEConfig) -> int:
        """Householder reflections of a map of this width (``n_reflections``; 0 = the width)."""
        return cfg.n_reflections if cfg.n_reflections > 0 else width

    def _build_blocks(self, cfg: PIEConfig) -> list[PIEBlock]:
        k = cfg.couplings_per_block
        conv_sub = partial(conv_net, hidden=cfg.coupling_conv_hidden)
        lin_sub = partial(mlp, hidden=cfg.coupling_linear_hidden)
        blocks: list[PIEBlock] = []
        shape: Shape = self.image_shape
        for i, keep in enumerate(cfg.conv_keep, start=1):
            down = CheckerboardDownsample()
            try:
                c, h, w = down.output_shape(shape)
            except ValueError as err:
                raise ValueError(f"conv block {i} cannot downsample {list(shape)}: {err}") from None
            layers: list[Bijector] = [down]
            for _ in range(k):
                layers.append(self._coupling((c, h, w), conv_sub, cfg))
                layers.append(HouseholderConv1x1(c, self._reflections(c, cfg)))
            kept = keep * c
            if not (0 < keep < 1 and abs(kept - round(kept)) < 1e-9 and 1 <= round(kept) < c):
                raise ValueError(
                    f"conv block {i} keeps fraction {keep} of {c} channels, which is not a whole "
                    f"number of channels between 1 and {c - 1}"
                )
            g = conv_net(round(kept), c - round(kept), cfg.g_conv_hidden) if cfg.learned_g else None
            split = PseudoSplit((c, h, w), round(kept), cfg.eps2, g)
            blocks.append(PIEBlock(shape, Sequential(*layers), split))
            shape = blocks[-1].z_shape

        size = math.prod(shape)
        targets = [*cfg.linear_sizes, cfg.latent_dim]
        for j, target in enumerate(targets, start=1):
            if not 1 <= target < size:
                what = "latent_dim" if j == len(targets) else f"linear_sizes[{j - 1}]"
                raise ValueError(
                    f"{what}={target} does not fit: each linear block must reduce its input of "
                    f"size {size} to a size between 1 and {size - 1}"
                )
            blocks.append(self._linear_block(size, target, lin_sub, cfg))
            size = target
        for _ in range(cfg.final_blocks):
            blocks.append(self._linear_block(size, None, lin_sub, cfg))
        return blocks

    @classmethod
    def _linear_block(
        cls, size: int, keep: int | None, lin_sub: SubnetFactory, cfg: PIEConfig
    ) -> PIEBlock:
        if size < 2:
            raise ValueError(
                f"a linear block of size {size} cannot hold a coupling layer (it needs >= 2 "
                "features); raise latent_dim or set final_blocks to 0"
            )
        layers: list[Bijector] = []
        for _ in range(cfg.couplings_per_block):
            layers += [
                cls._coupling((size,), lin_sub, cfg),
                HouseholderLinear(size, cls._reflections(size, cfg)),
            ]
        split = None
        if keep is not None:
            g = mlp(keep, size - keep, cfg.g_linear_hidden) if cfg.learned_g else None
            split = PseudoSplit((size,), keep, cfg.eps2, g)
        return PIEBlock((size,), Sequential(*layers), split)

    def level_sizes(self) -> list[int]:
        """Dimension of the input and after every split, e.g. ``[784, 392, 196, 64, 10]``."""
        sizes = [math.prod(self.image_shape)]
        sizes += [math.prod(b.z_shape) for b in self.blocks if b.split is not None]
        return sizes

    # ------------------------------------------------------------------ forward maths
    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"PIE expects images [B, {', '.join(map(str, self.image_shape))}], "
                f"got {list(x.shape)}"
            )

    def _forward(
        self, x: torch.Tensor, with_density: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``x -> (z [B, d], [log N(r_l; g_l(z_l), eps² I)]_l of [B], total log-det [B])``."""
        self._check_images(x)
        h, logdet = self.input_transform(x)
        log_prs: list[torch.Tensor] = []
        for block in self.blocks:
            h = h.reshape(h.shape[0], *block.in_shape)
            h, ld = block.flow(h)
            logdet = logdet + ld
            if block.split is not None:
                if with_density:
                    h, _, log_pr = block.split(h)
                    log_prs.append(log_pr)
                else:
                    h, _ = block.split.split(h)
        return h.reshape(h.shape[0], self.latent_dim), log_prs, logdet

    @staticmethod
    def _log_standard_normal(z: torch.Tensor) -> torch.Tensor:
        return -0.5 * z.pow(2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)

    # ------------------------------------------------------------------ public API
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``G(x) = z``: ``[B, C, H, W]`` images in [0, 1] -> ``[B, latent_dim]``."""
        return self._forward(x, with_density=False)[0]

    def decode_unclipped(self, z: torch.Tensor) -> torch.Tensor:
        """``G^-1(z) = F^-1([z, g(z)])`` level by level, without clipping, ``[B, C, H, W]``.

        The exact right inverse of :meth:`encode` (``encode(decode_unclipped(z)) == z``);
        values may leave [0, 1] slightly (by up to ``alpha / (1 - 2 alpha)`` for ``"logit"``).
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"PIE.decode expects [B, {self.latent_dim}], got {list(z.shape)}")
        h = z
        for block in reversed(self.blocks):
            h = h.reshape(h.shape[0], *block.z_shape)
            if block.split is not None:
                h = block.split.merge(h)
            h, _ = block.flow.inverse(h)
        h = h.reshape(h.shape[0], *self.image_shape)
        return self.input_transform.inverse(h)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`decode_unclipped` clipped to [0, 1] images, ``[B, C, H, W]``."""
        return self.decode_unclipped(z).clamp(0.0, 1.0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 17 in nats per image, ``[B]``, including the input transform's log-det.

        An approximation of log p(x) whose error depends on eps² (Sec. 3.2); with
        ``learned_g=False`` and ``eps2=1`` it is the exact log-density of a multi-scale flow.
        """
        z, log_prs, logdet = self._forward(x, with_density=True)
        return self._log_standard_normal(z) + sum(log_prs, torch.zeros_like(logdet)) + logdet

    @torch.no_grad()
    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """How the split constraint is met, on a batch of images in [0, 1] (as the model sees them).

        - ``resid_ratio_l<l>``: E‖r_l − g_l(z_l)‖² / (d_l · eps²), d_l the discarded dims of
          split l, in the flow's own coordinates. Near 1 means the flow met eps² by scaling
          r_l (the fit of N(r; g(z), eps² I) is as good as its variance allows); the
          residual term alone does not say whether r is small in pixel terms.
        - ``flow_logdet_per_dim``: mean log|det| of all coupling/Householder layers, per
          dimension, without the input transform's (which does not depend on the flow).
          A flow that meets a smaller eps² by shrinking r pays for it here.
        - ``recon_mse_rg``: per-pixel squared error of decoding with r_l = g_l(z_l) at every
          level, i.e. of :meth:`reconstruct` — what the residual constraint buys in pixels.

        Reference: Eq. 17 and 20 of the PIE paper; docs/results.md "Does eps² matter?".
        """
        self._check_images(x)
        h, _ = self.input_transform(x)
        flow_logdet = h.new_zeros(h.shape[0])
        out: dict[str, float] = {}
        level = 0
        for block in self.blocks:
            h = h.reshape(h.shape[0], *block.in_shape)
            h, ld = block.flow(h)
            flow_logdet = flow_logdet + ld
            if block.split is not None:
                level += 1
                h, r = block.split.split(h)
                err = (r - block.split.predict_residual(h)).pow(2).mean()
                out[f"resid_ratio_l{level}"] = float(err / block.split.eps2)
        out["flow_logdet_per_dim"] = float(flow_logdet.mean() / math.prod(self.image_shape))
        recon = self.decode(h.reshape(h.shape[0], self.latent_dim))  # = reconstruct(x)
        out["recon_mse_rg"] = float((recon - x).pow(2).mean())
        return out

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative Eq. 17 per dimension (nats/dim, D = C·H·W), mean over the batch.

        Returns ``loss = -(log_pz + log_pr + logdet)`` and its parts, all per dimension:
        ``log_pz``, ``log_pr`` (sum over levels), ``log_pr_l1``, ``log_pr_l2``, ... (one per
        split, in encoding order) and ``logdet`` (all layers plus the input transform).
        """
        z, log_prs, logdet = self._forward(x, with_density=True)
        dims = math.prod(self.image_shape)
        log_pz = self._log_standard_normal(z).mean() / dims
        parts = {f"log_pr_l{i}": lp.mean() / dims for i, lp in enumerate(log_prs, start=1)}
        log_pr = sum(parts.values(), torch.zeros_like(log_pz))
        logdet_mean = logdet.mean() / dims
        out = {
            "loss": -(log_pz + log_pr + logdet_mean),
            "log_pz": log_pz,
            "log_pr": log_pr,
            "logdet": logdet_mean,
        }
        out.update(parts)
        return out
