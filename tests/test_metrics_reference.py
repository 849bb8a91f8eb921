"""KID, precision/recall, the linear probe, sample confidence, silhouette and k-NN accuracy against
independent slow references."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from bench.metrics import (
    knn_accuracy,
    latent_silhouette,
    linear_probe_accuracy,
    polynomial_mmd2,
    precision_recall,
    sample_confidence,
)
from bench.metrics.separation import CHUNK as CHUNK_KNN


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



# ---------------------------------------------------------------------------- C4 and C5: confidence, separation


def slow_confidence(logits, threshold):
    tops = []
    for row in logits:
        p = np.exp(row - row.max())
        tops.append((p / p.sum()).max())
    return np.mean(tops), np.mean([t > threshold for t in tops])


def slow_silhouette(x, y):
    """Rousseeuw (1987), point by point; s(i) = 0 for a class of one."""
    s = []
    for i in range(len(x)):
        d = np.sqrt(((x - x[i]) ** 2).sum(1))
        same = (y == y[i]) & (np.arange(len(x)) != i)
        if not same.any():
            s.append(0.0)
            continue
        a = d[same].mean()
        b = min(d[y == c].mean() for c in np.unique(y) if c != y[i])
        s.append((b - a) / max(a, b))
    return np.mean(s)


def slow_knn(train, train_y, test, test_y, k):
    """Majority vote of the k nearest training points (stable order of equal distances, lowest label on a tie)."""
    hits = []
    for q, label in zip(test, test_y, strict=True):
        nearest = np.argsort(np.sqrt(((train - q) ** 2).sum(1)), kind="stable")[:k]
        votes = np.bincount(train_y[nearest], minlength=train_y.max() + 1)
        hits.append(int(np.argmax(votes) == label))  # argmax: the first (lowest) label of a tie
    return np.mean(hits)


def test_sample_confidence_matches_a_softmax_per_row():
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(5)) * 3
    mean, frac = sample_confidence(logits, 0.9)
    ref_mean, ref_frac = slow_confidence(logits.double().numpy(), 0.9)
    assert mean == pytest.approx(ref_mean, abs=1e-12) and frac == ref_frac
    assert 0 < frac < 1  # non-trivial: some rows either side of the threshold
    assert sample_confidence(logits, 0.5)[1] > frac
    assert np.isnan(sample_confidence(torch.full((3, 10), float("nan")))[0])


def test_silhouette_matches_a_point_by_point_reference_and_scikit_learn():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, CHUNK_KNN + 40)  # across chunks
    x = rng.normal(size=(len(y), 5)) + np.eye(5)[y] * 4.0
    y[0] = 7  # a class of one
    got = latent_silhouette(torch.from_numpy(x).float(), torch.from_numpy(y))
    xf = torch.from_numpy(x).float().double().numpy()  # the codes as the metric sees them
    assert got == pytest.approx(slow_silhouette(xf, y), abs=1e-12)
    assert got == pytest.approx(silhouette_score(xf, y), abs=1e-12)
    assert 0.1 < got < 0.9
    assert np.isnan(latent_silhouette(torch.from_numpy(x), torch.zeros(len(y), dtype=torch.long)))  # one class


def test_knn_accuracy_matches_a_brute_force_vote_with_ties():
    rng = np.random.default_rng(7)
    # integer codes on a small grid: many training codes at exactly the same distance, and tied votes (k = 10)
    train = rng.integers(0, 3, size=(400, 2)).astype(np.float64)
    train_y = (train.sum(1) + rng.integers(0, 2, 400)).astype(np.int64) % 4
    test = rng.integers(0, 3, size=(CHUNK_KNN + 30, 2)).astype(np.float64)
    test_y = (test.sum(1) + rng.integers(0, 2, len(test))).astype(np.int64) % 4
    args = [torch.from_numpy(a) for a in (train, train_y, test, test_y)]
    assert knn_accuracy(*args, k=10) == slow_knn(train, train_y, test, test_y, 10)
    # continuous codes: no ties
    train, test = rng.normal(size=(300, 6)), rng.normal(size=(120, 6))
    train_y, test_y = rng.integers(0, 3, 300), rng.integers(0, 3, 120)
    train[:, 0] += train_y * 1.5
    test[:, 0] += test_y * 1.5
    args = [torch.from_numpy(a) for a in (train, train_y, test, test_y)]
    got = knn_accuracy(*args, k=10)
    assert got == slow_knn(train, train_y, test, test_y, 10) and 0.5 < got < 1
    assert knn_accuracy(*args, k=1) == slow_knn(train, train_y, test, test_y, 1)
    train[3, 2] = np.nan
    assert np.isnan(knn_accuracy(*[torch.from_numpy(a) for a in (train, train_y, test, test_y)]))
