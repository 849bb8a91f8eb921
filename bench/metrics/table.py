"""The metric table: one :class:`Metric` per row that an evaluation writes to ``metrics.csv``.

An entry names the metric, the inputs it needs (the keyword arguments of its function, computed
once per evaluation by :class:`bench.evaluate.Evaluator`), the function, and the note recorded
beside its value (a ``str.format`` template over the evaluation's facts, :data:`FACTS`). The
order of :data:`METRICS` is the order of the rows. The report (Table 1 columns: ``table1``), the
tracker and the convergence rule name metrics through this table and :mod:`bench.metrics.names`.

A new metric is one function and one line here (or :func:`register`).

Inputs (:data:`bench.evaluate.INPUTS`): ``cfg``, ``model``, ``data``, ``extractor``, ``real``
(the real test images' statistics), ``x`` and ``labels`` (the test images as the model sees them),
``codes`` (their encodings), ``recon``, ``recon_errors``, ``train_codes``, ``train_labels``, and per
set of samples (the entry's ``at``: ``t1`` samples at T = 1, ``t2`` at the second temperature,
``val`` the validation images of the real-data row) ``samples``, ``sharpness_stats``, ``features``,
``feature_stats``, ``precision_recall`` and ``confidence``; ``log_prob``, ``diagnostics``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.metrics import names as N
from bench.metrics.artefact import corner_artefact
from bench.metrics.classification import linear_probe_accuracy
from bench.metrics.frechet import frechet_distance_from_stats
from bench.metrics.kid import kernel_distance
from bench.metrics.likelihood import bits_per_dim
from bench.metrics.separation import knn_accuracy, latent_silhouette
from bench.metrics.sharpness import sharpness

KID_SEED = 0  # subsets of KID are drawn with this fixed seed, whatever the run seed
T2_SUFFIX = "_t05"  # name suffix of a metric of the samples at the second temperature
RECIPE = "4-neighbour Laplacian, valid, variance per image, pixels in [0, 1]"
RAW = "raw codes (not standardised), Euclidean"
COUNTS = "extractor {extractor.weights_hash}, {n_set} {set_name} vs {n_real} test"
SEEN = "LeNet {extractor.weights_hash} on {n_set} {set_name}"
FACTS = ("cfg", "model", "extractor", "real", "n", "n_test", "t2", "preprocessing", "n_probe", "n_diag", "n_bpd",
         "corner", "recipe", "raw", "set_name", "n_set", "n_real")


@dataclass(frozen=True)
class Metric:
    """One row of ``metrics.csv`` (``expands``: one row per key of the function's dict, ``name + key``).

    ``fn(**inputs)`` returns the value, or ``(value, fields)``: extra note fields (a ``note`` field
    replaces the template). ``table1``: the column's rank in Table 1 (None: not a column).
    """

    name: str
    needs: tuple[str, ...]
    fn: Callable[..., Any]
    note: str
    phase: str = ""  # the timing phase of fn (bench.evaluate.phase); "" -> "metric: <name>"
    at: str = "t1"  # which set of samples ``samples`` & co. mean
    table1: int | None = None
    real: bool = False  # also measured on the validation images (the real-data row's noise floor)
    expands: bool = False
    tracked: int | None = None  # rank among the learning curves (bench.tracking); None: not tracked
    judged: bool = False  # judged by the convergence rule (bench.convergence); needs ``tracked``

    def at_t2(self) -> Metric:
        """The same metric of the samples at the second temperature (Fig. 7c: "more accurate"?)."""
        return dataclasses.replace(self, name=self.name + T2_SUFFIX, at="t2", table1=None, real=False, tracked=None,
                                   judged=False)


def _kid(features, real, cfg):
    kid, std = kernel_distance(features, real.feats, cfg.kid_subset_size, cfg.kid_subsets, KID_SEED)
    return kid, {"kid_std": std, "size": min(cfg.kid_subset_size, len(features), len(real.feats))}


def _bits_per_dim(log_prob):
    if log_prob is None:
        return math.nan, {"note": "not applicable: model defines no density"}
    lp, n_dims, note = log_prob
    return bits_per_dim(lp, n_dims=n_dims), {"estimator": note}


SHARPNESS = Metric(N.SHARPNESS, ("sharpness_stats",), lambda sharpness_stats: sharpness_stats[0],
                   "{n} samples at T = 1; {recipe}", "metric: Laplacian (sharpness, corner artefact)", table1=0,
                   tracked=0, judged=True)
# The sample metrics in LeNet feature space, at T = 1 and again at the second temperature.
FEATURE_METRICS = (
    Metric(N.FD_LENET, ("feature_stats", "real"),
           lambda feature_stats, real: frechet_distance_from_stats(*feature_stats, real.mu, real.sigma),
           COUNTS + "; Fréchet distance of LeNet penultimate features", "metric: Fréchet distance", table1=2,
           real=True, tracked=1, judged=True),
    Metric(N.KID_LENET, ("features", "real", "cfg"), _kid,
           COUNTS + "; unbiased MMD² cubic kernel, mean of {cfg.kid_subsets} subsets of {size} (std {kid_std:.3g})",
           "metric: KID", real=True),
    Metric(N.PRECISION, ("precision_recall",), lambda precision_recall: precision_recall[0],
           COUNTS + "; k-NN manifolds, k = {cfg.pr_k}", "metric: precision/recall", table1=3, real=True),
    Metric(N.RECALL, ("precision_recall",), lambda precision_recall: precision_recall[1],
           COUNTS + "; k-NN manifolds, k = {cfg.pr_k}", "metric: precision/recall", table1=4, real=True),
    Metric(N.SAMPLE_CONFIDENCE, ("confidence",), lambda confidence: confidence[0],
           SEEN + "; mean of the max softmax probability", "metric: LeNet confidence", real=True),
    Metric(N.CONFIDENT_FRACTION, ("confidence",), lambda confidence: confidence[1],
           SEEN + "; fraction whose max softmax probability exceeds {cfg.confidence_threshold:g}",
           "metric: LeNet confidence", real=True),
)

METRICS: list[Metric] = [
    SHARPNESS,
    Metric(N.SHARPNESS_STD, ("sharpness_stats",), lambda sharpness_stats: sharpness_stats[1],
           "std over {n} samples at T = 1", SHARPNESS.phase),
    Metric(N.SHARPNESS_T05, ("samples",), lambda samples: sharpness(samples),
           "{n} samples at std multiplier T = {t2:.4g} (second_temperature {cfg.second_temperature} read as a "
           "{cfg.second_temperature_is})", SHARPNESS.phase, at="t2"),
    Metric(N.SHARPNESS_GAP, ("sharpness_stats", "real"), lambda sharpness_stats, real: abs(sharpness_stats[0]
           - real.sharpness), "|sharpness - {real.sharpness:.4f}| (real value on the same {n_test} test images)",
           SHARPNESS.phase),
    Metric(N.ARTEFACT_CORNER, ("samples",), lambda samples: corner_artefact(samples),
           "{n} samples at T = 1; mean squared Laplacian in the four {corner}x{corner} corners", SHARPNESS.phase,
           table1=8, tracked=3),  # tracked, not judged: near 0 for a clean model, a relative change means nothing
    Metric(N.RECON_MSE, ("recon_errors",), lambda recon_errors: recon_errors[0],
           "per pixel, {n_test} test images ({preprocessing} inputs)", "metric: reconstruction error", table1=5,
           tracked=2, judged=True),
    Metric(N.RECON_SSE, ("recon_errors",), lambda recon_errors: recon_errors[1],
           "per image, {n_test} test images ({preprocessing} inputs)", "metric: reconstruction error"),
    Metric(N.BITS_PER_DIM, ("log_prob",), _bits_per_dim,
           "{estimator}; dequantised test images (k + u)/256, first {n_bpd} of {n_test}", table1=6),
    Metric(N.CLASSIFIER_ACCURACY, ("extractor",), lambda extractor: extractor.test_accuracy,
           "LeNet extractor {extractor.weights_hash} on {extractor.n_test} test images"),
    *FEATURE_METRICS,
    *(m.at_t2() for m in FEATURE_METRICS),
    Metric(N.PROBE_ACCURACY, ("train_codes", "train_labels", "codes", "labels", "data"),
           lambda train_codes, train_labels, codes, labels, data: linear_probe_accuracy(
               train_codes, train_labels, codes, labels, n_classes=data.spec.n_classes),
           "multinomial logistic regression on standardised codes: {n_probe} train -> {n_test} test",
           "metric: linear probe", table1=7),
    Metric(N.LATENT_SILHOUETTE, ("codes", "labels"), lambda codes, labels: latent_silhouette(codes, labels),
           "mean silhouette of {n_test} test codes grouped by label; {raw}", "metric: latent class separation"),
    Metric(N.KNN_ACCURACY, ("train_codes", "train_labels", "codes", "labels", "cfg"),
           lambda train_codes, train_labels, codes, labels, cfg: knn_accuracy(
               train_codes, train_labels, codes, labels, cfg.knn_k),
           "{cfg.knn_k}-NN majority vote of {n_probe} training codes for {n_test} test codes; {raw}",
           "metric: latent class separation"),
    Metric(N.N_SAMPLES, ("cfg",), lambda cfg: float(cfg.n_samples), "generated samples per temperature"),
    Metric(N.N_TEST, ("labels",), lambda labels: float(len(labels)), "test images evaluated"),
    Metric(N.DIAG_PREFIX, ("diagnostics",), lambda diagnostics: diagnostics,
           "model.diagnostics on the first {n_diag} test images", expands=True),
    Metric(N.N_BPD, ("model", "n_bpd"), lambda model, n_bpd: float(n_bpd) if model.has_density else math.nan,
           "test images scored for bits/dim"),
]


def note(metric: Metric, facts: dict[str, Any], fields: dict[str, Any]) -> str:
    return str(fields.get("note", metric.note)).format(**facts, **fields)


def split_value(out: Any) -> tuple[Any, dict[str, Any]]:
    """A metric function's return: (value, extra note fields)."""
    return out if isinstance(out, tuple) else (out, {})


def table1_metrics() -> tuple[str, ...]:
    """Table 1's metric columns in order (sharpness first: the paper's column)."""
    ranked = sorted((m for m in METRICS if m.table1 is not None), key=lambda m: m.table1)
    return tuple(m.name for m in ranked)


def tracked_metrics() -> tuple[Metric, ...]:
    """The learning curves (bench.tracking) in order."""
    return tuple(sorted((m for m in METRICS if m.tracked is not None), key=lambda m: m.tracked))


def judged_metrics() -> tuple[str, ...]:
    """The metrics the convergence rule judges (bench.convergence), in the curves' order."""
    return tuple(m.name for m in tracked_metrics() if m.judged)


def find(name: str) -> Metric:
    return next(m for m in METRICS if m.name == name)


@contextlib.contextmanager
def registered(*metrics: Metric, before: str | None = None) -> Iterator[None]:
    """Add ``metrics`` to the table (at the end, or before the entry ``before``) for the ``with`` body."""
    at = len(METRICS) if before is None else METRICS.index(find(before))
    METRICS[at:at] = metrics
    try:
        yield
    finally:
        for m in metrics:
            METRICS.remove(m)


