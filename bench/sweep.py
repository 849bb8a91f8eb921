"""Settings from the command line: ``--set KEY=VALUE`` overrides and ``--sweep KEY=V1,V2`` grids.

A key is a dotted path into the config's sections: ``wae.mmd_weight``, or deeper into a mapping
setting, ``train.per_model.pie.beta1``. A value is read as a YAML scalar (``1e-4`` is a float).
A grid is the product of its sweeps' values. A key inside another model's section
(``vae.width``, ``train.per_model.vae.lr``) does not multiply a model's runs: those runs are
the same at every such point. This module edits raw (YAML-shaped) dicts; :mod:`bench.config`
types and checks them, so an unknown key or a bad value is named there.

Public API::

    raw = apply_overrides(read_yaml(path), ["train.epochs=2"])
    sweeps = parse_sweeps(["pie.eps2=0.01,0.1"])
    for point, raw_at in expand(raw, sweeps, "pie"):   # ({"pie.eps2": 0.01}, raw with it set), ...
        cfg = config_from_dict(raw_at)
        column = resolve(cfg, "pie.eps2")               # the typed value, for the sweep column
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import yaml

from bench.cli import unique
from bench.errors import UserError
from bench.registry import MODELS
from bench.yamlfile import load_yaml


@dataclass(frozen=True)
class Sweep:
    """One ``--sweep``: a key and its values, each once, in the order given."""

    key: str
    values: tuple[Any, ...]


def parse_value(text: str, what: str) -> Any:
    """One value as typed on the command line, read as a YAML scalar (``1e-4`` is a float)."""
    if not text.strip():
        return ""
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        raise UserError(f"{what} has an unreadable value ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"{what} has a value that nests too deeply") from None


def _split(text: str, what: str) -> tuple[str, str]:
    """``"KEY=REST"`` -> (the key, checked and stripped; REST)."""
    if "=" not in text:
        raise UserError(f"{what} '{text}' must look like section.key=value")
    key, _, rest = text.partition("=")
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise UserError(f"{what} key '{key}' must look like section.key")
    return ".".join(path), rest


def parse_override(text: str) -> tuple[str, Any]:
    """``"wae.mmd_weight=5"`` -> ("wae.mmd_weight", 5)."""
    key, value = _split(text, "override")
    return key, parse_value(value, f"override '{text}'")


def parse_sweeps(texts: list[str]) -> list[Sweep]:
    """``["section.key=v1,v2", ...]`` -> Sweeps (a value listed twice is run once)."""
    out = []
    for text in texts:
        key, values_text = _split(text, "--sweep")
        values = unique([parse_value(v, f"--sweep '{text}'") for v in values_text.split(",") if v.strip()])
        if not values:
            raise UserError(f"--sweep '{text}' lists no values")
        if key == "data.dataset":
            raise UserError("--sweep over data.dataset is not supported: run one dataset per command "
                            "(--dataset NAME), each into its own --out directory")
        out.append(Sweep(key, tuple(values)))
    return out


def set_value(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` in a raw dict in place (mappings on the way are made as needed)."""
    *path, last = key.split(".")
    node = raw
    for i, part in enumerate(path):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            what = "section" if i == 0 else "key"
            raise UserError(f"config {what} '{'.'.join(path[:i + 1])}' must be a mapping")
    node[last] = value


def with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with ``values`` (dotted key -> value, as parsed) set."""
    out = copy.deepcopy(raw)
    for key, value in values.items():
        set_value(out, key, value)
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with the ``KEY=VALUE`` overrides applied, in order."""
    out = copy.deepcopy(raw)
    for text in overrides:
        set_value(out, *parse_override(text))
    return out


def affects(key: str, model: str) -> bool:
    """Whether setting ``key`` can change a run of ``model``: not when it lies inside another
    registered model's settings."""
    return not any(part in MODELS and part != model for part in key.split(".")[:-1])


def points(sweeps: list[Sweep], model: str) -> list[dict[str, Any]]:
    """The grid of ``model``'s runs: one {key: value} per point (``[{}]`` without a sweep that affects it)."""
    own = [s for s in sweeps if affects(s.key, model)]
    return [dict(zip([s.key for s in own], combo, strict=True))
            for combo in itertools.product(*[s.values for s in own])]


def expand(raw: dict[str, Any], sweeps: list[Sweep], model: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``model``'s grid over the raw config: (point, ``raw`` with the point's values set) per point."""
    return [(point, with_values(raw, point)) for point in points(sweeps, model)]


def first_points(raw: dict[str, Any], sweeps: list[Sweep]) -> list[dict[str, Any]]:
    """``raw`` with each sweep's first value set, one per sweep: typing them checks every swept key
    before the grid is counted (a typo fails as an unknown key, not as a plan too big)."""
    return [with_values(raw, {s.key: s.values[0]}) for s in sweeps]


def count(sweeps: list[Sweep], model: str) -> int:
    """``len(points(sweeps, model))``, without building them."""
    return math.prod(len(s.values) for s in sweeps if affects(s.key, model))


def resolve(cfg: Any, key: str) -> Any:
    """The value at dotted ``key`` of a typed config (a model's section or a harness section)
    after type checking (1 -> 1.0 for a float field): what a sweep column shows."""
    first, *rest = key.split(".")
    node = cfg.models[first] if first in cfg.models else getattr(cfg, first)
    for part in rest:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node
