"""Typed configuration: YAML presets loaded into dataclasses, strict overrides.

Public API::

    from bench.config import load_config
    cfg = load_config("configs/smoke.yaml", overrides=["wae.mmd_weight=5"])

Unknown keys, wrong types and malformed YAML raise :class:`bench.errors.UserError`
naming the key. Model sections are typed by the dataclasses in the registry. The ``--set`` /
``--sweep`` grammar is :mod:`bench.sweep`'s; a run's identity and ``config.json`` are
:mod:`bench.record`'s. Optimiser settings are the train section's; a model's own ones
(PIE's beta1) are ``train.per_model`` entries, applied by :meth:`Config.train_for`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.datasets import DATASETS
from bench.errors import UserError
from bench.sweep import apply_overrides
from bench.yamlfile import read_yaml
from models.settings import check_declared, field_range, setting


@dataclass
class DataConfig:
    """The data pipeline (one for all models)."""

    dataset: str = setting("mnist")  # a row of bench.datasets.DATASETS: mnist | fashion-mnist
    # Images held out of the 60k train split, by a fixed seeded permutation (< the split's size).
    val_size: int = setting(5000, ge=0)
    val_seed: int = setting(1234, ge=0, le=2**64 - 1)  # seed of that permutation (independent of the run seed)
    train_subset: int = setting(0, ge=0)  # if > 0, train on the first N images of the shuffled train part only


@dataclass
class TrainConfig:
    """The one training loop (Adam, piecewise-constant lr schedule, grad clipping)."""

    epochs: int = setting(10, ge=1, le=10_000)  # more is a typo: a CPU epoch takes minutes
    batch_size: int = setting(100, ge=1)  # at most the training images (checked with data.*)
    lr: float = setting(1e-3, gt=0)
    beta1: float = setting(0.5, ge=0, lt=1)  # WAE reference code uses Adam(beta1=0.5)
    beta2: float = setting(0.999, ge=0, lt=1)
    lr_milestones: list[int] = setting(default_factory=lambda: [30, 50], ge=0)  # epochs
    # Multiplied in, one per milestone (as many as lr_milestones).
    lr_factors: list[float] = setting(default_factory=lambda: [0.5, 0.2], gt=0)
    grad_clip: float = setting(100.0, ge=0)  # max global grad norm; 0 disables
    log_every: int = setting(50, ge=1)  # steps between loss reads (each read syncs the device)
    float64: bool = setting(False)  # train in float64 (slow; for diverging flows)
    compile: bool = setting(False)  # torch.compile the model's loss (opt-in)
    bf16: bool = setting(False)  # bf16 autocast (CUDA or CPU) for models that allow it; opt-in, numbers change
    channels_last: bool = setting(True)  # channels-last model and batches (faster convolutions; bench.perf "levers")
    fused_adam: bool = setting(True)  # one fused Adam kernel over all parameters (bench.perf "levers")
    # Train `epochs`, then on epoch by epoch until the convergence rule (bench.convergence) holds on the
    # learning curves (needs eval.track_every >= 1), or until max_epochs (the cap, >= epochs).
    until_converged: bool = setting(False)
    max_epochs: int = setting(0, ge=0, le=10_000)  # 0 unless until_converged (checked in check_ranges)
    # Models whose training loss is torch.compiled (as `compile` does for all): PIE's many small
    # kernels fuse (bench.perf "pie_speed"); the baselines gain nothing. Numbers move by rounding only.
    compile_models: list[str] = setting(default_factory=list)  # registered names (checked in check_ranges)
    # Optimiser settings of one model, over the ones above: {pie: {beta1: 0.9}} (flows usually train
    # with 0.9). Keys: PER_MODEL_KEYS; models: registered names (checked in check_ranges).
    per_model: dict[str, dict[str, float]] = setting(default_factory=dict)

    def planned_epochs(self) -> int:
        """The most epochs a run trains: ``max_epochs`` with ``until_converged``, else ``epochs``."""
        return self.max_epochs if self.until_converged else self.epochs


# The train settings a model may set for itself (TrainConfig.per_model): Adam's.
PER_MODEL_KEYS = ("lr", "beta1", "beta2")


@dataclass
class EvalConfig:
    """Evaluation protocol (metrics are computed in inference mode)."""

    batch_size: int = setting(1000, ge=1)  # evaluation batch size, independent of training's
    # Generated samples for sharpness / sample-quality metrics (> pr_k; 1e6 samples are ~3 GB each).
    n_samples: int = setting(10000, ge=2, le=1_000_000)
    test_subset: int = setting(0, ge=0)  # if > 0, evaluate on the first N test images only (> pr_k)
    second_temperature: float = setting(0.5, gt=0)  # Fig. 7c "N(0, 0.5)"
    second_temperature_is: Literal["variance", "std"] = setting("variance")  # how to read that 0.5
    grid_size: int = setting(8, ge=1, le=100)  # sample grid is grid_size x grid_size
    # LeNet for FD/KID/PR: 3 = the shipped weights (bench/extractors); else trained, cached.
    # 0 epochs would leave it untrained (an FD of noise).
    classifier_epochs: int = setting(3, ge=1, le=1000)
    probe_train_size: int = setting(10000, ge=2)  # training latents used by the linear probe (a std needs 2)
    kid_subset_size: int = setting(1000, ge=2)  # KID: features per random subset (unbiased MMD² needs 2)
    kid_subsets: int = setting(10, ge=1, le=10_000)  # KID: number of subsets averaged (fixed subset seed)
    pr_k: int = setting(5, ge=1)  # k of the k-NN manifolds of precision/recall (Kynkäänniemi et al. 2019)
    # First N test images scored for bits/dim (0 = all). The VAE's IWAE costs K decoder
    # passes per image (K = vae.iw_samples), the bulk of a CPU evaluation; 200 images keep
    # it to a few seconds at K = 100, with a standard error near 0.01 bits/dim.
    bpd_subset: int = setting(200, ge=0)
    # Images per log_prob call. Kept apart from batch_size: the IWAE noise drawn inside
    # log_prob is assigned by chunk, so bits/dim must not move when batch_size does.
    log_prob_batch_size: int = setting(250, ge=1)
    # Fig. 7 interpolations: pairs of encoded test images (0, 1), (2, 3), ...
    interp_pairs: int = setting(8, ge=1, le=1000)
    interp_steps: int = setting(10, ge=2, le=1000)  # points per pair, endpoints included, linear in z
    # Learning curves of Table 1's metrics (bench.tracking): every N epochs (0 = off), on
    # this many fixed latent draws / validation images; written to train_log.csv.
    track_every: int = setting(0, ge=0)
    track_samples: int = setting(2000, ge=2, le=1_000_000)  # a covariance (FD) needs at least two feature vectors
    channels_last: bool = setting(True)  # channels-last model and inputs during evaluation (faster convolutions)
    # k of knn_accuracy: a k-NN vote of the probe's training codes for each test code (<= probe_train_size).
    knn_k: int = setting(10, ge=1)
    # confident_fraction: samples whose LeNet max-softmax exceeds this.
    confidence_threshold: float = setting(0.9, gt=0, lt=1)

    def second_temperature_std(self) -> float:
        """Std multiplier T for the paper's second sampling distribution."""
        t = self.second_temperature
        return t**0.5 if self.second_temperature_is == "variance" else t


SECTION_TYPES: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}


@dataclass
class Config:
    """A resolved configuration: harness sections plus one section per registered model."""

    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    models: dict[str, Any]  # model name -> that model's config dataclass
    preset: str = "custom"  # name of the YAML file it came from

    def to_dict(self) -> dict[str, Any]:
        out = {k: dataclasses.asdict(getattr(self, k)) for k in SECTION_TYPES}
        out.update({name: dataclasses.asdict(c) for name, c in self.models.items()})
        out["preset"] = self.preset
        return out

    def run_dict(self, model: str) -> dict[str, Any]:
        """Every setting of one model's run: the shared sections and the model's (``config.json``);
        of ``train.per_model`` only the model's own entry."""
        d = {k: dataclasses.asdict(getattr(self, k)) for k in SECTION_TYPES}
        own = d["train"]["per_model"].get(model)
        d["train"]["per_model"] = {model: own} if own else {}
        d[model] = dataclasses.asdict(self.models[model])
        return d

    def train_for(self, model: str) -> TrainConfig:
        """The train section as ``model`` trains with it: its ``train.per_model`` settings applied,
        and ``compile`` on where ``train.compile_models`` names it."""
        train = dataclasses.replace(self.train, **self.train.per_model.get(model, {}))
        return dataclasses.replace(train, compile=True) if model in train.compile_models else train


def settings_problem(settings: dict[str, Any]) -> str:
    """Why a run's recorded settings (a ``config.json``-style dict) cannot be what this package
    wrote: a known section that is no mapping, or a known key whose value has the wrong type or
    lies out of range ("" when none). Keys this version does not know are not judged (an older
    or newer version may have written them), and missing keys are fine (their default applies)."""
    from bench.registry import MODELS

    for name, cls in [*SECTION_TYPES.items(), *((m, e.config_cls) for m, e in MODELS.items())]:
        if name not in settings:
            continue
        values = settings[name]
        if not isinstance(values, dict):
            return f"section '{name}' is not a mapping"
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in values:
                try:
                    _check_range(f"{name}.{f.name}", _check_value(f"{name}.{f.name}", values[f.name], hints[f.name]), f)
                except UserError as e:
                    return str(e)
    return ""


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` or raise UserError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"config key '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(key, value, inner[0])
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_check_value(f"{key} key", k, key_tp): _check_value(f"{key}.{k}", v, item_tp) for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"config key '{key}' must be a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"config key '{key}' must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp} for '{key}'")


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"config section '{name}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in fields:
            raise UserError(
                f"unknown config key '{name}.{key}' (valid keys: {', '.join(sorted(fields))})"
            )
        kwargs[key] = _check_value(f"{name}.{key}", value, hints[key])
        _check_range(f"{name}.{key}", kwargs[key], fields[key])
    return cls(**kwargs)


def _check_range(key: str, value: Any, f: dataclasses.Field) -> None:
    """UserError naming ``key`` if ``value`` lies outside the range declared with the field."""
    rng = field_range(f)
    why = rng.problem(value) if rng is not None and value is not None else ""
    if why:
        at = why.split(" ", 1) if why.startswith("[") else ("", why)
        raise UserError(f"config key '{key}{at[0]}' {at[1]}")


def check_sections_declared(classes: list[type]) -> None:
    """Every field of every section declares its range (models.settings); TypeError otherwise."""
    for cls in classes:
        check_declared(cls)


def config_from_dict(raw: dict[str, Any], preset: str = "custom") -> Config:
    """Build a typed Config from a plain dict (as read from YAML)."""
    from bench.registry import MODELS  # the registry owns the model config types

    if not isinstance(raw, dict):
        raise UserError("config file must hold a mapping of sections at the top level")
    unknown = [k for k in raw if k not in SECTION_TYPES and k not in MODELS]
    if unknown:
        valid = ", ".join([*SECTION_TYPES, *MODELS])
        raise UserError(f"unknown config section '{sorted(map(str, unknown))[0]}' (valid sections: {valid})")
    sections = {k: _build_section(k, cls, raw.get(k)) for k, cls in SECTION_TYPES.items()}
    models = {name: _with_image_shape(name, _build_section(name, entry.config_cls, raw.get(name)), raw.get(name),
                                      sections["data"]) for name, entry in MODELS.items()}
    cfg = Config(**sections, models=models, preset=preset)
    check_ranges(cfg)
    return cfg


def _with_image_shape(name: str, section: Any, raw: Any, data: DataConfig) -> Any:
    """Model section ``name`` with its ``image_shape`` field (if it has one) set to the dataset's
    (``bench.datasets``): the data decide the images' shape; ``raw`` (the section as written) may
    repeat it, as a ``config.json`` does, but not say another."""
    spec = DATASETS.get(data.dataset)  # an unknown dataset is refused by check_ranges
    if spec is None or not any(f.name == "image_shape" for f in dataclasses.fields(section)):
        return section
    shape = list(spec.image_shape)
    if isinstance(raw, dict) and "image_shape" in raw and section.image_shape != shape:
        raise UserError(f"config key '{name}.image_shape' is set by data.dataset ({data.dataset}: {shape}), "
                        f"got {section.image_shape}; leave it out")
    return dataclasses.replace(section, image_shape=shape)


def check_ranges(cfg: Config) -> None:
    """Reject combinations of values that are each in range but make no sense together (each
    field's own range is declared with it and checked as it is read, :func:`_check_range`)."""
    t, e, d = cfg.train, cfg.eval, cfg.data
    if e.knn_k > e.probe_train_size:  # the vote draws from the probe's training codes
        raise UserError(f"config key 'eval.knn_k' must lie in [1, eval.probe_train_size = {e.probe_train_size}], "
                        f"got {e.knn_k}")
    if t.until_converged:
        if t.max_epochs < t.epochs:
            raise UserError(f"config key 'train.max_epochs' ({t.max_epochs}) must be >= train.epochs ({t.epochs}) "
                            "when train.until_converged is true: it is the cap")
        if e.track_every < 1:
            raise UserError("train.until_converged judges the learning curves: set eval.track_every >= 1 "
                            f"(got {e.track_every})")
    elif t.max_epochs != 0:
        raise UserError(f"config key 'train.max_epochs' ({t.max_epochs}) is the cap of train.until_converged: "
                        "set train.until_converged=true, or leave train.max_epochs at 0")
    from bench.registry import MODELS  # the registry owns the model names

    unknown = [m for m in t.compile_models if m not in MODELS]
    if unknown:
        raise UserError(f"config key 'train.compile_models' names unknown model(s) {unknown} "
                        f"(valid models: {', '.join(MODELS)})")
    check_per_model(t, list(MODELS))
    if len(t.lr_milestones) != len(t.lr_factors):
        raise UserError("config keys 'train.lr_milestones' and 'train.lr_factors' must have the same length")
    if e.n_samples <= e.pr_k:  # the k-NN radii of precision/recall need more than k samples
        raise UserError(f"config key 'eval.n_samples' ({e.n_samples}) must exceed eval.pr_k ({e.pr_k})")
    if 0 < e.test_subset <= e.pr_k:  # likewise for the real test images' radii
        raise UserError(f"config key 'eval.test_subset' ({e.test_subset}) must be 0 (all) or exceed "
                        f"eval.pr_k ({e.pr_k})")
    if d.dataset not in DATASETS:
        raise UserError(f"config key 'data.dataset' must be one of {list(DATASETS)}, got {d.dataset!r}")
    n_images = DATASETS[d.dataset].n_train
    if d.val_size >= n_images:
        raise UserError(f"config key 'data.val_size' must be < {n_images}, got {d.val_size}")
    n_train = n_images - d.val_size
    if d.train_subset:
        n_train = min(n_train, d.train_subset)
    if t.batch_size > n_train:  # an epoch would have no step (the last partial batch is dropped)
        raise UserError(f"config key 'train.batch_size' ({t.batch_size}) exceeds the {n_train} training images "
                        "(data.train_subset, data.val_size); lower it")


def check_per_model(t: TrainConfig, models: list[str]) -> None:
    """``train.per_model``: registered models, keys of PER_MODEL_KEYS, each value in its train key's range."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for model, values in t.per_model.items():
        if model not in models:
            raise UserError(f"config key 'train.per_model' names unknown model '{model}' (valid models: "
                            f"{', '.join(models)})")
        for key, value in values.items():
            if key not in PER_MODEL_KEYS:
                raise UserError(f"unknown config key 'train.per_model.{model}.{key}' (valid keys: "
                                f"{', '.join(PER_MODEL_KEYS)})")
            _check_range(f"train.per_model.{model}.{key}", value, fields[key])


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML preset, apply ``section.key=value`` overrides, return a typed Config."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    return config_from_dict(raw, preset=Path(path).stem)


check_sections_declared(list(SECTION_TYPES.values()))  # a field without a range fails here
