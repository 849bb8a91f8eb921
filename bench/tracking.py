"""Learning curves of what Table 1 measures, probed at the end of training epochs.

Every ``eval.track_every`` epochs (and at the last epoch, and at the cap ``train.max_epochs``
of a run trained until converged) :class:`Tracker` measures, on
fixed seeded inputs, the numbers Table 1 reports: sharpness of ``eval.track_samples``
samples at T = 1 (the same latent draws every epoch), their FD-LeNet against the real
test images' features, their corner artefact score, and the reconstruction MSE of the
first ``eval.track_samples`` validation images. A model with a ``diagnostics(x)`` method
adds its values as ``diag_<name>``. The real data's values at the same sample size (the
validation images standing in for samples) are logged as ``track_real_*`` so a figure
can draw them as reference lines.

The values go into the epoch's row of ``train_log.csv`` through ``train_model``'s
``on_epoch_end`` callback, hence into the checkpoint: a resumed run keeps its curve.
The probe forks the RNG and runs in inference mode, so training is unchanged by it.
``track_seconds`` is the probe's wall time and ``track_share`` that time over the mean
epoch time since the previous probe (the probe's cost; the target is at most 0.10).
"""

from __future__ import annotations

import time

import torch

from bench import metrics as M
from bench.classifier import get_classifier
from bench.config import Config
from bench.context import Context
from bench.data import ImageData, preprocess
from bench.evaluate import batched, generate, real_stats

PREFIX = "track_"
REAL_PREFIX = "track_real_"
DIAG_PREFIX = "diag_"
TRACK_SAMPLE_OFFSET = 3141593  # z of the tracked samples: fixed per run, the same every epoch
TRACK_NOISE_OFFSET = 2718281  # dequantisation noise of the tracked validation images
TRACKED = (M.SHARPNESS, M.FD_LENET, M.RECON_MSE, M.ARTEFACT_CORNER)  # the curves the convergence rule judges


def column(metric: str) -> str:
    """train_log.csv column of a tracked metric."""
    return f"{PREFIX}{metric}"


class Tracker:
    """``on_epoch_end`` callback for :func:`bench.train.train_model`; see the module docstring."""

    def __init__(self, data: ImageData, config: Config, seed: int, ctx: Context | None = None):
        self.data, self.cfg, self.seed = data, config.eval, seed
        self.ctx = ctx or Context()  # the extractor's cache folder, and its memo: loaded once per tracker at most
        self.every = config.eval.track_every
        # The last epoch of a fixed-length run, and the cap of one trained until converged.
        self.last_epochs = {config.train.epochs, config.train.max_epochs if config.train.until_converged else 0}
        self.n_val = min(self.cfg.track_samples, data.val_images.shape[0])
        self._since = time.perf_counter()  # end of the previous probe (start: construction)
        self._epoch_since = 0
        self._real: dict[str, float] | None = None

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch in self.last_epochs)

    def _real_values(self, extractor, real) -> dict[str, float]:
        """The real data's values at the tracked sample size (once per tracker)."""
        if self._real is None:
            n = min(self.cfg.track_samples, self.data.val_images.shape[0])
            out = {M.SHARPNESS: float("nan"), M.FD_LENET: float("nan"), M.ARTEFACT_CORNER: float("nan")}
            if n >= 2:
                val = self.data.val_images[:n].float() / 255.0
                mu, sigma = M.feature_stats(extractor.features(val, self.cfg.batch_size))
                out = {M.SHARPNESS: M.sharpness(val),
                       M.FD_LENET: M.frechet_distance_from_stats(mu, sigma, real.mu, real.sigma),
                       M.ARTEFACT_CORNER: M.corner_artefact(val)}
            self._real = {f"{REAL_PREFIX}{k}": v for k, v in out.items()}
        return self._real

    @torch.inference_mode()
    def probe(self, model) -> dict[str, float]:
        """The tracked values of ``model`` now (no timing, no epoch bookkeeping)."""
        cfg = self.cfg
        model.eval()
        param = next(model.parameters())
        devices = [param.device] if param.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + TRACK_SAMPLE_OFFSET)  # stray global-RNG use is seeded too
            extractor = get_classifier(self.data, cfg.classifier_epochs, batch_size=cfg.batch_size, ctx=self.ctx)
            real = real_stats(self.data, cfg, extractor)
            samples = generate(model, cfg.track_samples, 1.0, cfg, self.seed + TRACK_SAMPLE_OFFSET)
            mu, sigma = M.feature_stats(extractor.features(samples, cfg.batch_size))
            out = {column(M.SHARPNESS): M.sharpness(samples),
                   column(M.FD_LENET): M.frechet_distance_from_stats(mu, sigma, real.mu, real.sigma),
                   column(M.ARTEFACT_CORNER): M.corner_artefact(samples),
                   column(M.RECON_MSE): float("nan")}
            if self.n_val > 0:
                gen = torch.Generator(device=self.data.val_images.device).manual_seed(self.seed + TRACK_NOISE_OFFSET)
                x = preprocess(self.data.val_images[:self.n_val], model.preprocessing, gen, param.dtype)
                out[column(M.RECON_MSE)] = M.reconstruction_errors(x, batched(model.reconstruct, x, cfg.batch_size))[0]
                out.update({f"{DIAG_PREFIX}{k}": float(v) for k, v in model.diagnostics(x).items()})
            out.update(self._real_values(extractor, real))
        return out

    def __call__(self, model, epoch: int) -> dict[str, float]:
        self._epoch_since += 1
        if not self.due(epoch):
            return {}
        start = time.perf_counter()
        out = self.probe(model)
        end = time.perf_counter()
        epoch_seconds = (start - self._since) / self._epoch_since
        out[f"{PREFIX}seconds"] = end - start
        out[f"{PREFIX}share"] = (end - start) / epoch_seconds if epoch_seconds > 0 else float("nan")
        self._since, self._epoch_since = end, 0
        return out


def make_tracker(data: ImageData, config: Config, seed: int, ctx: Context | None = None) -> Tracker | None:
    """The callback for a run, or None when tracking is off (``eval.track_every`` = 0)."""
    return Tracker(data, config, seed, ctx) if config.eval.track_every > 0 else None
