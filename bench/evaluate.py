"""Evaluation of one trained model: metric rows + saved artefacts (the real data's rows: :mod:`bench.evaluate_real`).

Everything runs in inference mode, in chunks of the evaluation batch size, with seeded
generators, and calls the model only through its contract (``models/contract.py``).
Returns rows ``(split, metric, value, note)`` for the tidy table; the runner does all
file I/O. The metric maths lives in :mod:`bench.metrics` (pure functions); this module
only gathers tensors and caches what does not depend on the model: the classifier
(:mod:`bench.classifier`) and the real test images' features, once per process.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import threadpoolctl
import torch

from bench import metrics as M
from bench.classifier import FeatureExtractor, get_classifier, torch_threads
from bench.config import EvalConfig
from bench.data import MNISTData, preprocess
from models.contract import GenerativeEncoder

KID_SEED = 0  # subsets of KID are drawn with this fixed seed, whatever the run seed
# Offsets of the run seed for each source of evaluation randomness (independent streams).
TEST_NOISE_OFFSET = 104729  # dequantisation noise of the test images
PROBE_NOISE_OFFSET = 7919  # dequantisation noise of the probe's training images
SAMPLE_OFFSET = 2750159  # z of the generated samples (the same z at both temperatures)
LOG_PROB_OFFSET = 15485863  # noise drawn inside log_prob (IWAE)
RNG_BLOCK = 16  # CPU randn fills 16 values at a time: chunks of a multiple of 16 draw one stream


@dataclass
class MetricRow:
    split: str
    metric: str
    value: float
    note: str = ""


@dataclass
class RealStats:
    """Features of the real test images and what the metrics derive from them."""

    feats: torch.Tensor  # [N, F]
    mu: np.ndarray
    sigma: np.ndarray
    radii: dict[int, torch.Tensor]  # k -> k-NN radii (squared)
    sharpness: float
    sharpness_std: float


_REAL_STATS: dict[tuple, RealStats] = {}  # (data checksum, extractor, n_test, device) -> stats


@contextlib.contextmanager
def phase(timings: dict[str, float] | None, name: str, device: torch.device):
    """Add the seconds of the ``with`` body to ``timings[name]`` (nothing when ``timings`` is None).

    Names start with ``model:`` for calls into the model (fixed by the protocol's counts) or
    ``metric:`` for the harness's own maths; ``bench.perf`` reports the two sums.
    """
    if timings is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def model_seconds(timings: dict[str, float]) -> float:
    """Seconds spent inside the model during an evaluation (the ``model:`` phases)."""
    return sum(v for k, v in timings.items() if k.startswith("model:"))


def batched(fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def _unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels k -> k / 255 in [0, 1]: the sharpness recipe's scale (Tolstikhin et al. 2018's code)."""
    return images.float() / 255.0


def _n_test(data: MNISTData, cfg: EvalConfig) -> int:
    n = data.test_images.shape[0]
    return min(cfg.test_subset, n) if cfg.test_subset > 0 else n


def test_inputs(model, data: MNISTData, cfg: EvalConfig, seed: int, dtype=torch.float32):
    """Test images as the model sees them (fixed dequantisation noise), and their labels."""
    n = _n_test(data, cfg)
    images, labels = data.test_images[:n], data.test_labels[:n]
    gen = torch.Generator(device=images.device).manual_seed(seed + TEST_NOISE_OFFSET)
    return preprocess(images, model.preprocessing, gen, dtype), labels


def generate(model, n: int, temperature: float, cfg: EvalConfig, seed: int) -> torch.Tensor:
    """``n`` samples in chunks, from a generator seeded with ``seed``; clamped to [0, 1], float32.

    The chunk is the batch size rounded down to a multiple of 16, so on CPU the chunks
    draw the same normal stream as one big call and the samples do not depend on it.
    """
    param = next(model.parameters())
    gen = torch.Generator(device=param.device).manual_seed(seed)
    chunk = max(RNG_BLOCK, cfg.batch_size // RNG_BLOCK * RNG_BLOCK)
    out = [model.sample(min(chunk, n - i), temperature, generator=gen).float().clamp(0.0, 1.0)
           for i in range(0, n, chunk)]
    return torch.cat(out)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """One torch and one BLAS thread on CPU for the feature metrics, so that FD, KID and
    precision/recall do not depend on the machine's thread count: KID's float64 sums, split
    over 2 threads, differ from 1 thread in the last digits (measured). Runs already use
    one thread each (``./run_all.sh``), so their numbers do not change."""
    if device.type != "cpu":
        yield
        return
    with torch_threads(1), threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


def real_stats(data: MNISTData, cfg: EvalConfig, extractor: FeatureExtractor) -> RealStats:
    """Real test-image statistics, computed once per process for each (data, extractor, subset)."""
    n = _n_test(data, cfg)
    key = (data.checksum, extractor.cache_key, extractor.weights_hash, n, str(data.test_images.device))
    with one_cpu_thread(data.test_images.device):
        if key not in _REAL_STATS:
            images = _unit(data.test_images[:n])
            feats = extractor.features(images, cfg.batch_size)
            mu, sigma = M.feature_stats(feats)
            mean, std = M.sharpness_stats(images)
            _REAL_STATS[key] = RealStats(feats, mu, sigma, {}, mean, std)
        stats = _REAL_STATS[key]
        if cfg.pr_k not in stats.radii:
            stats.radii[cfg.pr_k] = M.knn_radii(stats.feats, cfg.pr_k)
    return stats


def feature_rows(
    fake_images: torch.Tensor, fake_name: str, real: RealStats, extractor: FeatureExtractor, cfg: EvalConfig,
    suffix: str = "", timings: dict[str, float] | None = None,
) -> list[MetricRow]:
    """fd_lenet, kid_lenet, precision, recall, sample_confidence and confident_fraction (each + ``suffix``)
    of ``fake_images``: the first four against the real test set, the last two the LeNet's own verdict
    (at one CPU thread: :func:`one_cpu_thread`)."""
    with one_cpu_thread(fake_images.device):
        return _feature_rows(fake_images, fake_name, real, extractor, cfg, suffix, timings)


def _feature_rows(fake_images, fake_name, real, extractor, cfg, suffix, timings) -> list[MetricRow]:
    device = fake_images.device
    with phase(timings, "metric: LeNet features", device):
        feats = extractor.features(fake_images, cfg.batch_size)
    counts = f"extractor {extractor.weights_hash}, {len(feats)} {fake_name} vs {len(real.feats)} test"
    with phase(timings, "metric: Fréchet distance", device):
        mu, sigma = M.feature_stats(feats)
        fd = M.frechet_distance_from_stats(mu, sigma, real.mu, real.sigma)
    with phase(timings, "metric: KID", device):
        kid, kid_std = M.kernel_distance(feats, real.feats, cfg.kid_subset_size, cfg.kid_subsets, KID_SEED)
    size = min(cfg.kid_subset_size, len(feats), len(real.feats))
    with phase(timings, "metric: precision/recall", device):
        precision, recall = M.precision_recall(real.feats, feats, cfg.pr_k, real.radii[cfg.pr_k])
    with phase(timings, "metric: LeNet confidence", device):  # the LeNet's head on the same features
        confidence, confident = M.sample_confidence(extractor.net.head(feats), cfg.confidence_threshold)
    seen = f"LeNet {extractor.weights_hash} on {len(feats)} {fake_name}"
    return [
        MetricRow("test", M.FD_LENET + suffix, fd, f"{counts}; Fréchet distance of LeNet penultimate features"),
        MetricRow("test", M.KID_LENET + suffix, kid,
                  f"{counts}; unbiased MMD² cubic kernel, mean of {cfg.kid_subsets} subsets of {size} "
                  f"(std {kid_std:.3g})"),
        MetricRow("test", M.PRECISION + suffix, precision, f"{counts}; k-NN manifolds, k = {cfg.pr_k}"),
        MetricRow("test", M.RECALL + suffix, recall, f"{counts}; k-NN manifolds, k = {cfg.pr_k}"),
        MetricRow("test", M.SAMPLE_CONFIDENCE + suffix, confidence, f"{seen}; mean of the max softmax probability"),
        MetricRow("test", M.CONFIDENT_FRACTION + suffix, confident,
                  f"{seen}; fraction whose max softmax probability exceeds {cfg.confidence_threshold:g}"),
    ]


def separation_rows(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
                    cfg: EvalConfig) -> list[MetricRow]:
    """latent_silhouette of the test codes by label and knn_accuracy (training codes vote for test codes)."""
    raw = "raw codes (not standardised), Euclidean"
    return [
        MetricRow("test", M.LATENT_SILHOUETTE, M.latent_silhouette(z_test, y_test),
                  f"mean silhouette of {len(z_test)} test codes grouped by label; {raw}"),
        MetricRow("test", M.KNN_ACCURACY, M.knn_accuracy(z_train, y_train, z_test, y_test, cfg.knn_k),
                  f"{cfg.knn_k}-NN majority vote of {len(z_train)} training codes for {len(z_test)} test codes; {raw}"),
    ]


def log_prob_note(model: GenerativeEncoder) -> str:
    """How the model's log_prob is obtained: the contract's ``log_prob_estimator``, never its name."""
    if not model.log_prob_estimator:
        raise ValueError(f"{type(model).__name__} has a density but no log_prob_estimator (models/contract.py)")
    return f"{model.log_prob_estimator} [log_prob of {type(model).__name__}]"


def bits_per_dim_row(model, data: MNISTData, cfg: EvalConfig, seed: int, x: torch.Tensor) -> MetricRow:
    """bits/dim on the first ``bpd_subset`` dequantised test images, or NaN without a density."""
    if not model.has_density:
        return MetricRow("test", M.BITS_PER_DIM, float("nan"), "not applicable: model defines no density")
    n = len(x) if cfg.bpd_subset <= 0 else min(cfg.bpd_subset, len(x))
    if model.preprocessing == "dequantize":
        xb = x[:n]
    else:  # bits/dim needs (k + u) / 256 whatever the model trained on (dequantisation, Theis et al. 2016)
        gen = torch.Generator(device=x.device).manual_seed(seed + TEST_NOISE_OFFSET)
        xb = preprocess(data.test_images[:n], "dequantize", gen, x.dtype)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # log_prob's own noise; caller's RNG untouched
        torch.manual_seed(seed + LOG_PROB_OFFSET)
        lp = batched(model.log_prob, xb, cfg.log_prob_batch_size)
    bpd = M.bits_per_dim(lp, n_dims=int(np.prod(xb.shape[1:])))
    note = f"{log_prob_note(model)}; dequantised test images (k + u)/256, first {n} of {len(x)}"
    return MetricRow("test", M.BITS_PER_DIM, bpd, note)


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
def evaluate_model(model, data: MNISTData, cfg: EvalConfig, seed: int, timings: dict[str, float] | None = None,
                   ctx=None):
    """All metrics of one trained model. Returns (rows, artefacts dict of numpy arrays).

    ``timings``, if given, receives the seconds of each phase (:func:`phase`): the model's calls,
    whose counts the protocol fixes, apart from the harness's metric maths.

    Rows (split ``test``): sharpness, sharpness_std, sharpness_t05, sharpness_gap,
    artefact_corner, recon_mse, recon_sse, bits_per_dim, classifier_accuracy, fd_lenet, kid_lenet,
    precision, recall, sample_confidence, confident_fraction (and the same six + ``_t05`` of the
    samples at the second temperature), probe_accuracy, latent_silhouette, knn_accuracy, the counts
    n_samples, n_test, n_bpd, and one
    ``diag_<name>`` row per entry of ``model.diagnostics`` (first evaluation batch).
    Artefacts: samples_t1, samples_t2, recon_inputs, recon_outputs, interpolations,
    test_latents, test_labels.
    """
    _check(cfg)
    model.eval()
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    torch.manual_seed(seed + LOG_PROB_OFFSET)  # any stray global-RNG use is seeded too
    x, labels = test_inputs(model, data, cfg, seed, dtype)
    n_test = len(x)
    with phase(timings, "metric: classifier and real statistics (cached per process)", device):
        extractor = get_classifier(data, cfg.classifier_epochs, batch_size=cfg.batch_size, ctx=ctx)
        real = real_stats(data, cfg, extractor)

    if cfg.channels_last:  # faster convolutions (oneDNN / cuDNN); values move at the 1e-7 level
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    # The test set is encoded once: its codes serve the probe, the interpolations and, when the
    # model keeps the contract's reconstruct = decode(encode(x)), the reconstructions too.
    with phase(timings, "model: encode test images", device):
        z_test = batched(model.encode, x, cfg.batch_size)
    with phase(timings, "model: reconstruct test images", device):
        if type(model).reconstruct is GenerativeEncoder.reconstruct:
            recon = batched(model.decode, z_test, cfg.batch_size)
        else:
            recon = batched(model.reconstruct, x, cfg.batch_size)
    with phase(timings, "metric: reconstruction error", device):
        mse, sse = M.reconstruction_errors(x, recon)
    n_probe = min(cfg.probe_train_size, len(data.train_images))
    gen = torch.Generator(device=x.device).manual_seed(seed + PROBE_NOISE_OFFSET)
    x_train = preprocess(data.train_images[:n_probe], model.preprocessing, gen, dtype)
    if cfg.channels_last:
        x_train = x_train.contiguous(memory_format=torch.channels_last)
    with phase(timings, "model: encode probe images", device):
        z_train = batched(model.encode, x_train, cfg.batch_size)
    with phase(timings, "metric: linear probe", device):
        probe = M.linear_probe_accuracy(z_train, data.train_labels[:n_probe], z_test, labels,
                                        n_classes=data.spec.n_classes)
    with phase(timings, "metric: latent class separation", device):
        separation = separation_rows(z_train, data.train_labels[:n_probe], z_test, labels, cfg)

    t2 = cfg.second_temperature_std()
    with phase(timings, "model: samples at T = 1", device):
        samples = generate(model, cfg.n_samples, 1.0, cfg, seed + SAMPLE_OFFSET)
    with phase(timings, "model: samples at the second temperature", device):
        samples_t2 = generate(model, cfg.n_samples, t2, cfg, seed + SAMPLE_OFFSET)
    with phase(timings, "metric: Laplacian (sharpness, corner artefact)", device):
        sharp, sharp_std = M.sharpness_stats(samples)
        sharp_t2 = M.sharpness(samples_t2)
        corner = M.corner_artefact(samples)
    with phase(timings, "model: log_prob (bits/dim)", device):
        bpd_row = bits_per_dim_row(model, data, cfg, seed, x)
    feature_metrics = [*feature_rows(samples, "generated", real, extractor, cfg, timings=timings),
                       *feature_rows(samples_t2, f"generated at T = {t2:.4g}", real, extractor, cfg, suffix="_t05",
                                     timings=timings)]

    n = cfg.n_samples
    recipe = "4-neighbour Laplacian, valid, variance per image, pixels in [0, 1]"
    rows = [
        MetricRow("test", M.SHARPNESS, sharp, f"{n} samples at T = 1; {recipe}"),
        MetricRow("test", M.SHARPNESS_STD, sharp_std, f"std over {n} samples at T = 1"),
        MetricRow("test", M.SHARPNESS_T05, sharp_t2,
                  f"{n} samples at std multiplier T = {t2:.4g} (second_temperature {cfg.second_temperature} "
                  f"read as a {cfg.second_temperature_is})"),
        MetricRow("test", M.SHARPNESS_GAP, abs(sharp - real.sharpness),
                  f"|sharpness - {real.sharpness:.4f}| (real value on the same {n_test} test images)"),
        MetricRow("test", M.ARTEFACT_CORNER, corner,
                  f"{n} samples at T = 1; mean squared Laplacian in the four {M.CORNER}x{M.CORNER} corners"),
        MetricRow("test", M.RECON_MSE, mse, f"per pixel, {n_test} test images ({model.preprocessing} inputs)"),
        MetricRow("test", M.RECON_SSE, sse, f"per image, {n_test} test images ({model.preprocessing} inputs)"),
        bpd_row,
        MetricRow("test", M.CLASSIFIER_ACCURACY, extractor.test_accuracy,
                  f"LeNet extractor {extractor.weights_hash} on {extractor.n_test} test images"),
        *feature_metrics,
        MetricRow("test", M.PROBE_ACCURACY, probe,
                  f"multinomial logistic regression on standardised codes: {n_probe} train -> {n_test} test"),
        *separation,
        MetricRow("test", M.N_SAMPLES, float(n), "generated samples per temperature"),
        MetricRow("test", M.N_TEST, float(n_test), "test images evaluated"),
    ]
    n_diag = min(cfg.batch_size, n_test)  # the model's own diagnostics (models/contract.py), one batch
    with phase(timings, "model: diagnostics", device):
        diagnostics = model.diagnostics(x[:n_diag])
    rows += [MetricRow("test", f"diag_{k}", v, f"model.diagnostics on the first {n_diag} test images")
             for k, v in diagnostics.items()]
    n_bpd = min(cfg.bpd_subset, n_test) if cfg.bpd_subset > 0 else n_test
    rows.append(MetricRow("test", M.N_BPD, float(n_bpd) if model.has_density else math.nan,
                          "test images scored for bits/dim"))

    n_grid = cfg.grid_size**2
    with phase(timings, "model: interpolations", device):
        paths = interpolations(model, z_test, cfg).cpu().numpy()
    artefacts = {
        "samples_t1": samples[:n_grid].cpu().numpy(),
        "samples_t2": samples_t2[:n_grid].cpu().numpy(),
        "recon_inputs": x[:n_grid].float().cpu().numpy(),
        "recon_outputs": recon[:n_grid].float().cpu().numpy(),
        "interpolations": paths,
        "test_latents": z_test.float().cpu().numpy(),
        "test_labels": labels.cpu().numpy().astype(np.int64),
    }
    return rows, artefacts
