"""Shared constants of the tests (fixtures live in conftest.py)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
# MNIST is found the way the runner finds it: $MNIST_ROOT, else ./data (of the repository).
MNIST_DIR = Path(os.environ.get("MNIST_ROOT") or ROOT / "data").resolve()
# Fashion-MNIST likewise: $FASHION_MNIST_ROOT, else ./data/fashion-mnist.
FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_ROOT") or ROOT / "data" / "fashion-mnist").resolve()
