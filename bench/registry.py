"""The one table of model names → (model class, config dataclass).

Public API::

    from bench.config import load_config
    from bench.registry import build_model
    model = build_model("vae", load_config("configs/smoke.yaml"))
"""

from __future__ import annotations

from dataclasses import dataclass

from baselines.vae import VAE, VAEConfig
from baselines.wae import WAE, WAEConfig
from bench.errors import UserError
from models.contract import GenerativeEncoder
from models.pie import PIE, PIEConfig


@dataclass(frozen=True)
class ModelEntry:
    model_cls: type[GenerativeEncoder]
    config_cls: type


MODELS: dict[str, ModelEntry] = {
    "pie": ModelEntry(PIE, PIEConfig),
    "vae": ModelEntry(VAE, VAEConfig),
    "wae": ModelEntry(WAE, WAEConfig),
}

for _name, _entry in MODELS.items():  # checked once, at import
    assert issubclass(_entry.model_cls, GenerativeEncoder), _name


def check_model_names(names: list[str]) -> list[str]:
    """Return ``names`` or raise UserError listing the valid names."""
    for name in names:
        if name not in MODELS:
            raise UserError(f"unknown model '{name}' (valid models: {', '.join(MODELS)})")
    return names


def build_model(name: str, config) -> GenerativeEncoder:
    """Instantiate model ``name`` from its section of a loaded :class:`bench.config.Config`."""
    check_model_names([name])
    entry = MODELS[name]
    try:
        return entry.model_cls(config.models[name])
    except ValueError as e:  # the model's own size/consistency checks
        raise UserError(f"invalid {name} config: {e}") from e
