"""The image shape comes from the dataset table (``bench.datasets``): the harness sets every model
config's ``image_shape`` from ``data.dataset``, and the models, the DCGAN nets and the LeNet build
for that shape. Checked with a made-up dataset of 32 × 32 images (no files are read)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.classifier import LeNet
from bench.config import load_config
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.registry import MODELS, build_model
from tests.helpers import SMOKE

SHAPE = (1, 32, 32)


@pytest.fixture
def square32(monkeypatch):
    """A dataset row like MNIST's but of 32 × 32 images, for one test."""
    monkeypatch.setitem(DATASETS, "square32", dataclasses.replace(DATASETS["mnist"], name="square32",
                                                                  image_shape=SHAPE))
    return "square32"


def test_every_model_builds_for_the_datasets_image_shape(square32, linear_ae, one_thread):
    cfg = load_config(SMOKE, [f"data.dataset={square32}"])
    for name in MODELS:  # the four models and one registered at runtime
        assert cfg.models[name].image_shape == list(SHAPE), name
        assert cfg.run_dict(name)[name]["image_shape"] == list(SHAPE)  # the record holds what was built
        torch.manual_seed(0)
        model = build_model(name, cfg).eval()
        x = torch.rand(3, *SHAPE)
        with torch.no_grad():
            z = model.encode(x)
            assert z.shape == (3, model.latent_dim), name
            assert model.decode(z).shape == (3, *SHAPE), name
            assert model.sample(2).shape == (2, *SHAPE), name
    spec = DATASETS[square32]
    net = LeNet(spec.mean, spec.std, spec.n_classes, spec.image_shape).eval()
    assert net(torch.rand(2, *SHAPE)).shape == (2, spec.n_classes)


def test_mnist_configs_keep_the_shape_they_always_had():
    cfg = load_config(SMOKE)
    for name in MODELS:
        assert cfg.models[name].image_shape == [1, 28, 28]


def test_a_model_section_may_repeat_the_datasets_shape_but_not_set_another():
    assert load_config(SMOKE, ["pie.image_shape=[1, 28, 28]"]).models["pie"].image_shape == [1, 28, 28]
    with pytest.raises(UserError, match=r"'vae.image_shape' is set by data.dataset \(mnist: \[1, 28, 28\]\)"):
        load_config(SMOKE, ["vae.image_shape=[1, 32, 32]"])
