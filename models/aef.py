"""AEF, autoencoders within flows: the "center" variant, trained by exact maximum likelihood.

Silvestri, Roos & Ambrogioni, *Deterministic training of generative autoencoders using invertible
layers* (arXiv 2205.09546, ICLR 2023 submission; "AEF paper" below). The first AEF family of that
paper partitions the (dequantised, logit-transformed) pixels ``y`` by a fixed mask into a *core*
``y_c`` of d pixels (d = latent size) and a *shell* ``y_s`` of the other D - d, and builds one
invertible map ``y -> (z, eps)`` from a free-form encoder and decoder, each used as an affine layer:

    z   = mu_enc(y_s) + sigma_enc(y_s) * y_c                (encoder: affine in the core)
    eps = (y_s - mu_dec(z)) / sigma_dec                     (decoder: affine in the shell)
    log p(y) = log N(z; 0, I) + log N(eps; 0, I) + sum log sigma_enc - sum_shell log sigma_dec

i.e. the shell is Gaussian around the decoder's output, N(y_s; mu_dec(z), sigma_dec^2) with one
learned scale per pixel, and the prior on z is N(0, I). The map is triangular (first (y_c, y_s) ->
(z, y_s), then (z, y_s) -> (z, eps)), so its log-det is the sum of the two diagonal blocks'
log-scales and the likelihood is exact (no bound, no sampling). Sampling inverts it: draw z,
decode the shell (eps = 0), encode the shell, solve for the core.

The paper's numbered equations are not cited by number here: its full text was not at hand
when this was written (docs/aef.md says what was, and which choices follow the authors' public
code). The equations above are the AEF paper's partitioned-AEF construction written out.

Encoder and decoder are the DCGAN-style nets of the VAE baseline (``baselines.nets``) at the
same width, so an AEF and a VAE of one preset are architecture-identical (as in the AEF paper's
comparisons). Paper-silent choices are fields of :class:`AEFConfig` (see its docstring).
"""

# No ``from __future__ import annotations``: AEFConfig's field types must stay real types for
# the config loader that type-checks them (as in models/pie.py).
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from baselines.nets import ConvDecoder, ConvEncoder
from models.contract import GenerativeEncoder
from models.flows import Bijector, LogitTransform, Shape
from models.settings import image_shape_setting, setting

LOG_2PI = math.log(2 * math.pi)


@dataclass
class AEFConfig:
    """Configuration of :class:`AEF` (the AEF paper's partitioned "center" model).

    From the AEF paper / the issue: the center mask, the affine encoder/decoder layers, a
    per-pixel learned decoder scale, the N(0, I) prior, exact maximum likelihood on dequantised
    pixels. Harness choices where the paper (as available here) is silent, all switchable:

    - ``logit_alpha`` and ``input_norm``: the input transform ``logit(alpha + (1 - 2 alpha) x)``
      then a per-channel ActNorm, with the MNIST alpha of the authors' public code (1e-6);
    - ``encoder_scale`` / ``min_scale``: sigma_enc = softplus(a) + min_scale (the authors' code
      adds a 1e-5 floor to a positive scale);
    - ``init_log_scale``: the decoder's initial log sigma (in ActNorm units);
    - the mask's tie-break: pixels by distance to the image centre, ties in raster order;
    - Adam's beta1 is the harness's (train.beta1), the VAE's, so that the comparison with the
      VAE changes the objective alone.

    Not built: the authors' optional MAF flows on the core and on the prior (the issue's model
    is the plain N(0, I) one). docs/aef.md lists every difference.
    """

    # Size d of the code z = number of core pixels (Table 1 uses 8).
    latent_dim: int = setting(8, ge=1, le=4096)
    # Channel multiplier of the DCGAN encoder/decoder (baselines.nets); set it to the VAE's.
    width: float = setting(1.0, gt=0, le=4)
    # How the harness maps 8-bit pixels to inputs: (k + u) / 256, a proper density on [0, 1]^D.
    preprocessing: Literal["unit", "dequantize"] = setting("dequantize")
    # alpha of logit(alpha + (1 - 2 alpha) x); 1e-6 is the authors' MNIST value (PIE uses 0.05).
    logit_alpha: float = setting(1e-6, gt=0, lt=0.5)
    # "actnorm": learned per-channel affine after the logit, initialised from the first training
    # batch to zero mean / unit variance (Kingma & Dhariwal 2018, Glow; the authors' code has
    # one). "none": the logit alone. Its log-det is part of log_prob either way.
    input_norm: Literal["actnorm", "none"] = setting("actnorm")
    # sigma_enc = softplus(a) + min_scale ("softplus") or exp(a) + min_scale ("exp").
    encoder_scale: Literal["softplus", "exp"] = setting("softplus")
    # Floor of sigma_enc: keeps log sigma_enc finite and the core solve of decode bounded.
    min_scale: float = setting(1e-5, gt=0, le=1)
    # "per_pixel": one learned sigma_dec per shell pixel (the AEF paper). "shared": one for all.
    decoder_scale: Literal["per_pixel", "shared"] = setting("per_pixel")
    # Initial log sigma_dec, in the (ActNorm-normalised) logit space of the shell.
    init_log_scale: float = setting(0.0, unbounded=True)
    # Per-sample image shape [C, H, W]: the harness sets the dataset's (bench.datasets). With C > 1
    # the core is the first channel's centre pixels.
    image_shape: list[int] = image_shape_setting()


def center_mask_indices(d: int, height: int, width: int) -> torch.Tensor:
    """Flat indices (row-major) of the ``d`` pixels nearest the image centre, ``[d]`` sorted.

    Distance is to the geometric centre ((H - 1) / 2, (W - 1) / 2); pixels at equal distance
    are taken in raster order, so the choice is deterministic. Reference: the AEF paper's
    "center" mask (the core is the d pixels around the image centre).
    """
    if not 1 <= d < height * width:
        raise ValueError(f"the core must hold between 1 and {height * width - 1} pixels, got {d}")
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    dist2 = (2 * rows - (height - 1)) ** 2 + (2 * cols - (width - 1)) ** 2  # integers: exact ties
    order = torch.argsort(dist2, stable=True)
    return order[:d].sort().values


class ActNorm(Bijector):
    """``y = exp(log_s) * (x + b)`` per channel; log-det ``H * W * sum_c log_s_c``.

    Data-dependent initialisation (Glow, Kingma & Dhariwal 2018): the first forward pass in
    training mode sets ``b`` and ``log_s`` so that batch has zero mean and unit variance per
    channel; the ``initialized`` buffer keeps that in checkpoints.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-std.log())
        self.initialized.fill_(True)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (x.shape[2] * x.shape[3] * self.log_scale.sum()).expand(x.shape[0]).to(x.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(x)
        return (x + self.bias) * self.log_scale.exp(), self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y * (-self.log_scale).exp() - self.bias, -self._logdet(y)


class IdentityNorm(Bijector):
    """``input_norm="none"``: the identity, log-det 0."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y, y.new_zeros(y.shape[0])


class AEF(GenerativeEncoder):
    """AEF "center" (AEF paper): a DCGAN encoder and decoder as the affine layers of one flow.

    Pixels ``x`` in [0, 1] -> ``y = ActNorm(logit(alpha + (1 - 2 alpha) x))`` -> the core/shell
    map ``y -> (z, eps)`` of the module docstring, with ``z ~ N(0, I_d)`` and
    ``eps ~ N(0, I_{D-d})``. ``encode(x) = z``; ``decode(z)`` sets ``eps = 0`` (the shell at the
    decoder's mean) and solves for the core, so ``encode(decode_unclipped(z)) == z``.
    """

    has_density = True
    allows_bf16 = False  # log-dets and the core solve stay in fp32, as for PIE's flows

    def __init__(self, cfg: AEFConfig) -> None:
        super().__init__()
        self._validate(cfg)
        self.cfg = cfg
        self.latent_dim = int(cfg.latent_dim)
        self.preprocessing = cfg.preprocessing
        self.image_shape: Shape = tuple(int(s) for s in cfg.image_shape)
        c, h, w = self.image_shape
        self.n_dims = c * h * w
        core = center_mask_indices(self.latent_dim, h, w)
        shell_mask = torch.ones(self.n_dims)
        shell_mask[core] = 0.0
        self.register_buffer("core_index", core, persistent=False)
        self.register_buffer("shell_index", torch.nonzero(shell_mask).flatten(), persistent=False)
        self.register_buffer("shell_mask", shell_mask.view(1, *self.image_shape), persistent=False)
        self.logit = LogitTransform(cfg.logit_alpha)
        self.norm: Bijector = ActNorm(c) if cfg.input_norm == "actnorm" else IdentityNorm()
        # -> (mu_enc, a), a -> sigma_enc; and mu_dec, in the flow space y
        self.encoder = ConvEncoder(2 * self.latent_dim, cfg.width, image_shape=self.image_shape)
        self.decoder = ConvDecoder(self.latent_dim, cfg.width, image_shape=self.image_shape)
        scale_shape = (1, *self.image_shape) if cfg.decoder_scale == "per_pixel" else ()
        self.dec_log_scale = nn.Parameter(torch.full(scale_shape, float(cfg.init_log_scale)))

    @property
    def log_prob_estimator(self) -> str:
        return ("exact log-density by change of variables through the core/shell coupling "
                f"(AEF, Silvestri et al. 2022; center mask, d={self.latent_dim})")

    @staticmethod
    def _validate(cfg: AEFConfig) -> None:
        pixels = math.prod(cfg.image_shape[1:])  # the core lies in one channel
        if cfg.latent_dim < 1 or cfg.latent_dim >= pixels:
            raise ValueError(f"latent_dim must lie in [1, {pixels - 1}], got {cfg.latent_dim}")
        if not cfg.width > 0:
            raise ValueError(f"width must be > 0, got {cfg.width}")
        if not cfg.min_scale > 0:
            raise ValueError(f"min_scale must be > 0, got {cfg.min_scale}")
        if not 0 < cfg.logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5), got {cfg.logit_alpha}")
        for name, allowed in (("preprocessing", ("unit", "dequantize")), ("input_norm", ("actnorm", "none")),
                              ("encoder_scale", ("softplus", "exp")), ("decoder_scale", ("per_pixel", "shared"))):
            if getattr(cfg, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")

    # ------------------------------------------------------------------ pixel <-> flow space
    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"AEF expects images [B, {', '.join(map(str, self.image_shape))}], got {list(x.shape)}")

    def to_flow_space(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [0, 1] -> ``y`` (logit, then ActNorm), and the log-det of that map, ``[B]``."""
        self._check_images(x)
        y, ld_logit = self.logit(x)
        y, ld_norm = self.norm(y)
        return y, ld_logit + ld_norm

    def from_flow_space(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_flow_space` (unclipped pixels)."""
        return self.logit.inverse(self.norm.inverse(y)[0])[0]

    # ------------------------------------------------------------------ the core/shell map
    def _enc(self, shell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_enc, log sigma_enc), each ``[B, d]``, from the shell image (core pixels zeroed)."""
        mu, a = self.encoder(shell).chunk(2, dim=1)
        scale = F.softplus(a) if self.cfg.encoder_scale == "softplus" else a.exp()
        return mu, torch.log(scale + self.cfg.min_scale)

    def _dec_log_scale(self, like: torch.Tensor) -> torch.Tensor:
        """log sigma_dec broadcast to ``[1, C, H, W]`` (shared: one value everywhere)."""
        return self.dec_log_scale.to(like.dtype).expand(1, *self.image_shape)

    def embed(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The AEF bijection in flow space: ``y [B, C, H, W] -> (z [B, d], eps [B, D - d], logdet [B])``.

        ``z = mu_enc(y_s) + sigma_enc(y_s) * y_c``; ``eps = (y_s - mu_dec(z)) / sigma_dec``;
        ``logdet = sum log sigma_enc - sum_shell log sigma_dec`` (AEF paper, partitioned AEF).
        """
        flat = y.reshape(y.shape[0], self.n_dims)
        core = flat[:, self.core_index]
        shell = y * self.shell_mask  # the encoder sees the shell only: core pixels set to 0
        mu_e, log_s_e = self._enc(shell)
        z = mu_e + log_s_e.exp() * core
        log_s_d = self._dec_log_scale(y).reshape(1, self.n_dims)[:, self.shell_index]
        mu_d = self.decoder(z).reshape(y.shape[0], self.n_dims)[:, self.shell_index]
        eps = (flat[:, self.shell_index] - mu_d) * (-log_s_d).exp()
        return z, eps, log_s_e.sum(1) - log_s_d.sum(1)

    def unembed(self, z: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of :meth:`embed`: ``(z, eps) -> y``; ``eps = None`` puts the shell at mu_dec(z).

        Shell first (``y_s = mu_dec(z) + sigma_dec * eps``), then the encoder on that shell, then
        the core ``y_c = (z - mu_enc(y_s)) / sigma_enc(y_s)``: the AEF paper's sampling procedure.
        """
        b = z.shape[0]
        mu_d = self.decoder(z).reshape(b, self.n_dims)
        if eps is not None:
            log_s_d = self._dec_log_scale(z).reshape(1, self.n_dims)[:, self.shell_index]
            shell_vals = mu_d[:, self.shell_index] + log_s_d.exp() * eps
            mu_d = mu_d.index_copy(1, self.shell_index, shell_vals)
        shell = mu_d.view(b, *self.image_shape) * self.shell_mask
        mu_e, log_s_e = self._enc(shell)
        core = (z - mu_e) * (-log_s_e).exp()
        return shell.reshape(b, self.n_dims).index_copy(1, self.core_index, core).view(b, *self.image_shape)

    # ------------------------------------------------------------------ density
    @staticmethod
    def _log_standard_normal(v: torch.Tensor) -> torch.Tensor:
        return -0.5 * v.pow(2).sum(1) - 0.5 * v.shape[1] * LOG_2PI

    def _log_prob_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y, ld_in = self.to_flow_space(x)
        z, eps, ld_map = self.embed(y)
        return {"log_pz": self._log_standard_normal(z), "log_peps": self._log_standard_normal(eps),
                "logdet": ld_in + ld_map, "z": z, "eps": eps}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` in nats per image, ``[B]``, of dequantised pixels in [0, 1]^D.

        ``log N(z; 0, I) + log N(eps; 0, I) + log|det|`` of the whole map ``x -> (z, eps)``: the
        input transform's log-det plus ``sum log sigma_enc - sum_shell log sigma_dec``, i.e. the
        shell density ``N(y_s; mu_dec(z), sigma_dec^2)`` times the core's change of variables
        (AEF paper, exact likelihood of the partitioned AEF).
        """
        p = self._log_prob_parts(x)
        return p["log_pz"] + p["log_peps"] + p["logdet"]

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative exact log-likelihood per dimension (nats/dim, D = C·H·W), mean over the batch.

        Parts, per dimension: ``log_pz`` (prior on z), ``log_pshell`` (the shell's Gaussian,
        ``log N(eps; 0, I) - sum_shell log sigma_dec``), ``logdet`` (input transform plus
        ``sum log sigma_enc``).
        """
        p = self._log_prob_parts(x)
        d = self.n_dims
        log_pz, log_peps, logdet = p["log_pz"].mean() / d, p["log_peps"].mean() / d, p["logdet"].mean() / d
        log_sd = self._dec_log_scale(x).reshape(1, d)[:, self.shell_index].sum() / d
        return {"loss": -(log_pz + log_peps + logdet), "log_pz": log_pz, "log_pshell": log_peps - log_sd,
                "logdet": logdet + log_sd}

    # ------------------------------------------------------------------ codes and images
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``z = mu_enc(y_s) + sigma_enc(y_s) * y_c``: ``[B, C, H, W]`` in [0, 1] -> ``[B, d]``."""
        y, _ = self.to_flow_space(x)
        return self.embed(y)[0]

    def decode_unclipped(self, z: torch.Tensor) -> torch.Tensor:
        """The image of ``z`` with the shell at the decoder's mean, not clipped, ``[B, C, H, W]``.

        The exact right inverse of :meth:`encode`; values may leave [0, 1] by up to
        ``alpha / (1 - 2 alpha)`` (the logit transform's margin) where mu_dec does.
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"AEF.decode expects [B, {self.latent_dim}], got {list(z.shape)}")
        return self.from_flow_space(self.unembed(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`decode_unclipped` clipped to [0, 1]."""
        return self.decode_unclipped(z).clamp(0.0, 1.0)

    @torch.no_grad()
    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """How the two affine layers are used, on a batch of model inputs.

        - ``enc_log_scale``: mean log sigma_enc; large means the core is nearly determined by
          the shell (z keeps little of it).
        - ``dec_log_scale``: mean log sigma_dec over the shell pixels (flow-space units).
        - ``shell_resid_ratio``: mean eps^2; near 1 when sigma_dec matches the shell's residuals.
        """
        y, _ = self.to_flow_space(x)
        _, log_s_e = self._enc(y * self.shell_mask)
        _, eps, _ = self.embed(y)
        log_sd = self._dec_log_scale(y).reshape(1, self.n_dims)[:, self.shell_index]
        return {"enc_log_scale": float(log_s_e.mean()), "dec_log_scale": float(log_sd.mean()),
                "shell_resid_ratio": float(eps.pow(2).mean())}
