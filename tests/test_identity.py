"""Run identity (bench.identity): committed run ids are stable, and a new setting with a default
changes none of them."""

import dataclasses
import json
from dataclasses import field, make_dataclass

import pytest

from bench import config as C
from bench.identity import digest, section_identity
from tests.helpers import ROOT

# results/local holds a user's own runs (git-ignored), not committed ones.
COMMITTED = sorted(p for p in (ROOT / "results").glob("**/runs/*/config.json")
                   if p.relative_to(ROOT / "results").parts[0] != "local")


def _run_id(cfg: dict) -> str:
    if cfg["model"] == "real":
        return f"real-{cfg['run_id'].split('-')[1]}-{C.eval_hash(cfg['eval'])}"
    return f"{cfg['model']}-{digest(C.run_identity(cfg, cfg['model']), 10)}-s{cfg['seed']}"


def test_every_committed_run_id_is_reproduced():
    assert len(COMMITTED) >= 40
    for path in COMMITTED:
        cfg = json.loads(path.read_text())
        cfg.setdefault("model", "real")
        assert _run_id(cfg) == path.parent.name, path


@pytest.mark.parametrize("section", ["train", "eval", "pie"])
def test_a_new_field_with_a_default_keeps_committed_ids(section):
    """A copy of a committed run whose section gains a field: same id at the default, new id otherwise."""
    path = next(p for p in COMMITTED if p.parent.name.startswith("pie-"))
    cfg = json.loads(path.read_text())
    from bench.registry import MODELS

    cls = {**C.SECTION_TYPES, "pie": MODELS["pie"].config_cls}[section]
    grown = make_dataclass(cls.__name__, [("brand_new", int, field(default=7))], bases=(cls,))
    keep = section_identity(section, grown, {**cfg[section], "brand_new": 7})
    assert keep == section_identity(section, cls, cfg[section])
    assert section_identity(section, grown, {**cfg[section], "brand_new": 8}) != keep
    # The Config path gives the committed id too (the field at its default is written to config.json).
    assert digest({**C.run_identity(cfg, "pie"), section: keep}, 10) == path.parent.name.split("-")[1]


def test_frozen_fields_are_hashed_even_at_their_default():
    cfg = C.load_config(ROOT / "configs" / "smoke.yaml")
    d = C.run_identity(cfg.run_dict("vae"), "vae")
    assert "epochs" in d["train"] and "pr_k" in d["eval"]
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr * 2))
    assert changed.run_hash("vae") != cfg.run_hash("vae")
