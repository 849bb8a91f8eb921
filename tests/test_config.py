"""Configs: presets load into typed dataclasses; unknown keys and wrong types are errors."""

import dataclasses

import pytest

from bench.config import config_from_dict, load_config
from bench.errors import UserError
from bench.record import RunRecord
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
    for model in ("wae", "vae"):  # the train section is shared
        assert RunRecord.of(cfg, model, 0).run_id != RunRecord.of(base, model, 0).run_id


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


# ----------------------------------------------------------------------------- every setting has a range


def _sections():
    from bench.config import SECTION_TYPES

    return {**SECTION_TYPES, **{name: entry.config_cls for name, entry in MODELS.items()}}


@pytest.mark.parametrize("section", ["data", "train", "eval", *MODELS])
def test_every_field_of_every_section_declares_a_range(section):
    from models.settings import check_declared, field_range

    cls = _sections()[section]
    check_declared(cls)  # numbers have a bound (or say unbounded=True on purpose)
    for f in dataclasses.fields(cls):
        assert field_range(f) is not None, f"{section}.{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert not field_range(f).problem(default), f"{section}.{f.name}: its default is out of its own range"


@pytest.mark.parametrize("override, fragment", [
    # The cases: each gave a traceback, failed after training, or was silently accepted.
    ("eval.kid_subset_size=0", "'eval.kid_subset_size' must be >= 2, got 0"),
    ("eval.pr_k=0", "'eval.pr_k' must be >= 1, got 0"),
    ("eval.kid_subsets=0", "'eval.kid_subsets' must be >= 1"),
    ("eval.log_prob_batch_size=0", "'eval.log_prob_batch_size' must be >= 1, got 0"),
    ("eval.interp_steps=0", "'eval.interp_steps' must be >= 2"),
    ("eval.probe_train_size=0", "'eval.probe_train_size' must be >= 2, got 0"),
    ("eval.classifier_epochs=0", "'eval.classifier_epochs' must be >= 1"),
    # Lists are checked item by item, and for their length.
    ("train.lr_factors=[0.5, 0]", r"'train.lr_factors\[1\]' must be > 0"),
    ("wae.kernel_scales=[]", "'wae.kernel_scales' must hold at least 1 item"),
    ("pie.image_shape=[1, 28]", "'pie.image_shape' must hold exactly 3 item"),
    ("train.per_model.pie.beta1=1.0", "'train.per_model.pie.beta1' must be >= 0 and < 1"),
    ("train.per_model.pie.epochs=3", "unknown config key 'train.per_model.pie.epochs' .valid keys: lr, beta1, beta2"),
    ("train.per_model.nosuch.lr=0.1", "'train.per_model' names unknown model 'nosuch'"),
    ("train.per_model.pie=0.9", "'train.per_model.pie' must be a mapping"),
    ("eval.test_subset=3", "'eval.test_subset' .* must be 0 .* or exceed eval.pr_k"),
    # Settings added beside the ranges (until converged, k-NN, confidence) declare theirs too.
    ("train.max_epochs=-1", "'train.max_epochs' must be >= 0 and <= 10000, got -1"),
    ("eval.knn_k=0", "'eval.knn_k' must be >= 1, got 0"),
    ("eval.confidence_threshold=0", "'eval.confidence_threshold' must be > 0 and < 1, got 0"),
])
def test_out_of_range_settings_are_one_line_naming_the_key(override, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        load_config(SMOKE, [override])
    assert "\n" not in str(info.value)


def test_per_model_optimiser_settings_reach_only_their_model():
    cfg = load_config(SMOKE, ["train.per_model.pie.beta1=0.9", "train.per_model.pie.lr=2e-4"])
    assert (cfg.train_for("pie").beta1, cfg.train_for("pie").lr) == (0.9, 2e-4)
    assert (cfg.train_for("vae").beta1, cfg.train_for("vae").lr) == (cfg.train.beta1, cfg.train.lr)
    assert cfg.run_dict("vae")["train"]["per_model"] == {}  # another model's setting is not this run's


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n# a document of comments\n"])
def test_an_empty_or_comment_only_yaml_file_is_an_error(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="holds no settings"):
        load_config(path)


def test_a_run_config_json_is_checked_against_the_same_ranges():
    from bench.config import settings_problem

    cfg = load_config(SMOKE).run_dict("vae")
    assert settings_problem(cfg) == ""
    assert "eval.pr_k" in settings_problem({**cfg, "eval": {**cfg["eval"], "pr_k": 0}})
    assert settings_problem({**cfg, "eval": [1]}) == "section 'eval' is not a mapping"
    assert settings_problem({"eval": {"a key of another version": 1}}) == ""  # not judged


def test_a_sweep_grid_multiplies_only_the_runs_it_can_change():
    """A key inside another model's settings (a section, or its train.per_model entry) leaves a model's runs alone."""
    from bench.sweep import count, parse_sweeps, points, resolve, with_values
    from bench.yamlfile import read_yaml

    sweeps = parse_sweeps(["train.per_model.vae.lr=1e-3,2e-3", "pie.eps2=0.1,1", "train.lr=1e-3,1e-4,1e-3"])
    assert [count(sweeps, m) for m in ("pie", "vae", "wae")] == [4, 4, 2]  # 1e-3 listed twice is run once
    assert points(sweeps, "wae") == [{"train.lr": 1e-3}, {"train.lr": 1e-4}]
    point = points(sweeps, "vae")[-1]
    assert point == {"train.per_model.vae.lr": 2e-3, "train.lr": 1e-4}
    cfg = config_from_dict(with_values(read_yaml(SMOKE), {**point, "pie.eps2": 1}))
    assert resolve(cfg, "train.per_model.vae.lr") == 2e-3 and resolve(cfg, "pie.eps2") == 1.0
    assert isinstance(resolve(cfg, "pie.eps2"), float)  # the typed value, as the sweep column shows it
    with pytest.raises(UserError, match="--sweep key 'pie' must look like section.key"):
        parse_sweeps(["pie=1,2"])
