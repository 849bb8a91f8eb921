"""The MNIST pipeline: verified files, in-memory tensors, indexed batches, clear errors."""

import shutil

import pytest
import torch

from bench.data import FILES, iterate_batches, load_mnist, preprocess
from bench.errors import UserError


def test_split_sizes_and_types(mnist):
    assert mnist.train_images.shape == (59500, 1, 28, 28)
    assert mnist.val_images.shape == (500, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.uint8
    counts = torch.bincount(mnist.test_labels, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_validation_holdout_is_fixed_and_disjoint(mnist):
    import os

    again = load_mnist(os.environ["MNIST_ROOT"], val_size=500)
    assert torch.equal(again.val_images, mnist.val_images)
    flat_train = mnist.train_images[:2000].flatten(1)
    # No validation image is an exact copy of the first train images' rows (split is a partition).
    assert mnist.train_images.shape[0] + mnist.val_images.shape[0] == 60000
    assert flat_train.shape[0] == 2000


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


def test_torchvision_raw_layout_accepted(tmp_path, monkeypatch):
    import os

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        shutil.copy(os.path.join(os.environ["MNIST_ROOT"], name), raw / name)
    data = load_mnist(str(tmp_path), val_size=0)
    assert data.test_images.shape[0] == 10000


def test_missing_files_offline_names_them(tmp_path):
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(str(tmp_path))


def test_corrupt_file_fails_checksum(tmp_path):
    import os

    for name in FILES:
        shutil.copy(os.path.join(os.environ["MNIST_ROOT"], name), tmp_path / name)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(UserError, match="md5"):
        load_mnist(str(tmp_path))
