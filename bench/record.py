"""A run's record: its ``config.json``, its run id, and which runs it can continue.

:class:`RunRecord` is the one owner of a run's identity. It is made from a typed
:class:`bench.config.Config` when a run starts, written as ``runs/<run_id>/config.json``, and
read back (validated by :func:`bench.rundir.read_config`: a damaged file is named once and
read as absent). Its run id is ``<model>-<hash>-s<seed>``, the hash over the settings that
define the run (:mod:`bench.identity`: a field added with a default changes no id); the
real-image rows' id is :func:`real_run_id`.

Run ids were frozen while PIE's Adam beta1 was a field of its own section (``pie.beta1``).
It is now ``train.per_model.pie.beta1``; the identity puts a model's per-model optimiser
settings back in its section, so every id stays what it was, and an old ``config.json``
(``pie.beta1``) reads as the new form.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import PER_MODEL_KEYS, SECTION_TYPES, Config, EvalConfig, TrainConfig, config_from_dict
from bench.errors import UserError
from bench.identity import FROZEN_FIELDS, digest, section_identity
from bench.registry import MODELS
from bench.results import DamageLog, atomic_write_bytes
from bench.rundir import CONFIG, config_problem, read_config

# Settings that change how long a run trains, not what it trains: a run that differs from a
# finished one only in these continues from that run's checkpoint (bench.train).
LENGTH_KEYS = ("epochs", "until_converged", "max_epochs")


class RecordError(UserError):
    """A ``config.json`` that no writer of this package wrote (its one line says why)."""


def _moved_keys(model: str) -> list[str]:
    """The per-model optimiser keys that ``model``'s own section does not declare (PIE's and
    AEF's beta1 were fields there before they moved to ``train.per_model``)."""
    if model not in MODELS:
        return []
    declared = {f.name for f in dataclasses.fields(MODELS[model].config_cls)}
    return [k for k in PER_MODEL_KEYS if k not in declared]


def current_form(settings: dict[str, Any], model: str) -> dict[str, Any]:
    """The sections of a ``config.json`` as this version writes them: a per-model optimiser
    setting recorded in the model's section (older code) moves to ``train.per_model``."""
    own = settings.get(model)
    moved = [k for k in _moved_keys(model) if isinstance(own, dict) and k in own]
    if not moved:
        return settings
    train = dict(settings.get("train") or {})
    per_model = {m: dict(v) for m, v in (train.get("per_model") or {}).items()}
    for key in moved:
        if own[key] is not None:
            per_model.setdefault(model, {})[key] = own[key]
    train["per_model"] = per_model
    return {**settings, "train": train, model: {k: v for k, v in own.items() if k not in moved}}


def _identity_form(settings: dict[str, Any], model: str) -> dict[str, Any]:
    """The sections in the form run ids were frozen in: the model's ``train.per_model`` entry
    stands in its own section, unset ones at None where the frozen fields name them."""
    train = settings.get("train")
    if not isinstance(train, dict) or "per_model" not in train:
        return settings  # written before train.per_model: already that form
    per_model = train["per_model"] if isinstance(train["per_model"], dict) else {}
    own = per_model.get(model) or {}
    out = {**settings, "train": {k: v for k, v in train.items() if k != "per_model"}}
    if isinstance(settings.get(model), dict):
        section = dict(settings[model])
        for key in _moved_keys(model):
            if own.get(key) is not None:
                section[key] = own[key]
            elif key in FROZEN_FIELDS.get(model, ()):
                section[key] = None
        out[model] = section
    return out


def run_identity(settings: dict[str, Any], model: str) -> dict[str, Any]:
    """The settings that define a run of ``model`` (:mod:`bench.identity`), from ``config.json``-style sections."""
    settings = _identity_form(settings, model)
    out = {}
    for name, cls in [*SECTION_TYPES.items(), (model, MODELS[model].config_cls if model in MODELS else None)]:
        values = settings.get(name)
        if isinstance(values, dict):
            out[name] = section_identity(name, cls, values) if cls is not None else values
    return out


def eval_hash(eval_settings: dict[str, Any]) -> str:
    """The hash of an evaluation section, the last part of the real-image run id."""
    return digest(section_identity("eval", EvalConfig, eval_settings), 8)


def real_run_id(data_checksum: str, eval_settings: dict[str, Any] | EvalConfig) -> str:
    """The run id of the real test images' rows: ``real-<data checksum>-<eval hash>``."""
    if isinstance(eval_settings, EvalConfig):
        eval_settings = dataclasses.asdict(eval_settings)
    return f"real-{data_checksum[:8]}-{eval_hash(eval_settings)}"


def _not_a_run(d: dict[str, Any]) -> str:
    """Why a valid ``config.json`` object names no model run ("" when it does)."""
    if not isinstance(d.get("model"), str):
        return "has no 'model'"
    return "" if "seed" in d else "has no 'seed'"


def is_real_run_of(run_id: str, eval_settings: Any) -> bool:
    """Whether ``run_id`` is a :func:`real_run_id` (of any data) under these evaluation settings."""
    return (isinstance(eval_settings, dict) and run_id.startswith("real-")
            and run_id.rsplit("-", 1)[-1] == eval_hash(eval_settings))


@dataclass(frozen=True)
class RunRecord:
    """One run's ``config.json``: who (model, seed), with what (the sections), and where from."""

    model: str
    seed: int
    sections: dict[str, dict[str, Any]]  # data, train, eval and the model's own, as config.json holds them
    preset: str = "custom"
    sweep: dict[str, Any] = field(default_factory=dict)  # swept key -> its value at this run's point
    device: str = ""  # what it ran on ("cpu (1 threads)"; bench.reevaluate reads the thread count)
    torch_version: str = ""

    @classmethod
    def of(cls, config: Config, model: str, seed: int, sweep: dict[str, Any] | None = None,
           device: str = "", torch_version: str = "") -> RunRecord:
        """The record of ``model``'s run with ``seed`` under ``config``."""
        return cls(model, seed, config.run_dict(model), config.preset, dict(sweep or {}), device, torch_version)

    @classmethod
    def from_dict(cls, d: Any, where: str = "config.json") -> RunRecord:
        """A record from a parsed ``config.json``; RecordError naming ``where`` if it is not one."""
        problem = config_problem(d) or _not_a_run(d)
        if problem:
            raise RecordError(f"{where} {problem}")
        d = current_form(d, d["model"])
        sections = {k: d[k] for k in (*SECTION_TYPES, d["model"]) if isinstance(d.get(k), dict)}
        return cls(d["model"], d["seed"], sections, d.get("preset", "custom"), d.get("sweep", {}),
                   d.get("device", ""), d.get("torch_version", ""))

    @classmethod
    def read(cls, run_dir: Path, damage: DamageLog | None = None) -> RunRecord | None:
        """``run_dir``'s record; None when its ``config.json`` is absent or damaged (then named in ``damage``)."""
        d = read_config(run_dir, damage)
        if d and (problem := _not_a_run(d)) and damage is not None:  # valid, but of no run: damaged too
            damage.add(Path(run_dir) / CONFIG, problem, "its run is read without its settings")
        return cls.from_dict(d) if d and not problem else None

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` object."""
        return {"model": self.model, "seed": self.seed, "sweep": self.sweep, "preset": self.preset,
                "run_id": self.run_id, "device": self.device, "torch_version": self.torch_version, **self.sections}

    def write(self, run_dir: Path) -> None:
        atomic_write_bytes(Path(run_dir) / CONFIG, json.dumps(self.to_dict(), indent=2, sort_keys=True).encode())

    def identity(self) -> dict[str, Any]:
        """The settings that define the run (:func:`run_identity`)."""
        return run_identity(self.sections, self.model)

    @property
    def config_hash(self) -> str:
        return digest(self.identity(), 10)

    @property
    def run_id(self) -> str:
        return f"{self.model}-{self.config_hash}-s{self.seed}"

    @property
    def train(self) -> TrainConfig:
        """The recorded train section, typed (keys this version does not know are left out)."""
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in self.sections.get("train", {}).items() if k in known})

    def config(self) -> Config:
        """The typed config the run was made with; UserError if this version no longer loads it."""
        return config_from_dict(self.sections, self.preset)

    def _what_it_trains(self) -> str:
        """The identity without its length settings, as one canonical string."""
        d = {"model": self.model, "seed": self.seed, **self.identity()}
        d["train"] = {k: v for k, v in d.get("train", {}).items() if k not in LENGTH_KEYS}
        return json.dumps(d, sort_keys=True, default=str)

    def extends(self, shorter: RunRecord) -> bool:
        """Whether ``shorter`` is a shorter run of this configuration: the same run but for the
        length settings (``train.epochs``, ``until_converged``, ``max_epochs``), planning at most
        as many epochs. Its checkpoint is where this run would be after that many epochs."""
        return (shorter.train.planned_epochs() <= self.train.planned_epochs()
                and shorter._what_it_trains() == self._what_it_trains())
