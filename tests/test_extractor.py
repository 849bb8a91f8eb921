"""One fixed feature extractor: the shipped LeNet weights decide the features, whatever the
cache holds or the thread count is; FD and KID do not depend on the thread count."""

import dataclasses
import hashlib
import io

import pytest
import torch

from bench import classifier as C
from bench import evaluate as E
from bench.config import EvalConfig
from bench.context import Context
from bench.data import ImageData
from tests.helpers import ROOT


def test_shipped_files_match_their_sha256_id_and_recipe():
    for dataset, ship in C.SHIPPED.items():
        raw = ship.path.read_bytes()
        assert hashlib.sha256(raw).hexdigest() == ship.sha256, dataset
        assert len(raw) < 400_000  # small enough to ship in the package
        meta = C.safetensors_metadata(raw)
        assert meta["dataset"] == dataset and meta["weights_id"] == ship.weights_id
        assert meta["threads"] == "1" and int(meta["val_size"]) == C.SHIPPED_VAL_SIZE
        assert meta["recipe"] == '{"batch_size": 128, "epochs": 3, "lr": 0.003, "seed": 0}'
    # A non-editable install carries them: package data of `bench`.
    package_data = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    assert '"bench" = ["extractors/*.safetensors"]' in package_data


def _tiny(data: ImageData, n: int = 512) -> ImageData:
    return dataclasses.replace(data, train_images=data.train_images[:n], train_labels=data.train_labels[:n])


def test_recipe_at_two_thread_counts_and_the_shipped_weights_decide(mnist, tmp_path, monkeypatch):
    """The recipe on a slice at 1 and at 2 threads; at one thread it repeats bit for bit. Each
    result, planted in the cache where a trained extractor of the default recipe would be read,
    decides the trained path's features but not get_classifier's: the shipped weights do."""
    recipe = C.ClassifierRecipe(epochs=1)
    tiny = _tiny(mnist)
    with torch.inference_mode(False):
        one = C.train_classifier(tiny, recipe, threads=1)
        again = C.train_classifier(tiny, recipe, threads=1)
        two = C.train_classifier(tiny, recipe, threads=2)
    assert C.weights_hash(one) == C.weights_hash(again)  # one thread: bit for bit
    images = mnist.test_images[:300].float() / 255
    ship = C.SHIPPED["mnist"]
    feats = {}
    for name, net in (("1 thread", one), ("2 threads", two)):
        path = C.cache_path(mnist, C.ClassifierRecipe(), tmp_path)  # where the default recipe's training is cached
        payload = {"state_dict": net.state_dict(), "test_accuracy": 0.5, "n_test": 1, "train_seconds": 1.0}
        buf = io.BytesIO()
        torch.save(payload, buf)
        path.write_bytes(buf.getvalue())
        ctx = Context(cache_dir=tmp_path)  # a fresh memo: read from the cache folder
        assert C.trained_extractor(mnist, ctx=ctx).weights_hash == C.weights_hash(net)  # the cache would decide...
        ctx = Context(cache_dir=tmp_path)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            extractor = C.get_classifier(mnist, ctx=ctx)  # ...but the shipped weights do
            assert extractor.weights_hash == ship.weights_id and extractor.source.endswith(ship.file)
            feats[name, threads] = extractor.features(images)
    first = feats["1 thread", 1]
    assert all(torch.equal(first, f) for f in feats.values())


def test_shipped_file_that_fails_its_sha256_is_refused(mnist, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "lenet-mnist.safetensors"
    raw = bytearray(C.SHIPPED["mnist"].path.read_bytes())
    raw[-1] ^= 1  # one weight bit
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(C, "EXTRACTOR_DIR", tmp_path)
    with pytest.raises(C.UserError, match="fails its sha256"):
        C.get_classifier(mnist, ctx=Context())


def test_another_recipe_still_trains_and_caches(mnist, tmp_path, monkeypatch):
    """eval.classifier_epochs other than 3 asks for another extractor: trained (one thread), cached."""
    tiny = _tiny(mnist, 256)
    got = C.get_classifier(tiny, epochs=1, cache_dir=tmp_path)
    assert got.source == "trained" and got.weights_hash != C.SHIPPED["mnist"].weights_id
    assert C.cache_path(tiny, C.ClassifierRecipe(epochs=1), tmp_path).is_file()


def test_fd_and_kid_do_not_depend_on_the_thread_count(mnist, monkeypatch):
    """The feature metrics of the same images at 1 and at 2 threads: equal to the last bit."""
    cfg = EvalConfig(batch_size=250, n_samples=2000, test_subset=2000, kid_subset_size=1000, kid_subsets=2)
    fake = mnist.val_images[:500].float().repeat(4, 1, 1, 1) / 255  # 2000 "samples"
    fake = (fake + 0.05 * torch.rand(fake.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    values = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        evaluator = E.Evaluator()  # a fresh one: its real statistics are computed at this thread count
        rows = evaluator.sample_rows(fake, mnist, cfg, set_name="generated")
        values.append({r.metric: r.value for r in rows})
        assert torch.get_num_threads() == threads  # restored after the one-thread block
    assert values[0] == values[1]
    assert set(values[0]) == {"fd_lenet", "kid_lenet", "precision", "recall", "sample_confidence", "confident_fraction"}
