"""Shared fixtures: real MNIST from $MNIST_ROOT, else ./data (Fashion-MNIST: $FASHION_MNIST_ROOT, else
./data/fashion-mnist); never the network."""

import functools
import os

import pytest
import torch

from tests.helpers import FASHION_MNIST_DIR, MNIST_DIR, ROOT

os.environ["PIE_BENCH_OFFLINE"] = "1"
# Absolute, so runner subprocesses started in another directory find the same files.
os.environ["MNIST_ROOT"] = str(MNIST_DIR)
os.environ["FASHION_MNIST_ROOT"] = str(FASHION_MNIST_DIR)
# One classifier cache for the whole session, subprocesses included: the LeNet trains once.
os.environ.setdefault("PIE_BENCH_CACHE", str(ROOT / ".cache" / "pie-bench"))


@pytest.fixture(scope="session")
def mnist():
    from bench.data import load_data
    from bench.errors import UserError

    try:
        return load_data(str(MNIST_DIR), val_size=500)
    except UserError as e:  # one line saying how to get the data, not a traceback
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def linear_ae():
    """A fourth model, ``linear_ae`` (tests/toy_model.py), in the registry for one test, through its
    public ``register``."""
    from bench.registry import MODELS, register
    from tests.toy_model import LinearAutoencoder, LinearAutoencoderConfig

    register("linear_ae", LinearAutoencoder, LinearAutoencoderConfig)
    try:
        yield "linear_ae"
    finally:
        MODELS.pop("linear_ae")


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """CLI mains called in-process (bench.run, bench.perf) set torch's thread count for the
    whole process; restore it so no test inherits another's setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests on tiny tensors: faster, and far faster when other
    processes share the 2 CPU cores (OpenMP threads then spin against each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fashion():
    from bench.data import load_data
    from bench.errors import UserError

    try:
        return load_data(str(FASHION_MNIST_DIR), val_size=500, dataset="fashion-mnist")
    except UserError as e:
        pytest.fail(str(e), pytrace=False)


# ----------------------------------------------------------------------------- Fashion-MNIST
# Tests that read the Fashion-MNIST files carry the mark ``fashion_mnist`` (those using the
# ``fashion`` fixture get it here). Without the files each fails with one line saying how to get
# them; ``-m "not fashion_mnist"`` runs the rest on MNIST alone, and the summary names what was
# left out. Never a silent skip.


@functools.cache
def _fashion_missing() -> str | None:
    from bench.context import Context
    from bench.data import locate_files
    from bench.errors import UserError

    try:
        locate_files(FASHION_MNIST_DIR, "fashion-mnist", Context(offline=True))
    except UserError as e:
        return str(e)
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "fashion" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fashion_mnist)


def pytest_runtest_setup(item):
    if item.get_closest_marker("fashion_mnist") and _fashion_missing():
        pytest.fail(f"Fashion-MNIST data missing: {_fashion_missing()} (MNIST only: -m 'not fashion_mnist')",
                    pytrace=False)


_DESELECTED: list = []


def pytest_deselected(items):
    _DESELECTED.extend(i for i in items if i.get_closest_marker("fashion_mnist"))


def pytest_terminal_summary(terminalreporter):
    if _DESELECTED:
        terminalreporter.write_line(
            f"not covered: {len(_DESELECTED)} Fashion-MNIST test(s) deselected (-m 'not fashion_mnist'): "
            + ", ".join(sorted({i.nodeid.split('::')[-1] for i in _DESELECTED})), yellow=True)
