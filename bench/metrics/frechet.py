"""Fréchet distance between Gaussian fits of two feature sets (Heusel et al. 2017, FID)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

# Largest imaginary part of sqrtm's diagonal accepted as round-off (pytorch-fid uses the same bound).
MAX_IMAG = 1e-3
SQRTM_OFFSET = 1e-6  # added to both covariances' diagonals when sqrtm of their product is singular


def _features64(feats: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"expected features [N >= 2, F], got shape {arr.shape}")
    return arr.astype(np.float64)


def _sqrtm(a: np.ndarray) -> np.ndarray | None:
    """scipy's sqrtm, or None when it reports a singular matrix or returns non-finite values."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            out = scipy.linalg.sqrtm(a)
        except scipy.linalg.LinAlgWarning:
            return None
    return out if np.isfinite(out).all() else None


def feature_stats(feats: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and covariance ``[F, F]`` (ddof 1) of features ``[N, F]``, in float64."""
    arr = _features64(feats)
    return arr.mean(axis=0), np.cov(arr, rowvar=False).reshape(arr.shape[1], arr.shape[1])


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½), in float64.

    Non-finite statistics give NaN (a diverged model), not an exception.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        return float("nan")
    diff = mu1 - mu2
    # Features constant in both sets add nothing to any trace term; dropping them is exact
    # and keeps the product below from being singular for that reason.
    live = (np.diagonal(sigma1) > 0) | (np.diagonal(sigma2) > 0)
    sigma1, sigma2 = sigma1[np.ix_(live, live)], sigma2[np.ix_(live, live)]
    covmean = _sqrtm(sigma1 @ sigma2)
    if covmean is None:  # still singular: regularise both, as pytorch-fid does
        offset = np.eye(sigma1.shape[0]) * SQRTM_OFFSET
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > MAX_IMAG:
            raise ValueError(f"sqrtm returned a complex matrix (largest imaginary diagonal part {imag:.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of features ``[N, F]`` and ``[M, F]``.

    Reference: Heusel et al. 2017, "GANs trained by a two time-scale update rule", Eq. (6).
    """
    return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))
