"""Datasets as configuration: Fashion-MNIST next to MNIST, everything dataset-specific from one table."""

import gzip
import hashlib
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from bench import data as D
from bench.config import load_config
from bench.context import Context, resolve
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.record import RunRecord
from bench.run import main
from tests.helpers import FASHION_MNIST_DIR, MNIST_DIR, ROOT, SMOKE


def test_fashion_mnist_loads_from_its_own_root(fashion, mnist):
    assert fashion.dataset == "fashion-mnist" and fashion.spec.n_classes == 10
    assert fashion.train_images.shape == (59500, 1, 28, 28) and fashion.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(fashion.test_labels, minlength=10).tolist() == [1000] * 10  # balanced classes
    assert fashion.checksum != mnist.checksum  # keys the classifier cache and the real-image run id
    assert not torch.equal(fashion.test_images[:100], mnist.test_images[:100])
    # Found the way the runner finds it: $FASHION_MNIST_ROOT (set by conftest), no --data-root.
    assert resolve().root("fashion-mnist") == FASHION_MNIST_DIR
    assert resolve().root("mnist") == MNIST_DIR


def test_real_fashion_sharpness_as_measured_for_table1(fashion):
    from bench.metrics import sharpness

    assert sharpness(fashion.test_images.double() / 255) == pytest.approx(0.1824, abs=5e-5)


def test_umap_legend_names_the_dataset_classes(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from bench import plots

    fig, ax = plt.subplots()
    labels = np.arange(40) % 10
    plots.umap_axes(ax, np.random.default_rng(0).normal(size=(40, 2)), labels, "t", dataset=DATASETS["fashion-mnist"])
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "garment"
    assert [t.get_text() for t in legend.get_texts()] == list(DATASETS["fashion-mnist"].class_names)
    plt.close(fig)


@pytest.mark.fashion_mnist
def test_table_checksums_match_the_files():
    """Both hashes in the table are right for MNIST; Fashion-MNIST's shared copy was recompressed
    (its .gz md5 differs from torchvision's), so only the content sha256 can verify it."""
    for name, root in (("mnist", MNIST_DIR), ("fashion-mnist", FASHION_MNIST_DIR)):
        spec = DATASETS[name]
        for f in spec.files:
            raw = (root / f).read_bytes()
            assert hashlib.sha256(gzip.decompress(raw)).hexdigest() == spec.content_sha256[f]
            if name == "mnist":
                assert hashlib.md5(raw).hexdigest() == spec.gz_md5[f]
    raw = (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert hashlib.md5(raw).hexdigest() != DATASETS["fashion-mnist"].gz_md5["t10k-labels-idx1-ubyte.gz"]


def _copy(root, tmp_path):
    for f in DATASETS["fashion-mnist"].files:
        shutil.copy(root / f, tmp_path / f)


@pytest.mark.fashion_mnist
def test_corrupt_content_is_refused_even_when_well_compressed(tmp_path, capsys):
    _copy(FASHION_MNIST_DIR, tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels = bytearray(gzip.decompress(path.read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10  # one label changed, then a valid gzip again
    path.write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(UserError, match="fails its checksum"):
        D.locate_files(tmp_path, "fashion-mnist")
    assert D.main(["--dataset", "fashion-mnist", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Fashion-MNIST file") and err.count("\n") == 1


@pytest.mark.fashion_mnist
def test_truncated_file_is_refused(tmp_path):
    _copy(FASHION_MNIST_DIR, tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="fails its checksum"):
        D.locate_files(tmp_path, "fashion-mnist")


@pytest.mark.fashion_mnist
def test_content_check_runs_once_per_file(tmp_path, monkeypatch):
    _copy(FASHION_MNIST_DIR, tmp_path)
    ctx = Context(offline=True)  # its memo remembers the files verified
    D.locate_files(tmp_path, "fashion-mnist", ctx)  # verifies by decompressing

    def no_decompress(_):
        raise AssertionError("decompressed again to verify a file already verified")

    monkeypatch.setattr(D.gzip, "decompress", no_decompress)
    assert set(D.locate_files(tmp_path, "fashion-mnist", ctx)) == set(DATASETS["fashion-mnist"].files)
    # A changed file (new size/mtime) is checked again, not taken from the memo.
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(AssertionError, match="decompressed again"):
        D.locate_files(tmp_path, "fashion-mnist", ctx)


def test_missing_fashion_offline_names_its_variable(tmp_path):
    with pytest.raises(UserError, match="FASHION_MNIST_ROOT") as info:
        D.load_data(str(tmp_path), dataset="fashion-mnist", ctx=Context(offline=True))
    assert "Fashion-MNIST" in str(info.value) and "\n" not in str(info.value)


def test_dataset_key_is_validated_and_hashed_into_run_ids():
    with pytest.raises(UserError, match="data.dataset"):
        load_config(SMOKE, overrides=["data.dataset=cifar"])
    mnist = load_config(SMOKE)
    fashion = load_config(SMOKE, overrides=["data.dataset=fashion-mnist"])
    assert RunRecord.of(mnist, "vae", 0).run_id != RunRecord.of(fashion, "vae", 0).run_id
    # MNIST run ids are the ones made before the key existed (committed results keep theirs).
    assert "dataset" not in RunRecord.of(mnist, "vae", 0).identity()["data"]


def test_unknown_dataset_exits_2_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--models", "vae", "--config", SMOKE,
                           "--set", "data.dataset=cifar"], capture_output=True, text=True, cwd=ROOT, env=os.environ)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.fashion_mnist
def test_smoke_run_on_fashion_mnist_writes_its_rows(tmp_path):
    common = ["--config", SMOKE, "--models", "wae", "--seeds", "1", "--no-progress",
              "--set", "eval.classifier_epochs=1"]
    fashion_out = tmp_path / "fashion"
    assert main([*common, "--out", str(fashion_out), "--dataset", "fashion-mnist"]) == 0
    table = pd.read_csv(fashion_out / "metrics.csv")
    assert set(table["dataset"]) == {"fashion-mnist"} and set(table["model"]) == {"wae", "real"}
    mnist_cfg = load_config(SMOKE, overrides=["eval.classifier_epochs=1"])
    fashion_cfg = load_config(SMOKE, overrides=["eval.classifier_epochs=1", "data.dataset=fashion-mnist"])
    run_ids = set(table.loc[table["model"] == "wae", "run_id"])
    assert run_ids == {RunRecord.of(fashion_cfg, "wae", 0).run_id} != {RunRecord.of(mnist_cfg, "wae", 0).run_id}
    # The real test images of Fashion-MNIST, with Table 1's sharpness recipe.
    real = table[(table["model"] == "real") & (table["metric"] == "sharpness")]["value"]
    assert len(real) == 1 and real.iloc[0] == pytest.approx(0.1824, abs=5e-4)  # the first 500 test images
    classifier = table[table["metric"] == "classifier_accuracy"]["value"]
    assert (classifier > 0.8).all()  # one epoch; the shipped 3-epoch weights: docs/first-run.md
