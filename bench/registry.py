"""The one table of model names → (model class, config dataclass).

Public API::

    from bench.config import load_config
    from bench.registry import build_model, register
    model = build_model("vae", load_config("configs/smoke.yaml"))
    register("mine", MyModel, MyConfig)  # a new model: its class, its config section's dataclass

A registered name is a ``--models`` name and a config section (``mine.latent_dim=4``);
everything else (training, evaluation, the tidy table) only uses the model contract.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from baselines.vae import VAE, VAEConfig
from baselines.wae import WAE, WAEConfig
from bench.errors import UserError
from models.aef import AEF, AEFConfig
from models.contract import GenerativeEncoder
from models.pie import PIE, PIEConfig
from models.settings import check_declared


@dataclass(frozen=True)
class ModelEntry:
    model_cls: type[GenerativeEncoder]
    config_cls: type
    label: str = ""  # display name in the report's tables and figures; empty: the registry name


MODELS: dict[str, ModelEntry] = {}
# Names a model cannot take: the harness's config sections, the tidy table's real-image rows,
# and the resolved config's preset key.
# (Spelled out: bench.config imports this module, so this one cannot import bench.config;
# tests/test_model_contract.py checks the list against bench.config.SECTION_TYPES.)
RESERVED_NAMES = frozenset({"data", "train", "eval", "real", "preset"})


def register(name: str, model_cls: type[GenerativeEncoder], config_cls: type, label: str = "") -> None:
    """Add model ``name``, built as ``model_cls(config)`` from its config section; ``label``: its
    name in the report's tables and figures (default: ``name``).

    ``config_cls`` is a dataclass whose fields all have defaults (a preset may omit the
    section) and a declared range each (``models.settings.setting``); a field ``image_shape``
    (``models.settings.image_shape_setting``) receives the dataset's [C, H, W] from the dataset table.
    Raises ValueError for a name that is taken or not lowercase ``[a-z][a-z0-9_]*`` (it becomes a
    CLI name, a config section and part of run ids), and TypeError for a class outside the
    contract (:class:`models.contract.GenerativeEncoder`), a config that is no dataclass, or one
    with a field declared without a range.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"model name {name!r} must match [a-z][a-z0-9_]*")
    if name in MODELS or name in RESERVED_NAMES:
        raise ValueError(f"model name {name!r} is taken")
    if not (isinstance(model_cls, type) and issubclass(model_cls, GenerativeEncoder)):
        raise TypeError(f"{name}: {model_cls!r} does not subclass models.contract.GenerativeEncoder")
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise TypeError(f"{name}: config class {config_cls!r} is not a dataclass")
    check_declared(config_cls)
    MODELS[name] = ModelEntry(model_cls, config_cls, label)


register("pie", PIE, PIEConfig, label="PIE")
register("vae", VAE, VAEConfig, label="VAE")
register("wae", WAE, WAEConfig, label="WAE")
register("aef", AEF, AEFConfig, label="AEF")


def check_model_names(names: list[str]) -> list[str]:
    """Return ``names`` or raise UserError listing the valid names."""
    for name in names:
        if name not in MODELS:
            raise UserError(f"unknown model '{name}' (valid models: {', '.join(MODELS)})")
    return names


def display_label(name: str) -> str:
    """The model's label in tables and figures: its entry's ``label``, else its registry name."""
    entry = MODELS.get(name)
    return (entry.label if entry else "") or name


def build_model(name: str, config) -> GenerativeEncoder:
    """Instantiate model ``name`` from its section of a loaded :class:`bench.config.Config`."""
    check_model_names([name])
    entry = MODELS[name]
    try:
        model = entry.model_cls(config.models[name])
    except ValueError as e:  # the model's own size/consistency checks
        raise UserError(f"invalid {name} config: {e}") from e
    if model.has_density and not model.log_prob_estimator:  # the bits/dim note states it
        raise TypeError(f"{name}: a model with has_density must say what log_prob computes (log_prob_estimator)")
    return model
