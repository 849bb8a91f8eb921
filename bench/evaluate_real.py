"""The real data's rows ("True" in Table 1): the sample metrics of real images, and the code-free
reconstruction references (mean image, class-mean image) a model's code must beat.

Same recipes and caches as :mod:`bench.evaluate`; rows only, the runner does the file I/O.
"""

from __future__ import annotations

import torch

from bench import metrics as M
from bench.config import EvalConfig
from bench.data import ImageData
from bench.evaluate import Evaluator, MetricRow, _check, _n_test, _unit, blas_threads_like_torch


@blas_threads_like_torch
@torch.inference_mode()
def evaluate_real(data: ImageData, cfg: EvalConfig, evaluator: Evaluator | None = None) -> list[MetricRow]:
    """The same sample metrics on real test images (the "True" row of Table 1).

    For the feature metrics the held-out validation images stand in for generated
    samples, so these rows are the noise floor of fd_lenet, kid_lenet, precision and
    recall (two independent sets of real digits): the metric table's ``real`` entries.
    ``evaluator``: a command's is ``Evaluator.of(ctx)`` (its cache folder and memo); None, a fresh one.
    """
    _check(cfg)
    evaluator = evaluator or Evaluator()
    extractor = evaluator.classifier(data, cfg)
    real = evaluator.real_stats(data, cfg, extractor)
    n_test = len(real.feats)
    val = _unit(data.val_images[:cfg.n_samples])
    recipe = "4-neighbour Laplacian, valid, variance per image, pixels k/255"
    rows = [
        MetricRow("test", M.SHARPNESS, real.sharpness, f"{n_test} real test images; {recipe}"),
        MetricRow("test", M.SHARPNESS_STD, real.sharpness_std, f"std over {n_test} real test images"),
        MetricRow("test", M.ARTEFACT_CORNER, M.corner_artefact(_unit(data.test_images[:n_test])),
                  f"{n_test} real test images; mean squared Laplacian in the four {M.CORNER}x{M.CORNER} corners"),
        MetricRow("test", M.CLASSIFIER_ACCURACY, extractor.test_accuracy,
                  f"LeNet extractor {extractor.weights_hash} on {extractor.n_test} test images"),
    ]
    if len(val) > cfg.pr_k:
        floor = [MetricRow(r.split, r.metric, r.value, f"noise floor: held-out validation images as samples; {r.note}")
                 for r in evaluator.sample_rows(val, data, cfg)]
        rows += floor
    rows += reference_reconstruction_rows(data, cfg)
    rows += [
        MetricRow("test", M.N_SAMPLES, float(len(val)), "validation images standing in for samples"),
        MetricRow("test", M.N_TEST, float(n_test), "test images evaluated"),
    ]
    return rows


def reference_reconstruction_rows(data: ImageData, cfg: EvalConfig) -> list[MetricRow]:
    """recon_mse of two code-free "reconstructions" of the test images, the floor a model
    with a code must beat: the mean training image, and the mean training image of the
    test image's class (what a code holding only the digit label could give)."""
    n = _n_test(data, cfg)
    test, labels = _unit(data.test_images[:n]), data.test_labels[:n]
    train, train_labels = _unit(data.train_images), data.train_labels
    class_means = torch.stack([train[train_labels == k].mean(0) for k in range(data.spec.n_classes)])
    scale = "pixels k/255; on dequantised pixels (k+u)/256 both are 0.8 % lower ((255/256)²)"
    return [
        MetricRow("test", M.RECON_MSE_MEAN_IMAGE, float((test - train.mean(0)).pow(2).mean()),
                  f"per pixel, {n} test images vs the mean of {len(train)} training images; {scale}"),
        MetricRow("test", M.RECON_MSE_CLASS_MEAN, float((test - class_means[labels]).pow(2).mean()),
                  f"per pixel, {n} test images vs the mean training image of their class; {scale}"),
    ]
