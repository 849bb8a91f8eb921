"""Shared fixtures: real MNIST from the shared folder, never the network."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ["PIE_BENCH_OFFLINE"] = "1"
os.environ.setdefault("MNIST_ROOT", str(ROOT.parent / "shared" / "data" / "mnist"))
# One classifier cache for the whole session, subprocesses included: the LeNet trains once.
os.environ.setdefault("PIE_BENCH_CACHE", str(ROOT / ".cache" / "pie-bench"))
SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.fixture(scope="session")
def mnist():
    from bench.data import load_mnist

    return load_mnist(os.environ["MNIST_ROOT"], val_size=500)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests on tiny tensors: faster, and far faster when other
    processes share the 2 CPU cores (OpenMP threads then spin against each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
