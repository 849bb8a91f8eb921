"""Kernel distance (KID, Bińkowski et al. 2018): unbiased MMD² with a cubic polynomial kernel."""

from __future__ import annotations

import numpy as np
import torch


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² between ``[m, F]`` and ``[n, F]`` with k(a, b) = (a·b / F + 1)³.

    Within-set sums drop the diagonal and divide by m(m − 1) (resp. n(n − 1));
    the cross term divides by m·n.
    """
    x, y = x.to(torch.float64), y.to(torch.float64)
    m, n, f = x.shape[0], y.shape[0], x.shape[1]
    k_xx = (x @ x.T / f + 1.0).pow(3)
    k_yy = (y @ y.T / f + 1.0).pow(3)
    k_xy = (x @ y.T / f + 1.0).pow(3)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.sum() / (m * n))


def kernel_distance(
    feats_a: torch.Tensor, feats_b: torch.Tensor, subset_size: int = 1000, n_subsets: int = 10, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and std of :func:`polynomial_mmd2` over random subsets of both sets.

    Each subset draws ``min(subset_size, N, M)`` rows of each set without replacement
    from a ``numpy`` generator seeded with ``seed`` (the same seed gives the same number).

    Returns:
        (mean, population std) over the ``n_subsets`` estimates.

    Reference: Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 3 (KID).
    """
    if feats_a.dim() != 2 or feats_b.dim() != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"expected features [N, F] and [M, F], got {tuple(feats_a.shape)} and {tuple(feats_b.shape)}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    size = min(subset_size, feats_a.shape[0], feats_b.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 features per set, got subset size {size}")
    if not (torch.isfinite(feats_a).all() and torch.isfinite(feats_b).all()):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        ia = torch.from_numpy(rng.choice(feats_a.shape[0], size, replace=False)).to(feats_a.device)
        ib = torch.from_numpy(rng.choice(feats_b.shape[0], size, replace=False)).to(feats_b.device)
        values.append(polynomial_mmd2(feats_a[ia], feats_b[ib]))
    arr = np.asarray(values)
    return float(arr.mean()), float(arr.std())
