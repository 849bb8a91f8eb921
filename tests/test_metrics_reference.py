"""KID, precision/recall and the linear probe against independent slow references."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from bench.metrics import linear_probe_accuracy, polynomial_mmd2, precision_recall


def slow_mmd2(x, y):
    f = x.shape[1]
    k = lambda a, b: (a @ b / f + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def slow_precision_recall(real, fake, k):
    def radii(a):
        d = cdist(a, a, "sqeuclidean")
        return np.sort(d, axis=1)[:, k]  # index 0 is the point itself

    r_rad, f_rad = radii(real), radii(fake)
    d = cdist(fake, real, "sqeuclidean")  # [fake, real]
    precision = np.mean([(d[i] <= r_rad).any() for i in range(len(fake))])
    recall = np.mean([(d[:, j] <= f_rad).any() for j in range(len(real))])
    return precision, recall


def test_kid_matches_a_double_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 5, generator=g), torch.randn(9, 5, generator=g) + 0.3
    assert polynomial_mmd2(x, y) == pytest.approx(slow_mmd2(x.double().numpy(), y.double().numpy()), abs=1e-10)


def test_precision_recall_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 6)).astype(np.float32)
    fake = (rng.normal(size=(250, 6)) * 1.5 + 0.5).astype(np.float32)
    p, r = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=5)
    p_ref, r_ref = slow_precision_recall(real.astype(np.float64), fake.astype(np.float64), 5)
    assert (p, r) == pytest.approx((p_ref, r_ref), abs=1e-12)
    assert 0 < p < 1 and r > 0  # non-trivial: some fakes fall outside the real manifold


def test_precision_recall_of_a_set_with_itself_is_one():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    assert precision_recall(x, x.clone(), k=5) == (1.0, 1.0)


def test_probe_separates_separable_codes_and_not_random_labels():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(600) % 3
    z = torch.randn(600, 4, generator=g) * 0.1 + torch.nn.functional.one_hot(y, 4).float() * 3
    assert linear_probe_accuracy(z[:400], y[:400], z[400:], y[400:], n_classes=3) == 1.0
    noise = torch.randn(600, 4, generator=g)
    acc = linear_probe_accuracy(noise[:400], y[:400], noise[400:], y[400:], n_classes=3)
    assert acc < 0.5  # chance is 1/3


def test_precision_recall_match_a_brute_force_reference_across_chunks():
    # More rows than precision_recall.CHUNK: the chunked k-NN radii and comparisons are exercised.
    from bench.metrics.precision_recall import CHUNK

    rng = np.random.default_rng(3)
    real = rng.normal(size=(CHUNK + 76, 16)).astype(np.float32)
    fake = (rng.normal(size=(CHUNK + 30, 16)) * 1.3 + 0.2).astype(np.float32)
    p, r = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=5)
    assert (p, r) == pytest.approx(slow_precision_recall(real.astype(np.float64), fake.astype(np.float64), 5),
                                   abs=1e-12)


def test_knn_radii_equal_the_unfused_distance_expression_bit_for_bit():
    # _sq_dists computes ||a||² + ||b||² − 2 a·b in place; the values must be those of the plain expression.
    from bench.metrics.precision_recall import CHUNK, _centred, knn_radii

    feats = torch.randn(CHUNK + 100, 128, generator=torch.Generator().manual_seed(4)) * 3 + 1
    x = _centred(feats, feats.to(torch.float64).mean(0))
    sq = x.pow(2).sum(1)
    plain = (x.pow(2).sum(1, keepdim=True) + sq.unsqueeze(0) - 2.0 * x @ x.T).clamp_min(0.0)
    assert torch.equal(knn_radii(feats, 5), torch.topk(plain, 6, dim=1, largest=False).values[:, 5])

