"""Section ``metrics``: seconds of each metric, then of a whole evaluation per model."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bench import evaluate as E
from bench.classifier import FeatureExtractor, LeNet
from bench.config import Config
from bench.context import Context
from bench.data import ImageData, preprocess
from bench.datasets import DatasetSpec
from bench.evaluate import batched
from bench.perf.common import Budget, Row, new_model, subset, train_dtype, width_label
from bench.perf.timing import timed


def feature_extractor(device: torch.device, batch: int,
                      spec: DatasetSpec) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """``(images [N, C, H, W] in [0, 1] -> features [N, F], note)`` with the harness's classifier for ``spec``.

    Weights do not change the cost, so an untrained ``bench.classifier.LeNet`` is timed
    through ``FeatureExtractor.features`` (the evaluation's code path) without training it.
    """
    net = LeNet(spec.mean, spec.std, spec.n_classes, spec.image_shape).to(device).eval()
    extractor = FeatureExtractor(net=net, weights_hash="untrained", cache_key="perf", test_accuracy=math.nan,
                                 n_test=0, train_seconds=0.0)
    return (lambda x: extractor.features(x, batch)), "bench.classifier FeatureExtractor.features, untrained LeNet"


def bench_metrics(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                  ctx: Context, log=print) -> list[Row]:
    """Seconds of each metric on ``eval.n_samples`` (10 000) images, then of a whole evaluation per model."""
    from bench import metrics as M

    ecfg = cfg.eval
    target = ecfg.n_samples if budget.metric_images >= ecfg.n_samples else budget.metric_images
    n = min(target, data.test_images.shape[0])
    scale = target / n
    eb = budget.batch * 25 if budget.batch else ecfg.batch_size
    rows: list[Row] = []
    base = {"section": "metrics", "model": "-", "preset": cfg.preset, "width": "-"}
    gen = torch.Generator(device=data.test_images.device).manual_seed(0)
    real = preprocess(data.test_images[:n], "unit", gen)
    other = preprocess(data.train_images[:n], "unit", gen)  # stands in for generated images
    note_n = f"{n} images" + (f", scaled x{scale:g} to {target}" if scale != 1 else "")

    with torch.inference_mode():
        t, _ = timed(lambda: M.sharpness_stats(other), device)
        rows.append(Row(**base, metric="sharpness_seconds", value=t * scale, unit="s", batch=n,
                        note=f"sharpness_stats (Laplacian variance, float64) on {note_n}"))
        feats_fn, feat_note = feature_extractor(device, eb, data.spec)
        t_feat, (fa, fb) = timed(lambda: (feats_fn(real), feats_fn(other)), device)
        with warnings.catch_warnings():  # untrained features can be rank-deficient: sqrtm warns
            warnings.simplefilter("ignore")
            t_fd, _ = timed(lambda: M.frechet_distance(fa, fb), device)
        rows.append(Row(**base, metric="features_fd_seconds", value=(t_feat + t_fd) * scale, unit="s", batch=eb,
                        note=f"features of 2 x {note_n} ({feat_note}) {t_feat * scale:.3g} s + Fréchet distance "
                        f"{t_fd:.3g} s"))
        kid_subset = min(ecfg.kid_subset_size, n)
        t, _ = timed(lambda: M.kernel_distance(fa, fb, kid_subset, ecfg.kid_subsets), device)
        rows.append(Row(**base, metric="kid_seconds", value=t, unit="s",
                        note=f"{ecfg.kid_subsets} subsets of {kid_subset} (features given)"))
        t, _ = timed(lambda: M.precision_recall(fa, fb, ecfg.pr_k), device)
        rows.append(Row(**base, metric="precision_recall_seconds", value=t * scale ** 2, unit="s",
                        note=f"k={ecfg.pr_k} on {n} vs {n} features, both radii" +
                        (f", scaled x{scale ** 2:g} (quadratic)" if scale != 1 else "")))
    log(f"  metrics: sharpness {rows[0].value:.2f} s, features+FD {rows[1].value:.2f} s ({feat_note})")

    probe_n = min(ecfg.probe_train_size, n)
    for name in names:
        model = new_model(name, cfg, device).eval()
        rows += _model_metric_costs(model, name, cfg, data, device, {**base, "model": name,
                                    "width": width_label(cfg.models[name])}, n, target, probe_n, eb, budget)
        log(f"  metrics {name}: " + ", ".join(f"{r.metric} {r.value:.2f} s" for r in rows if r.model == name))
    rows += bench_evaluation(names, cfg, data, device, budget, ctx, log)
    return rows


def _model_metric_costs(model: nn.Module, name: str, cfg: Config, data: ImageData, device: torch.device,
                        base: dict, n: int, target: int, probe_n: int, eb: int, budget: Budget) -> list[Row]:
    """bits/dim (density models) and the linear probe, for one (untrained) model."""
    from bench import metrics as M

    rows: list[Row] = []
    scale = target / n
    note_n = f"{n} images" + (f", scaled x{scale:g} to {target}" if scale != 1 else "")
    gen = torch.Generator(device=data.test_images.device).manual_seed(1)
    dtype = train_dtype(cfg)
    x_test = preprocess(data.test_images[:n], model.preprocessing, gen, dtype)
    x_train = preprocess(data.train_images[:probe_n], model.preprocessing, gen, dtype)
    with torch.inference_mode():
        if model.has_density:
            k = min(n, budget.bpd_images)
            lp_batch = min(cfg.eval.log_prob_batch_size, eb)
            t, lp = timed(lambda: batched(model.log_prob, x_test[:k], lp_batch), device)
            M.bits_per_dim(lp, x_test[0].numel())
            passes = type(model).log_prob_passes(cfg.models[name])
            rows.append(Row(**base, metric="bits_per_dim_seconds", value=t * target / k, unit="s", batch=lp_batch,
                            note=f"log_prob + bits_per_dim on {k} test images, scaled x{target / k:g} to {target}"
                            + (f"; {passes} model passes per image" if passes > 1 else "")))
            subset_n = cfg.eval.bpd_subset or data.test_images.shape[0]
            rows.append(Row(**base, metric="bits_per_dim_eval_seconds", value=t * subset_n / k, unit="s",
                            batch=lp_batch, note=f"the same for the {subset_n} images the evaluation scores "
                            "(eval.bpd_subset)"))
        t_enc, (z_tr, z_te) = timed(lambda: (batched(model.encode, x_train, eb), batched(model.encode, x_test, eb)),
                                    device)
    t_fit, _ = timed(lambda: M.linear_probe_accuracy(z_tr, data.train_labels[:probe_n], z_te, data.test_labels[:n]),
                     device)
    rows.append(Row(**base, metric="probe_seconds", value=(t_enc + t_fit) * scale, unit="s", batch=eb,
                    note=f"encode {probe_n} train + {note_n} test {t_enc * scale:.3g} s + L-BFGS fit "
                    f"{t_fit * scale:.3g} s (untrained model; fit time depends on the codes)"))
    return rows


def bench_evaluation(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                     ctx: Context, log=print) -> list[Row]:
    """Seconds of ``bench.evaluate.evaluate_model`` for one (untrained) model: the per-run evaluation cost.

    The classifier comes from ``bench.classifier.get_classifier`` (its on-disk cache, trained
    there once if absent: reported apart) and the real test images' statistics are computed
    once per process before timing, as in the runner. ``--quick`` evaluates a shrunken
    protocol on a slice of the data with the classifier cache in a temporary folder.
    """
    ecfg, eval_data = cfg.eval, data
    rows: list[Row] = []
    base = {"section": "metrics", "model": "-", "preset": cfg.preset, "width": "-"}
    with contextlib.ExitStack() as stack:
        if budget.batch:  # quick: a few images everywhere, classifier trained on a slice into a temp cache
            small = {"n_samples": 50, "test_subset": 50, "probe_train_size": 50, "bpd_subset": 8,
                     "kid_subset_size": 20, "kid_subsets": 2, "classifier_epochs": 1, "batch_size": 50,
                     "log_prob_batch_size": 8}
            ecfg = dataclasses.replace(ecfg, **small)
            eval_data = subset(data, 400, 50)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pie-perf-cache-"))
            ctx = dataclasses.replace(ctx, cache_dir=Path(tmp))  # evaluate_model reads it there too
        evaluator = E.Evaluator.of(ctx)  # its classifier and real statistics, as a runner's
        t_clf, extractor = timed(lambda: evaluator.classifier(eval_data, ecfg), device)
        rows.append(Row(**base, metric="classifier_seconds", value=t_clf, unit="s",
                        note="get_classifier: trained once per data set (0 s when the cache holds it)"
                        + (f"; trained {extractor.train_seconds:.3g} s" if extractor.train_seconds
                           else "; from the cache")))
        t_real, _ = timed(lambda: evaluator.real_stats(eval_data, ecfg, extractor), device)
        rows.append(Row(**base, metric="real_stats_seconds", value=t_real, unit="s",
                        note="features, statistics and k-NN radii of the real test images: once per process"))
        for name in names:
            model = new_model(name, cfg, device)
            t, _ = timed(lambda: E.evaluate_model(model, eval_data, ecfg, 0, evaluator=evaluator), device)  # noqa: B023
            rows.append(Row(**{**base, "model": name, "width": width_label(cfg.models[name])}, metric="eval_seconds",
                            value=t, unit="s", batch=ecfg.batch_size,
                            note="bench.evaluate.evaluate_model on an untrained model, real-image statistics cached"))
            log(f"  evaluation {name}: {t:.1f} s")
    return rows
