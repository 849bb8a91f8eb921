"""Run identity: which settings define a run, and the hashes in run ids.

A run id is ``<model>-<hash>-s<seed>``; the hash covers the data, train and eval sections and
the model's own section. Every field a section had when run ids were frozen is always hashed.
A field added since is hashed only when it differs from its default, so adding a setting with
a default leaves every existing run id (and every committed result) where it is
(tests/test_identity.py). The same rule reads old ``config.json`` files, which lack the new
keys: a missing key counts as its default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# The fields hashed unconditionally: each section's fields on the day run ids were frozen.
# Never add to these sets; a new field needs no entry here. pie.beta1 has since moved to
# train.per_model.pie.beta1; bench.record hashes it where it was.
FROZEN_FIELDS: dict[str, frozenset[str]] = {
    "data": frozenset({"val_size", "val_seed", "train_subset"}),  # "dataset" came later (mnist: absent)
    "train": frozenset({
        "epochs", "batch_size", "lr", "beta1", "beta2", "lr_milestones", "lr_factors", "grad_clip",
        "log_every", "float64", "compile", "bf16", "channels_last", "fused_adam"}),
    "eval": frozenset({
        "batch_size", "n_samples", "test_subset", "second_temperature", "second_temperature_is",
        "grid_size", "classifier_epochs", "probe_train_size", "kid_subset_size", "kid_subsets", "pr_k",
        "bpd_subset", "log_prob_batch_size", "interp_pairs", "interp_steps", "track_every",
        "track_samples", "channels_last"}),
    "pie": frozenset({
        "latent_dim", "eps2", "learned_g", "preprocessing", "image_shape", "input_transform",
        "logit_alpha", "conv_keep", "linear_sizes", "final_blocks", "couplings_per_block",
        "n_reflections", "coupling_conv_hidden", "coupling_linear_hidden", "g_conv_hidden",
        "g_linear_hidden", "scale_clamp", "coupling", "beta1"}),
    "vae": frozenset({"latent_dim", "width", "likelihood", "init_log_scale", "iw_samples", "preprocessing"}),
    "wae": frozenset({"latent_dim", "width", "recon_weight", "mmd_weight", "kernel_scales", "preprocessing"}),
}


def field_defaults(cls: type) -> dict[str, Any]:
    """Each field's default of dataclass ``cls``, as JSON would hold it."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return json.loads(json.dumps(out))


def section_identity(name: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The hashed part of section ``name`` (dataclass ``cls``) holding ``values`` (a plain dict)."""
    frozen = FROZEN_FIELDS.get(name, frozenset())
    defaults = field_defaults(cls)
    values = json.loads(json.dumps(values))  # tuples -> lists, as in a config.json
    return {k: v for k, v in values.items() if k in frozen or k not in defaults or v != defaults[k]}


def digest(obj: Any, length: int) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]
