"""Class separation of latent codes, beside the linear probe: silhouette and k-NN accuracy.

Both read the codes as the model gives them (no standardisation), with exact Euclidean
distances in float64: the geometry of the latent space itself, whose prior is an isotropic
Gaussian for every model. Distances are taken a chunk of rows at a time (fixed size, so the
values never depend on a batch setting).
"""

from __future__ import annotations

import torch

CHUNK = 512  # rows of a distance matrix at once (512 x 10 000 float64: 40 MB)


def _flat64(z: torch.Tensor) -> torch.Tensor:
    return z.detach().to(torch.float64).reshape(len(z), -1)


def _dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[len(a), len(b)]``, from the differences (no ||a||² + ||b||² − 2ab expansion)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def latent_silhouette(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean silhouette (Rousseeuw 1987) of codes ``[N, d]`` grouped by ``labels``, Euclidean.

    s(i) = (b − a) / max(a, b), a = mean distance to the other codes of its class, b = the
    smallest mean distance to the codes of another class; s(i) = 0 for a class of one (as
    scikit-learn's ``silhouette_score``). In [−1, 1]: high when classes form compact, separate
    clusters. NaN with non-finite codes, or unless 2 <= number of classes < N.
    """
    x = _flat64(z)
    _, y = torch.unique(labels.detach().to(x.device), return_inverse=True)
    n_classes = int(y.max()) + 1 if len(y) else 0
    if not torch.isfinite(x).all() or not 2 <= n_classes < len(x):
        return float("nan")
    onehot = torch.nn.functional.one_hot(y, n_classes).to(torch.float64)  # [N, C]
    sizes = onehot.sum(0)
    s = torch.empty(len(x), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), CHUNK):
        sums = _dists(x[i:i + CHUNK], x) @ onehot  # [chunk, C]: summed distance to each class
        own = y[i:i + CHUNK]
        n_own = sizes[own]
        a = sums.gather(1, own[:, None]).squeeze(1) / (n_own - 1).clamp_min(1)
        means = sums / sizes
        means.scatter_(1, own[:, None], float("inf"))
        b = means.min(1).values
        s[i:i + CHUNK] = torch.where(n_own > 1, (b - a) / torch.maximum(a, b), torch.zeros_like(a))
    return float(torch.nan_to_num(s, nan=0.0).mean())  # a = b = 0 (duplicate codes): 0, as scikit-learn


def knn_accuracy(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor,
                 k: int = 10) -> float:
    """Test accuracy of a k-nearest-neighbour majority vote among the training codes.

    Neighbours at equal distance are taken in training order; a tied vote goes to the lower class
    index (scipy's mode, as scikit-learn's KNeighborsClassifier). Non-finite codes give NaN.
    """
    if k < 1 or train_z.shape[0] < k:
        raise ValueError(f"need at least k={k} >= 1 training codes, got {train_z.shape[0]}")
    ref, query = _flat64(train_z), _flat64(test_z)
    if not (torch.isfinite(ref).all() and torch.isfinite(query).all()):
        return float("nan")
    ref_y, query_y = train_y.detach().to(ref.device).long(), test_y.detach().to(ref.device).long()
    n_classes = int(max(int(ref_y.max()), int(query_y.max()))) + 1
    correct = 0
    for i in range(0, len(query), CHUNK):
        d = _dists(query[i:i + CHUNK], ref)
        # k + 1 smallest (a full sort is ~25x slower): the neighbours are the first k unless the
        # (k+1)-th is as near as the k-th, where topk leaves the order open: there, sort stably.
        values, nearest = torch.topk(d, min(k + 1, d.shape[1]), dim=1, largest=False)
        nearest = nearest[:, :k]
        if values.shape[1] > k:
            tied = (values[:, k] == values[:, k - 1]).nonzero().squeeze(1)
            if len(tied):
                nearest[tied] = torch.sort(d[tied], dim=1, stable=True).indices[:, :k]
        votes = torch.nn.functional.one_hot(ref_y[nearest], n_classes).sum(1)
        correct += int((votes.argmax(1) == query_y[i:i + CHUNK]).sum())
    return correct / len(query)
