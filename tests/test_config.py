"""Configs: presets load into typed dataclasses; unknown keys and wrong types are errors."""

import dataclasses

import pytest

from bench.config import config_from_dict, load_config
from bench.errors import UserError
from bench.registry import MODELS, build_model
from tests.helpers import ROOT, SMOKE

PRESETS = ["smoke", "default", "paper"]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_cover_every_model(preset):
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml")
    assert set(cfg.models) == set(MODELS)
    assert cfg.preset == preset


def test_round_trip_through_dict():
    cfg = load_config(SMOKE)
    again = config_from_dict({k: v for k, v in cfg.to_dict().items() if k != "preset"}, cfg.preset)
    assert again.to_dict() == cfg.to_dict()


def test_override_changes_field_and_hash():
    base = load_config(SMOKE)
    cfg = load_config(SMOKE, ["wae.mmd_weight=5", "train.epochs=2"])
    assert cfg.models["wae"].mmd_weight == 5.0 and isinstance(cfg.models["wae"].mmd_weight, float)
    assert cfg.train.epochs == 2
    assert cfg.run_hash("wae") != base.run_hash("wae")
    assert cfg.run_hash("vae") != base.run_hash("vae")  # train section is shared


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("wae.nope=1", "wae.nope"),
        ("train.epochs=two", "train.epochs"),
        ("train.epochs=1.5", "train.epochs"),
        ("vae.likelihood=poisson", "vae.likelihood"),
        ("nosuch.key=1", "nosuch"),
        ("train.float64=3", "train.float64"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        load_config(SMOKE, [override])


def test_public_api_builds_models():
    cfg = load_config(SMOKE)
    for name in MODELS:
        model = build_model(name, cfg)
        assert model.latent_dim == cfg.models[name].latent_dim


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError, match="valid models: pie, vae, wae"):
        build_model("nope", load_config(SMOKE))


def test_every_config_field_has_a_default():
    for entry in MODELS.values():
        for f in dataclasses.fields(entry.config_cls):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train:\n  epochs: 1\ntrain:\n  epochs: 2\n", r"the key 'train' twice \(lines 1 and 3\)"),
        ("train:\n  lr: 0.1\n  lr: 0.2\n", r"the key 'lr' twice \(lines 2 and 3\)"),
        ("- train\n- data\n", "mapping of sections.*not a list"),
        ("42\n", "mapping of sections.*not the single value '42'"),
    ],
)
def test_yaml_that_is_no_config_names_the_problem(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=fragment):
        load_config(path)


def test_scientific_notation_and_merge_keys_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n  grad_clip: 2E+1\nwae: &w {mmd_weight: 3}\nvae: {<<: *w, mmd_weight: 4}\n")
    with pytest.raises(UserError, match="vae.mmd_weight"):  # the merge itself is fine; vae has no such key
        load_config(path)
    path.write_text("train:\n  lr: 1e-4\n  grad_clip: 2E+1\n")
    cfg = load_config(path)
    assert cfg.train.lr == 1e-4 and cfg.train.grad_clip == 20.0
    assert load_config(SMOKE, ["train.lr=5e-4"]).train.lr == 5e-4
