"""A finished run's trained weights: ``runs/<id>/weights.safetensors``, the model's state_dict and nothing else.

safetensors holds tensors and a header of strings only, so loading it can never run code (a
pickle can), and the file is small enough to commit (about 1 MB per PIE run of the long preset,
0.5 MB per baseline run). :mod:`bench.reevaluate` scores a run again from it, without training.
Checkpoints (optimiser and RNG states too, ``checkpoint*.pt``) stay out of git.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from bench.results import atomic_write_bytes

WEIGHTS = "weights.safetensors"


def save_weights(run_dir: Path, model: torch.nn.Module, run_id: str) -> Path:
    """Write the model's state_dict to ``run_dir/weights.safetensors`` atomically; returns the path.

    Tensors are stored contiguous (channels-last weights are copied to the standard layout:
    the same values), on the CPU, in their own dtype.
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = run_dir / WEIGHTS
    atomic_write_bytes(path, save_safetensors(state, metadata={"run_id": run_id, "content": "state_dict"}))
    return path


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load ``path`` into ``model`` (every key, nothing more: ``strict``), keeping the model's
    device, dtype and memory format."""
    model.load_state_dict(load_safetensors(path.read_bytes()), strict=True)
