"""Tests of bench.evaluate: bits/dim against an analytic density, batch-size and seed invariance."""

import dataclasses
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from baselines.vae import VAE, VAEConfig
from baselines.wae import WAE, WAEConfig
from bench import evaluate as bench_evaluate
from bench import metrics as M
from bench.classifier import get_classifier
from bench.config import EvalConfig
from bench.evaluate import evaluate_model
from bench.evaluate_real import evaluate_real
from models.contract import GenerativeEncoder

SMALL = EvalConfig(batch_size=100, n_samples=400, test_subset=400, grid_size=4, probe_train_size=400,
                   kid_subset_size=100, kid_subsets=3, bpd_subset=200, log_prob_batch_size=50)
ARTEFACT_SHAPES = {  # for SMALL and latent_dim 8
    "samples_t1": (16, 1, 28, 28), "samples_t2": (16, 1, 28, 28), "recon_inputs": (16, 1, 28, 28),
    "recon_outputs": (16, 1, 28, 28), "interpolations": (80, 1, 28, 28), "test_latents": (400, 8),
    "test_labels": (400,),
}


@pytest.fixture(scope="session")
def extractor(mnist, tmp_path_factory):
    """Trains (or loads) the LeNet once; evaluate_model then finds it in the process cache."""
    cache = os.environ.get("PIE_BENCH_CACHE") or tmp_path_factory.getbasetemp() / "pie-bench-cache"
    return get_classifier(mnist, cache_dir=cache)


class GaussianPixels(GenerativeEncoder):
    """Known density: x ~ N(0, I) in pixel space; a random linear code for the rest of the contract."""

    has_density = True
    log_prob_estimator = "exact: independent N(0, 1) pixels"
    preprocessing = "dequantize"

    def __init__(self, latent_dim: int = 8):
        super().__init__()
        self.latent_dim = latent_dim
        self.enc = nn.Linear(784, latent_dim)
        self.dec = nn.Linear(latent_dim, 784)

    def encode(self, x):
        return self.enc(x.flatten(1))

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(-1, 1, 28, 28)

    def log_prob(self, x):
        return (-0.5 * x.pow(2) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def small_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(width=0.0625, iw_samples=4))


def as_dict(rows) -> dict[str, float]:
    out = {r.metric: r.value for r in rows}
    assert len(out) == len(rows), "duplicate metric names"
    return out


def test_bits_per_dim_of_a_known_density_is_analytic(mnist, extractor):
    rows, _ = evaluate_model(GaussianPixels(), mnist, SMALL, seed=0)
    # E_u[((k + u)/256)²] = (k² + k + 1/3) / 256²; D = 784.
    k = mnist.test_images[:SMALL.bpd_subset].double().flatten(1)
    expected_sq = ((k**2 + k + 1 / 3) / 256**2).sum(1).mean()
    d = 784
    analytic = (0.5 * expected_sq + 0.5 * d * math.log(2 * math.pi) + d * math.log(256)) / (d * math.log(2))
    # Tolerance: only the dequantisation noise u differs from the expectation (~1e-6 bits/dim here).
    assert as_dict(rows)[M.BITS_PER_DIM] == pytest.approx(float(analytic), abs=1e-4)


def test_metrics_do_not_depend_on_the_evaluation_batch_size(mnist, extractor):
    results = [evaluate_model(small_vae(), mnist, dataclasses.replace(SMALL, batch_size=bs), seed=1)
               for bs in (64, 400)]
    (rows_a, art_a), (rows_b, art_b) = results
    a, b = as_dict(rows_a), as_dict(rows_b)
    assert set(a) == set(M.MODEL_METRICS)
    assert {k: v.shape for k, v in art_a.items()} == ARTEFACT_SHAPES
    for name in M.MODEL_METRICS:  # float32 convolutions may round differently per batch size
        assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-7), name
    for key in ARTEFACT_SHAPES:
        np.testing.assert_allclose(art_b[key], art_a[key], rtol=0, atol=1e-5, err_msg=key)


def test_the_same_seed_gives_the_same_numbers(mnist, extractor):
    def run(seed):
        torch.manual_seed(0)
        return evaluate_model(WAE(WAEConfig(width=0.0625)), mnist, SMALL, seed=seed)

    (rows_a, art_a), (rows_b, art_b), (rows_c, _) = run(5), run(5), run(6)
    a, b, c = as_dict(rows_a), as_dict(rows_b), as_dict(rows_c)
    np.testing.assert_equal(a, b)  # NaN-aware: the WAE's bits/dim is NaN in both
    for key in art_a:
        np.testing.assert_array_equal(art_a[key], art_b[key])
    assert a[M.SHARPNESS] != c[M.SHARPNESS]  # the seed does reach the samples
    bpd = next(r for r in rows_a if r.metric == M.BITS_PER_DIM)
    assert math.isnan(bpd.value) and bpd.note == "not applicable: model defines no density"
    real_a, real_b = as_dict(evaluate_real(mnist, SMALL)), as_dict(evaluate_real(mnist, SMALL))
    assert set(real_a) == set(M.REAL_METRICS)
    np.testing.assert_equal(real_a, real_b)


def test_channels_last_evaluation_moves_no_metric_beyond_float_rounding(mnist, extractor):
    a = as_dict(evaluate_model(small_vae(), mnist, dataclasses.replace(SMALL, channels_last=False), seed=2)[0])
    b = as_dict(evaluate_model(small_vae(), mnist, dataclasses.replace(SMALL, channels_last=True), seed=2)[0])
    for name in M.MODEL_METRICS:
        assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-7), name


class ZeroReconstruction(GaussianPixels):
    """Overrides the contract's reconstruct: evaluation must call it, not decode(encode(x))."""

    def reconstruct(self, x):
        return torch.zeros_like(x)


def test_reconstructions_reuse_the_test_codes_only_under_the_contracts_reconstruct(mnist, extractor):
    torch.manual_seed(0)
    model = GaussianPixels()
    rows, art = evaluate_model(model, mnist, SMALL, seed=0)
    with torch.inference_mode():
        direct = model.reconstruct(torch.from_numpy(art["recon_inputs"]))
    np.testing.assert_allclose(art["recon_outputs"], direct.numpy(), rtol=0, atol=1e-6)
    rows, art = evaluate_model(ZeroReconstruction(), mnist, SMALL, seed=0)
    assert np.all(art["recon_outputs"] == 0)
    x, _ = bench_evaluate.test_inputs(ZeroReconstruction(), mnist, SMALL, seed=0)
    assert as_dict(rows)[M.RECON_MSE] == pytest.approx(float(x.double().pow(2).mean()), rel=1e-6)


def test_evaluation_caps_blas_threads_at_torch_threads_and_restores_them():
    import threadpoolctl

    from bench.evaluate import blas_threads_like_torch

    def blas_threads():
        return {d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"}

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        before = blas_threads()
        assert before, "no BLAS library seen by threadpoolctl"
        assert blas_threads_like_torch(blas_threads)() == {1}
        assert blas_threads() == before
    finally:
        torch.set_num_threads(torch_threads)


def test_second_temperature_feature_metrics_are_those_of_its_own_samples(mnist, extractor):
    # At second_temperature = 1 the second set of samples is the first one (same latent draws), so its
    # fd/kid/precision/recall equal the T = 1 values; at 0.5 they are measured on other images.
    torch.manual_seed(0)
    same = as_dict(evaluate_model(small_vae(), mnist, dataclasses.replace(SMALL, second_temperature=1.0), seed=3)[0])
    torch.manual_seed(0)
    half = as_dict(evaluate_model(small_vae(), mnist, SMALL, seed=3)[0])
    for t05, t1 in zip(M.FEATURE_METRICS_T05, (M.FD_LENET, M.KID_LENET, M.PRECISION, M.RECALL), strict=True):
        assert same[t05] == same[t1], t05
        assert half[t1] == same[t1], t05
    assert half[M.FEATURE_METRICS_T05[0]] != half[M.FD_LENET]  # (an untrained model's precision is 0 at both)


def test_phase_timings_cover_the_models_calls_and_leave_every_number_unchanged(mnist, extractor):
    plain_rows, plain_art = evaluate_model(small_vae(), mnist, SMALL, seed=2)
    timings: dict[str, float] = {}
    rows, art = evaluate_model(small_vae(), mnist, SMALL, seed=2, timings=timings)
    np.testing.assert_equal(as_dict(rows), as_dict(plain_rows))
    for key in plain_art:
        np.testing.assert_array_equal(art[key], plain_art[key])
    model_phases = {"model: encode test images", "model: reconstruct test images", "model: encode probe images",
                    "model: samples at T = 1", "model: samples at the second temperature",
                    "model: log_prob (bits/dim)", "model: diagnostics", "model: interpolations"}
    assert model_phases <= set(timings)
    assert {"metric: LeNet features", "metric: precision/recall", "metric: Laplacian (sharpness, corner artefact)",
            "metric: linear probe"} <= set(timings)
    assert all(k.startswith(("model: ", "metric: ")) and v >= 0.0 for k, v in timings.items())
    assert bench_evaluate.model_seconds(timings) == pytest.approx(sum(timings[k] for k in model_phases))


def test_confidence_and_separation_rows_are_those_of_the_lenet_and_the_codes(mnist, extractor):
    """sample_confidence* are the LeNet's (full forward) softmax on the very samples; the separation rows
    are the metric functions on the test codes (the probe's training codes vote for knn_accuracy)."""
    torch.manual_seed(0)
    model = small_vae()
    rows, art = evaluate_model(model, mnist, SMALL, seed=4)
    got = as_dict(rows)
    for suffix, t in (("", 1.0), ("_t05", SMALL.second_temperature_std())):
        with torch.inference_mode():
            samples = bench_evaluate.generate(model, SMALL.n_samples, t, SMALL, 4 + bench_evaluate.SAMPLE_OFFSET)
        mean, frac = M.sample_confidence(extractor.logits(samples), SMALL.confidence_threshold)
        assert got[M.SAMPLE_CONFIDENCE + suffix] == pytest.approx(mean, rel=1e-6)
        assert got[M.CONFIDENT_FRACTION + suffix] == pytest.approx(frac, abs=1.5 / SMALL.n_samples)
    z, y = torch.from_numpy(art["test_latents"]), torch.from_numpy(art["test_labels"])
    assert got[M.LATENT_SILHOUETTE] == pytest.approx(M.latent_silhouette(z, y), abs=1e-12)
    with torch.inference_mode():
        x_train = bench_evaluate.preprocess(
            mnist.train_images[:SMALL.probe_train_size], model.preprocessing,
            torch.Generator().manual_seed(4 + bench_evaluate.PROBE_NOISE_OFFSET), torch.float32)
        z_train = bench_evaluate.batched(model.encode, x_train, SMALL.batch_size)
    knn = M.knn_accuracy(z_train, mnist.train_labels[:SMALL.probe_train_size], z, y, SMALL.knn_k)
    assert got[M.KNN_ACCURACY] == pytest.approx(knn, abs=1.5 / len(y))
    assert 0.1 < got[M.KNN_ACCURACY] <= 1 and -1 <= got[M.LATENT_SILHOUETTE] <= 1


@pytest.mark.parametrize("override, message", [("eval.knn_k=0", "eval.knn_k"), ("eval.knn_k=20000", "eval.knn_k"),
                                               ("eval.confidence_threshold=1", "eval.confidence_threshold")])
def test_separation_and_confidence_settings_are_checked(override, message):
    from bench.config import load_config
    from bench.errors import UserError
    from tests.helpers import SMOKE

    with pytest.raises(UserError, match=message):
        load_config(SMOKE, [override])
