"""Evaluation of one trained model: metric rows + saved artefacts (the real data's rows: :mod:`bench.evaluate_real`).

Everything runs in inference mode, in chunks of the evaluation batch size, with seeded
generators, and calls the model only through its contract (``models/contract.py``).
Returns rows ``(split, metric, value, note)`` for the tidy table; the runner does all
file I/O. The metric maths lives in :mod:`bench.metrics` (pure functions); this module
only gathers tensors and caches what does not depend on the model: the classifier
(:mod:`bench.classifier`) and the real test images' features, in an :class:`Evaluator`.
Which metrics, from which inputs, with which notes: the metric table, :mod:`bench.metrics.table`.
"""

from __future__ import annotations

import functools

import numpy as np
import threadpoolctl
import torch

from bench import metrics as M
from bench.classifier import FeatureExtractor, get_classifier
from bench.config import EvalConfig
from bench.context import Context
from bench.data import ImageData, preprocess
from bench.eval_inputs import (
    ALWAYS,
    LOG_PROB_OFFSET,
    MODEL_CALLS,
    PER_SET,
    PROBE_NOISE_OFFSET,
    SAMPLE_OFFSET,
    TEST_NOISE_OFFSET,
    Evaluation,
    MetricRow,
    RealStats,
    _n_test,
    _unit,
    batched,
    generate,
    log_prob_note,
    one_cpu_thread,
    phase,
    test_inputs,
)
from bench.metrics import table as T

__all__ = ["LOG_PROB_OFFSET", "PROBE_NOISE_OFFSET", "SAMPLE_OFFSET", "TEST_NOISE_OFFSET", "Evaluation", "Evaluator",
           "MetricRow", "RealStats", "batched", "evaluate_model", "generate", "log_prob_note",
           "model_seconds", "one_cpu_thread", "phase", "preprocess", "test_inputs"]


def model_seconds(timings: dict[str, float]) -> float:
    """Seconds spent inside the model during an evaluation (the ``model:`` phases)."""
    return sum(v for k, v in timings.items() if k.startswith("model:"))


class Evaluator:
    """Evaluates models with the metric table (:data:`bench.metrics.table.METRICS`).

    Owns what does not depend on the model, computed once per evaluator: the classifier
    (:mod:`bench.classifier`, from the context's cache folder, remembered in its memo) and the real
    test images' statistics. A command's evaluator is its context's (:meth:`of`), so the runs of
    one process (a worker keeps its first context) share both.
    """

    def __init__(self, ctx: Context | None = None):
        self.ctx = ctx or Context()
        self._real: dict[tuple, RealStats] = {}  # (data checksum, extractor, n_test, device) -> stats

    @classmethod
    def of(cls, ctx: Context) -> Evaluator:
        """The evaluator of ``ctx``: made on first use and kept in its memo (which never travels)."""
        if ctx.memo.evaluator is None:
            ctx.memo.evaluator = cls(ctx)
        return ctx.memo.evaluator

    def classifier(self, data: ImageData, cfg: EvalConfig) -> FeatureExtractor:
        return get_classifier(data, cfg.classifier_epochs, batch_size=cfg.batch_size, ctx=self.ctx)

    def real_stats(self, data: ImageData, cfg: EvalConfig, extractor: FeatureExtractor) -> RealStats:
        """Real test-image statistics, computed once for each (data, extractor, subset)."""
        n = _n_test(data, cfg)
        key = (data.checksum, extractor.cache_key, extractor.weights_hash, n, str(data.test_images.device))
        with one_cpu_thread(data.test_images.device):
            if key not in self._real:
                images = _unit(data.test_images[:n])
                feats = extractor.features(images, cfg.batch_size)
                mu, sigma = M.feature_stats(feats)
                mean, std = M.sharpness_stats(images)
                self._real[key] = RealStats(feats, mu, sigma, {}, mean, std)
            stats = self._real[key]
            if cfg.pr_k not in stats.radii:
                stats.radii[cfg.pr_k] = M.knn_radii(stats.feats, cfg.pr_k)
        return stats

    def sample_rows(self, images: torch.Tensor, data: ImageData, cfg: EvalConfig, at: str = "val",
                    set_name: str | None = None) -> list[MetricRow]:
        """The rows of the table's ``real`` entries (the feature metrics) of ``images`` as a set of samples."""
        ev = Evaluation(self, data, cfg, device=images.device)
        ev.values[("samples", at)] = images
        if set_name:
            ev.set_names[at] = set_name
        return [r for m in T.METRICS if m.real for r in ev.row(m, at)]

    def evaluate(self, model, data: ImageData, cfg: EvalConfig, seed: int,
                 timings: dict[str, float] | None = None) -> tuple[list[MetricRow], dict[str, np.ndarray]]:
        """See :func:`evaluate_model`."""
        return _blas_capped(self, model, data, cfg, seed, timings)

    def _evaluate(self, model, data: ImageData, cfg: EvalConfig, seed: int, timings) -> tuple[list, dict]:
        _check(cfg)
        model.eval()
        torch.manual_seed(seed + LOG_PROB_OFFSET)  # any stray global-RNG use is seeded too
        ev = Evaluation(self, data, cfg, model, seed, timings)
        needed = {(k, m.at) if k in PER_SET else k for m in T.METRICS for k in m.needs}
        for key in MODEL_CALLS:
            if key in ALWAYS or key in needed:
                ev.get(*(key if isinstance(key, tuple) else (key,)))
        rows = [r for m in T.METRICS for r in ev.row(m)]
        x, z_test, labels = ev.get("x"), ev.get("codes"), ev.get("labels")
        n_grid = cfg.grid_size**2
        with ev.timed("model: interpolations"):
            paths = interpolations(model, z_test, cfg).cpu().numpy()
        artefacts = {
            "samples_t1": ev.get("samples", "t1")[:n_grid].cpu().numpy(),
            "samples_t2": ev.get("samples", "t2")[:n_grid].cpu().numpy(),
            "recon_inputs": x[:n_grid].float().cpu().numpy(),
            "recon_outputs": ev.get("recon")[:n_grid].float().cpu().numpy(),
            "interpolations": paths,
            "test_latents": z_test.float().cpu().numpy(),
            "test_labels": labels.cpu().numpy().astype(np.int64),
        }
        return rows, artefacts


def interpolations(model, z: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    """Decode straight lines in z between codes (0, 1), (2, 3), ...: ``[pairs * steps, 1, 28, 28]``."""
    pairs = min(cfg.interp_pairs, len(z) // 2)
    za, zb = z[0:2 * pairs:2], z[1:2 * pairs:2]
    t = torch.linspace(0.0, 1.0, cfg.interp_steps, device=z.device, dtype=z.dtype).view(1, -1, 1)
    path = (za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t).reshape(pairs * cfg.interp_steps, -1)
    return batched(model.decode, path, cfg.batch_size).float()


def blas_threads_like_torch(fn):
    """Run ``fn`` with numpy/scipy's BLAS threads capped at torch's thread count.

    OpenBLAS otherwise starts one thread per core whatever ``PIE_BENCH_THREADS`` says; with
    runs in parallel on a loaded machine its spinning threads make small LAPACK calls crawl:
    ``scipy.linalg.sqrtm`` on 128 x 128 (the Fréchet distance) took ~2 s with 2 BLAS threads
    under load 6 on 2 cores vs ~0.01 s with one. Results are unchanged.
    """
    @functools.wraps(fn)
    def capped(*args, **kwargs):
        with threadpoolctl.threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
            return fn(*args, **kwargs)
    return capped


def _check(cfg: EvalConfig) -> None:
    if cfg.batch_size < 1 or cfg.log_prob_batch_size < 1:
        raise ValueError("eval.batch_size and eval.log_prob_batch_size must be >= 1")
    if cfg.n_samples <= cfg.pr_k:
        raise ValueError(f"eval.n_samples must exceed eval.pr_k={cfg.pr_k}, got {cfg.n_samples}")


@blas_threads_like_torch
@torch.inference_mode()
def _blas_capped(evaluator: Evaluator, *args):
    return evaluator._evaluate(*args)


def evaluate_model(model, data: ImageData, cfg: EvalConfig, seed: int, timings: dict[str, float] | None = None,
                   evaluator: Evaluator | None = None):
    """All metrics of one trained model: one row per entry of the metric table
    (:data:`bench.metrics.table.METRICS`, in its order; ``diag_<name>`` per entry of
    ``model.diagnostics`` on the first evaluation batch). Returns (rows, artefacts dict of numpy
    arrays: samples_t1, samples_t2, recon_inputs, recon_outputs, interpolations, test_latents,
    test_labels).

    ``timings``, if given, receives the seconds of each phase (:func:`phase`): the model's calls,
    whose counts the protocol fixes, apart from the harness's metric maths. ``evaluator``: a
    command's is ``Evaluator.of(ctx)``; None, a fresh one (the defaults, nothing remembered).
    """
    return (evaluator or Evaluator()).evaluate(model, data, cfg, seed, timings)

