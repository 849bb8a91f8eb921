"""The MNIST pipeline: verified files, in-memory tensors, indexed batches, clear errors."""

import shutil

import numpy as np
import pytest
import torch

from bench.context import Context
from bench.data import _read_idx, iterate_batches, load_data, locate_files, preprocess
from bench.errors import UserError
from tests.helpers import MNIST_DIR


def test_split_sizes_and_types(mnist):
    assert mnist.train_images.shape == (59500, 1, 28, 28)
    assert mnist.val_images.shape == (500, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.uint8
    counts = torch.bincount(mnist.test_labels, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _rows(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Each (image, label) as one 785-byte record, sorted: a multiset that can be compared."""
    flat = np.asarray(images, dtype=np.uint8).reshape(len(images), -1)
    rows = np.ascontiguousarray(np.concatenate([flat, np.asarray(labels, dtype=np.uint8)[:, None]], axis=1))
    return np.sort(rows.view(np.dtype((np.void, rows.shape[1]))).ravel())


def test_validation_holdout_is_fixed_and_disjoint(mnist):
    # Fixed: the same split on every load, whatever the global RNG state (the run seed).
    with torch.random.fork_rng():
        torch.manual_seed(12345)
        again = load_data(str(MNIST_DIR), val_size=500)
    assert torch.equal(again.val_images, mnist.val_images) and torch.equal(again.train_images, mnist.train_images)
    assert torch.equal(again.val_labels, mnist.val_labels)
    # Disjoint and complete: validation + training are exactly the 60 000 original training
    # records, each used once (compared as multisets of (image, label), so duplicates count).
    assert len(mnist.val_images) == 500 and len(mnist.train_images) + len(mnist.val_images) == 60000
    files = locate_files(MNIST_DIR)
    train_x = _read_idx(files["train-images-idx3-ubyte.gz"], 16, (60000, 1, 28, 28))
    train_y = _read_idx(files["train-labels-idx1-ubyte.gz"], 8, (60000,))
    split = _rows(torch.cat([mnist.val_images, mnist.train_images]), torch.cat([mnist.val_labels, mnist.train_labels]))
    assert np.array_equal(split, _rows(train_x, train_y))
    # A shuffled draw (seeded by data.val_seed), not simply the first or the last 500 images.
    val = mnist.val_images.numpy()
    assert not np.array_equal(val, train_x[:500]) and not np.array_equal(val, train_x[-500:])


def test_preprocessing_ranges():
    k = torch.tensor([[0, 255]], dtype=torch.uint8)
    assert preprocess(k, "unit").tolist() == [[0.0, 1.0]]
    deq = preprocess(k.expand(1000, 2), "dequantize", torch.Generator().manual_seed(0))
    assert deq[:, 0].min() >= 0 and deq[:, 0].max() < 1 / 256
    assert deq[:, 1].min() >= 255 / 256 and deq[:, 1].max() < 1


def test_batches_cover_an_epoch_once():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat([b.flatten() * 255 for b in iterate_batches(images, 5, gen, "unit")])
    assert sorted(seen.round().long().tolist()) == list(range(10))


def test_torchvision_raw_layout_accepted(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, path in locate_files(MNIST_DIR).items():
        shutil.copy(path, raw / name)
    data = load_data(str(tmp_path), val_size=0)
    assert data.test_images.shape[0] == 10000


def test_missing_files_offline_names_them_and_says_how_to_get_them(tmp_path):
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz") as info:
        load_data(str(tmp_path), ctx=Context(offline=True))
    message = str(info.value)
    assert "\n" not in message and "./data" in message and "MNIST_ROOT" in message and "run_all.sh" in message


def test_corrupt_file_fails_checksum(tmp_path):
    for name, path in locate_files(MNIST_DIR).items():
        shutil.copy(path, tmp_path / name)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(UserError, match="md5"):
        load_data(str(tmp_path))


def test_data_command_checks_the_files_in_one_line(tmp_path, capsys):
    from bench.data import main

    assert main(["--data-root", str(MNIST_DIR)]) == 0
    assert capsys.readouterr().out.startswith("MNIST: ")
    assert main(["--data-root", str(tmp_path)]) == 2  # offline in tests: no download attempted
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "MNIST_ROOT" in err
