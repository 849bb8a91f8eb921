"""Artefact score for sample metrics: Laplacian energy in the image corners.

Laplacian variance (``sharpness``) rewards any high-frequency pattern, including
artefacts that real digits never show: a decoder that paints a regular grid of dots
over the black background scores far *above* real digits. MNIST digits are centred
in a 20×20 box (LeCun et al. 1998), so the four corner squares of the 28×28 image are
black in nearly every real test image (the outer rows and columns are not: wide digits
reach the left and right edges). Energy of the same Laplacian there is therefore
artefact, not detail.
"""

from __future__ import annotations

import torch

from bench.metrics.sharpness import CHUNK, _check_images, laplacian_response

CORNER = 4  # side of each corner square, pixels: real MNIST test digits score ~3e-4 here


def corner_mask(height: int, width: int, corner: int = CORNER) -> torch.Tensor:
    """``[H - 2, W - 2]`` bool mask of the 'valid' Laplacian positions centred in a corner square."""
    if corner < 2 or 2 * corner > min(height, width):
        raise ValueError(f"corner must lie in [2, min(H, W) / 2], got {corner} for {height}x{width}")
    rows, cols = torch.arange(1, height - 1), torch.arange(1, width - 1)  # centre pixel of each position
    in_rows = (rows < corner) | (rows >= height - corner)
    in_cols = (cols < corner) | (cols >= width - corner)
    return in_rows[:, None] & in_cols[None, :]


def corner_laplacian_energy(images: torch.Tensor, corner: int = CORNER) -> torch.Tensor:
    """Per-image mean squared 4-neighbour Laplacian response inside the four corner squares.

    Args:
        images: ``[N, 1, H, W]`` grey images in ``[0, 1]``.
        corner: side of each corner square in pixels; positions whose centre pixel lies
            in a square count (``(corner - 1)²`` per corner).

    Returns:
        ``[N]`` float64. A blank image scores 0; an isolated dot of height ``a`` adds
        ``20 a²`` to the sum it is averaged from (centre ``-4a``, four neighbours ``a``).
    """
    _check_images(images)
    mask = corner_mask(images.shape[2], images.shape[3], corner).to(images.device)
    # 'valid' response, as in sharpness, in chunks of images (cache-sized, same values per image)
    return torch.cat([laplacian_response(chunk)[:, 0][:, mask].pow(2).mean(dim=1) for chunk in images.split(CHUNK)])


def corner_artefact(images: torch.Tensor, corner: int = CORNER) -> float:
    """Mean over images of :func:`corner_laplacian_energy` (the ``artefact_corner`` metric)."""
    return float(corner_laplacian_energy(images, corner).mean())
