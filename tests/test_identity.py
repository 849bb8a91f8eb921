"""Run identity (bench.record, bench.identity): committed run ids are stable, a new setting with a
default changes none of them, and PIE's beta1 keeps its ids after moving to train.per_model."""

import dataclasses
import json
from dataclasses import field, make_dataclass

import pytest

from bench import config as C
from bench.identity import digest, section_identity
from bench.record import RunRecord, real_run_id
from bench.registry import MODELS
from tests.helpers import ROOT, SMOKE

# results/local holds a user's own runs (git-ignored), not committed ones.
COMMITTED = sorted(p for p in (ROOT / "results").glob("**/runs/*/config.json")
                   if p.relative_to(ROOT / "results").parts[0] != "local")


def _committed(prefix: str) -> tuple[str, dict]:
    path = next(p for p in COMMITTED if p.parent.name.startswith(prefix))
    return path.parent.name, json.loads(path.read_text())


def test_every_committed_run_id_is_reproduced():
    assert len(COMMITTED) >= 40
    for path in COMMITTED:
        cfg = json.loads(path.read_text())
        if cfg.get("model", "real") == "real":
            assert real_run_id(cfg["run_id"].split("-")[1], cfg["eval"]) == path.parent.name, path
            continue
        record = RunRecord.read(path.parent)
        assert record.run_id == path.parent.name, path
        # As the runner would make it again: typed, and written in this version's form.
        again = RunRecord.of(record.config(), record.model, record.seed)
        assert again.run_id == RunRecord.from_dict(again.to_dict()).run_id == path.parent.name, path


@pytest.mark.parametrize("section", ["train", "eval", "pie"])
def test_a_new_field_with_a_default_keeps_committed_ids(section, monkeypatch):
    """A copy of a committed run whose section gains a field: same id at the default, new id otherwise."""
    run_id, cfg = _committed("pie-")
    cls = {**C.SECTION_TYPES, "pie": MODELS["pie"].config_cls}[section]
    grown = make_dataclass(cls.__name__, [("brand_new", int, field(default=7))], bases=(cls,))
    if section == "pie":
        monkeypatch.setitem(MODELS, "pie", dataclasses.replace(MODELS["pie"], config_cls=grown))
    else:
        monkeypatch.setitem(C.SECTION_TYPES, section, grown)
    assert RunRecord.from_dict(cfg).run_id == run_id  # an old config.json: the field is absent
    assert RunRecord.from_dict({**cfg, section: {**cfg[section], "brand_new": 7}}).run_id == run_id
    assert RunRecord.from_dict({**cfg, section: {**cfg[section], "brand_new": 8}}).run_id != run_id
    # The typed path too: the runner writes the field at its default into config.json.
    typed = RunRecord.of(RunRecord.from_dict(cfg).config(), "pie", cfg["seed"])
    assert typed.sections[section]["brand_new"] == 7 and typed.run_id == run_id


def test_pie_beta1_moved_to_train_per_model_keeps_its_run_ids():
    """A PIE run's id hashed pie.beta1 (a frozen field); train.per_model.pie.beta1 gives the same id."""
    run_id, cfg = _committed("pie-")
    assert "beta1" in cfg["pie"] and cfg["pie"]["beta1"] is None  # as committed runs recorded it
    old = {**cfg, "pie": {**cfg["pie"], "beta1": 0.9}}  # an older run made with --set pie.beta1=0.9
    # The frozen rule applied by hand: every section as recorded, pie.beta1 in PIE's section.
    frozen_rule = {name: section_identity(name, cls, old[name]) for name, cls in
                   [*C.SECTION_TYPES.items(), ("pie", MODELS["pie"].config_cls)]}
    loaded = C.config_from_dict({**{k: cfg[k] for k in ("data", "eval")},
                                 "train": {**cfg["train"], "per_model": {"pie": {"beta1": 0.9}}},
                                 "pie": {k: v for k, v in cfg["pie"].items() if k != "beta1"}}, "default")
    new = RunRecord.of(loaded, "pie", cfg["seed"])
    assert "beta1" not in new.sections["pie"] and new.sections["train"]["per_model"] == {"pie": {"beta1": 0.9}}
    assert RunRecord.from_dict(old).run_id == new.run_id == f"pie-{digest(frozen_rule, 10)}-s{cfg['seed']}"
    assert new.run_id != run_id
    assert RunRecord.from_dict(old).config().train_for("pie").beta1 == 0.9  # it trains as it did


def test_another_models_per_model_setting_leaves_a_run_alone():
    cfg = C.load_config(SMOKE)
    tuned = C.load_config(SMOKE, ["train.per_model.pie.beta1=0.9"])
    assert RunRecord.of(tuned, "vae", 0).run_id == RunRecord.of(cfg, "vae", 0).run_id
    vae = RunRecord.of(cfg, "vae", 0).to_dict()  # even where a config.json holds another model's entry
    vae["train"] = {**vae["train"], "per_model": {"pie": {"beta1": 0.9}}}
    assert RunRecord.from_dict(vae).run_id == RunRecord.of(cfg, "vae", 0).run_id
    assert RunRecord.of(tuned, "pie", 0).run_id != RunRecord.of(cfg, "pie", 0).run_id


def test_frozen_fields_are_hashed_even_at_their_default():
    cfg = C.load_config(SMOKE)
    d = RunRecord.of(cfg, "vae", 0).identity()
    assert "epochs" in d["train"] and "pr_k" in d["eval"]
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr * 2))
    assert RunRecord.of(changed, "vae", 0).run_id != RunRecord.of(cfg, "vae", 0).run_id


def test_a_shorter_run_differs_only_in_its_length_settings():
    cfg = C.load_config(SMOKE)
    record = RunRecord.of(cfg, "vae", 0)
    longer = RunRecord.of(C.load_config(SMOKE, [f"train.epochs={cfg.train.epochs + 3}"]), "vae", 0)
    assert longer.extends(record) and not record.extends(longer)
    other_seed = RunRecord.of(cfg, "vae", 1)
    assert not longer.extends(other_seed)
    # A setting added since (a new key at its default, here as an older run recorded it) still matches.
    older = RunRecord.from_dict({**record.to_dict(), "train": {k: v for k, v in record.sections["train"].items()
                                                               if k != "per_model"}})
    assert longer.extends(older)
