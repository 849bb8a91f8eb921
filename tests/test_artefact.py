"""The corner artefact score (bench.metrics.artefact) on synthetic and real images."""

import pytest
import torch

from bench import metrics as M
from bench.metrics.artefact import corner_mask


def _digits(mnist, n=500):
    return mnist.test_images[:n].float() / 255.0


def _dot_grid(n, amplitude=1.0, period=4, phase=(2, 1)):
    grid = torch.zeros(n, 1, 28, 28)
    grid[:, :, phase[0]::period, phase[1]::period] = amplitude
    return grid


def test_blank_scores_zero_and_noise_scores_high():
    assert M.corner_artefact(torch.zeros(4, 1, 28, 28)) == 0.0
    assert M.corner_artefact(torch.full((4, 1, 28, 28), 0.7)) == pytest.approx(0.0, abs=1e-12)  # flat: no edges
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert M.corner_artefact(noise) == pytest.approx(20 / 12, rel=0.05)  # E[(Lu)²] = 20 Var(u) = 20 / 12


def test_real_digits_low_and_a_dot_grid_over_them_high(mnist):
    real = _digits(mnist)
    real_score = M.corner_artefact(real)
    assert real_score < 1e-3  # the corners of MNIST digits are black
    dotted = (real + _dot_grid(len(real), amplitude=0.5)).clamp(0, 1)
    dotted_score = M.corner_artefact(dotted)
    assert dotted_score > 100 * real_score and dotted_score > 0.05
    # the same dots make sharpness exceed the real digits' value: why sharpness needs this check
    assert M.sharpness(dotted) > M.sharpness(real)


def test_single_dot_energy_and_corner_mask():
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 1, 1] = 1.0  # inside the top-left 4x4 square
    # the dot's Laplacian: -4 at its centre and 1 at the neighbours inside the 3x3 valid positions of the corner
    # (centres (1,1), (1,2), (2,1)); the neighbours (0,1), (1,0) are outside the valid response
    assert M.corner_artefact(img) == pytest.approx((16 + 1 + 1) / (4 * 9))
    centre = torch.zeros(1, 1, 28, 28)
    centre[0, 0, 14, 14] = 1.0  # a digit-like stroke in the middle does not count
    assert M.corner_artefact(centre) == 0.0
    assert corner_mask(28, 28).sum() == 4 * (M.CORNER - 1) ** 2
    with pytest.raises(ValueError):
        corner_mask(28, 28, corner=15)
