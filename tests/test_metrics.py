"""Oracle tests of the metric functions (bench.metrics) and of the LeNet feature extractor."""

import os

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.signal
import torch

from bench import metrics as M
from bench.classifier import get_classifier

LAPLACE = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="session")
def extractor(mnist, tmp_path_factory):
    """The LeNet extractor, trained once per session (or read from $PIE_BENCH_CACHE)."""
    cache = os.environ.get("PIE_BENCH_CACHE") or tmp_path_factory.getbasetemp() / "pie-bench-cache"
    return get_classifier(mnist, cache_dir=cache)


def unit(images: torch.Tensor) -> torch.Tensor:
    return images.double() / 255.0


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of the two spatial axes of ``[N, 1, H, W]``."""
    if sigma == 0:
        return images.clone()
    out = scipy.ndimage.gaussian_filter(images.numpy(), sigma=(0, 0, sigma, sigma), mode="constant")
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------- sharpness


def test_sharpness_of_the_real_test_set_is_pinned(mnist):
    # Table 1 recipe of the WAE code (Tolstikhin et al. 2018): 0.1825 with it; any other padding/kernel/scale misses it.
    assert M.sharpness(unit(mnist.test_images)) == pytest.approx(0.1825, abs=1e-3)


def test_sharpness_of_a_constant_image_is_zero():
    images = torch.full((3, 1, 28, 28), 0.37)
    assert M.sharpness(images) == pytest.approx(0.0, abs=1e-12)
    assert M.sharpness(torch.zeros(1, 1, 28, 28)) == 0.0


def test_sharpness_falls_monotonically_with_blur(mnist):
    images = unit(mnist.test_images[:1000])
    values = [M.sharpness(blur(images, s)) for s in (0.0, 0.5, 0.75, 1.0, 1.5, 2.0)]
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True)), values


def test_sharpness_equals_a_per_image_scipy_loop(mnist):
    gen = torch.Generator().manual_seed(0)
    images = torch.cat([torch.rand(40, 1, 28, 28, generator=gen, dtype=torch.float64),
                        unit(mnist.test_images[:20])])
    slow = np.array([scipy.signal.convolve2d(img[0], LAPLACE, mode="valid").var() for img in images.numpy()])
    np.testing.assert_allclose(M.laplacian_variance(images).numpy(), slow, rtol=0, atol=1e-6)
    assert M.sharpness(images) == pytest.approx(slow.mean(), abs=1e-6)
    assert M.sharpness(images.float()) == pytest.approx(slow.mean(), abs=1e-6)  # float32 input


def test_laplacian_stencil_equals_the_float64_convolution_bit_for_bit(mnist):
    noise = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    images = torch.cat([unit(mnist.test_images[:50]), noise])
    x = images.to(torch.float64)
    conv = torch.nn.functional.conv2d(x, x.new_tensor(M.LAPLACE_KERNEL).view(1, 1, 3, 3))
    assert torch.equal(M.laplacian_response(images), conv)


def test_laplacian_metrics_in_chunks_equal_one_pass_over_all_images_bit_for_bit(mnist):
    from bench.metrics.artefact import corner_mask
    from bench.metrics.sharpness import CHUNK

    noise = torch.rand(CHUNK // 2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    images = torch.cat([unit(mnist.test_images[:CHUNK + 30]), noise])  # two chunk boundaries, a partial chunk
    response = M.laplacian_response(images)
    assert torch.equal(M.laplacian_variance(images), response.flatten(1).var(dim=1, unbiased=False))
    corner = response[:, 0][:, corner_mask(28, 28)].pow(2).mean(dim=1)
    assert torch.equal(M.corner_laplacian_energy(images), corner)


# ---------------------------------------------------------------------------- Fréchet distance


def correlated_features(n: int, f: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(f, f)) / np.sqrt(f)
    return rng.normal(size=(n, f)) @ mix + shift + rng.normal(size=f)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = torch.from_numpy(correlated_features(2000, 32, seed=1))
    assert M.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_a_sqrtm_reference():
    a, b = correlated_features(1500, 24, seed=2), correlated_features(1200, 24, seed=3, shift=0.3)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Independent form of the trace term: Tr((S_a S_b)^½) = Tr((S_a^½ S_b S_a^½)^½), symmetric sqrtm only.
    root_a = scipy.linalg.sqrtm(s_a).real
    cross = np.trace(scipy.linalg.sqrtm(root_a @ s_b @ root_a).real)
    reference = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * cross
    assert M.frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(reference, rel=1e-8)
    assert M.frechet_distance(a.astype(np.float32), b.astype(np.float32)) == pytest.approx(reference, rel=1e-4)


def test_frechet_distance_grows_with_blur(mnist, extractor):
    reference = extractor.features(unit(mnist.test_images[:3000]))
    other = unit(mnist.test_images[7000:])
    fds = [M.frechet_distance(reference, extractor.features(blur(other, s))) for s in (0.0, 0.5, 1.0, 1.5, 2.0)]
    assert all(a < b for a, b in zip(fds[:-1], fds[1:], strict=True)), fds


# ---------------------------------------------------------------------------- the extractor


def test_classifier_reaches_99_percent_test_accuracy(mnist, extractor):
    logits = extractor.logits(unit(mnist.test_images))
    accuracy = M.accuracy(logits, mnist.test_labels)
    assert accuracy >= mnist.spec.min_classifier_accuracy == 0.99
    assert accuracy == pytest.approx(extractor.test_accuracy, abs=1e-4)
    assert extractor.features(unit(mnist.test_images[:3])).shape == (3, 128)
