"""Learning curves of what Table 1 measures, probed at the end of training epochs.

Every ``eval.track_every`` epochs (and at the last epoch, and at the cap ``train.max_epochs``
of a run trained until converged) :class:`Tracker` measures, on
fixed seeded inputs, the metric table's ``tracked`` entries (:mod:`bench.metrics.table`,
with the table's own functions): sharpness of ``eval.track_samples`` samples at T = 1 (the
same latent draws every epoch), their FD-LeNet against the real test images' features,
their corner artefact score, and the reconstruction MSE of the first ``eval.track_samples``
validation images. A model with a ``diagnostics(x)`` method
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

from bench.config import Config
from bench.data import ImageData, preprocess
from bench.evaluate import Evaluation, Evaluator, batched, generate
from bench.metrics import names as N
from bench.metrics.table import Metric, tracked_metrics

PREFIX = "track_"
REAL_PREFIX = "track_real_"
DIAG_PREFIX = N.DIAG_PREFIX
TRACK_SAMPLE_OFFSET = 3141593  # z of the tracked samples: fixed per run, the same every epoch
TRACK_NOISE_OFFSET = 2718281  # dequantisation noise of the tracked validation images
TRACKED = tuple(m.name for m in tracked_metrics())  # from the metric table, at import
# Inputs the tracker draws from the validation images (the others: from the tracked samples).
VAL_INPUTS = {"x", "recon", "recon_errors"}


def column(metric: str) -> str:
    """train_log.csv column of a tracked metric."""
    return f"{PREFIX}{metric}"


class Tracker:
    """``on_epoch_end`` callback for :func:`bench.train.train_model`; see the module docstring."""

    def __init__(self, data: ImageData, config: Config, seed: int, evaluator: Evaluator | None = None):
        self.data, self.cfg, self.seed = data, config.eval, seed
        self.evaluator = evaluator or Evaluator()  # the classifier and real statistics (a run: Evaluator.of(ctx))
        self.every = config.eval.track_every
        # The last epoch of a fixed-length run, and the cap of one trained until converged.
        self.last_epochs = {config.train.epochs, config.train.max_epochs if config.train.until_converged else 0}
        self.n_val = min(self.cfg.track_samples, data.val_images.shape[0])
        self._since = time.perf_counter()  # end of the previous probe (start: construction)
        self._epoch_since = 0
        self._real: dict[str, float] | None = None

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch in self.last_epochs)

    def _evaluation(self, model, device: torch.device) -> Evaluation:
        # The curves keep the process's threads (no one_cpu_thread): those of earlier runs did.
        return Evaluation(self.evaluator, self.data, self.cfg, model, self.seed, device=device, one_thread=False)

    def _real_values(self, ev: Evaluation, metrics: list[Metric]) -> dict[str, float]:
        """The real data's values at the tracked sample size (once per tracker)."""
        if self._real is None:
            n = min(self.cfg.track_samples, self.data.val_images.shape[0])
            out = {m.name: float("nan") for m in metrics}
            if n >= 2:
                real = self._evaluation(None, ev.device)
                real.values.update({"extractor": ev.get("extractor"), "real": ev.get("real"),
                                    ("samples", "t1"): self.data.val_images[:n].float() / 255.0})
                out = {m.name: real.value(m, "t1")[0] for m in metrics}
            self._real = {f"{REAL_PREFIX}{k}": v for k, v in out.items()}
        return self._real

    @torch.inference_mode()
    def probe(self, model) -> dict[str, float]:
        """The tracked values of ``model`` now (no timing, no epoch bookkeeping)."""
        cfg = self.cfg
        model.eval()
        param = next(model.parameters())
        devices = [param.device] if param.device.type == "cuda" else []
        tracked = tracked_metrics()
        of_samples = [m for m in tracked if not VAL_INPUTS.intersection(m.needs)]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + TRACK_SAMPLE_OFFSET)  # stray global-RNG use is seeded too
            ev = self._evaluation(model, param.device)
            ev.get("real")  # the classifier and the real statistics first (a classifier trained here draws)
            ev.values[("samples", "t1")] = generate(model, cfg.track_samples, 1.0, cfg,
                                                    self.seed + TRACK_SAMPLE_OFFSET)
            out = {column(m.name): ev.value(m)[0] for m in of_samples}
            out.update({column(m.name): float("nan") for m in tracked if m not in of_samples})
            if self.n_val > 0:
                gen = torch.Generator(device=self.data.val_images.device).manual_seed(self.seed + TRACK_NOISE_OFFSET)
                x = preprocess(self.data.val_images[:self.n_val], model.preprocessing, gen, param.dtype)
                ev.values.update({"x": x, "recon": batched(model.reconstruct, x, cfg.batch_size)})
                out.update({column(m.name): ev.value(m)[0] for m in tracked if m not in of_samples})
                out.update({f"{DIAG_PREFIX}{k}": float(v) for k, v in model.diagnostics(x).items()})
            out.update(self._real_values(ev, of_samples))
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


def make_tracker(data: ImageData, config: Config, seed: int, evaluator: Evaluator | None = None) -> Tracker | None:
    """The callback for a run, or None when tracking is off (``eval.track_every`` = 0)."""
    return Tracker(data, config, seed, evaluator) if config.eval.track_every > 0 else None
