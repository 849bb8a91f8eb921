"""Which runs the report uses, read from a results directory's tidy table and run configs.

- Table 1: finished runs of every registered model with latent_dim 8 (the paper's Table 1) and
  no value in any sweep column (PIE at its config's own eps²). Runs whose model settings are
  their preset's come first: a variant run with ``--set`` (e.g. ``--set vae.decoder_scale=per_pixel``)
  in the same directory does not displace the preset's row; it is listed under Table 1 as an
  other configuration (``Selection.others``). If a model then still has runs of several
  configurations (config_hash), the one with the most finished seeds is used (ties: the newest).
  The "True" row is the ``real-*`` run whose evaluation config matches the Table 1 runs'.
- Figure 7: finished pie runs with latent_dim 10, grouped by eps² (the ``pie.eps2`` sweep
  column, else the run's config). Per eps² one run is drawn: the paper's figure varies eps²
  alone, so first the runs whose other PIE settings are their preset's (an ablation such as
  ``--sweep pie.coupling=additive`` or ``--set pie.n_reflections=0`` in the same directory is
  not Fig. 7), then runs with no other sweep column set, then runs swept over eps², then the
  lowest seed, then the newest. The other seeds of the drawn run's configuration are the
  figure's runs too (training curves, "Runs used").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.config import PER_MODEL_KEYS
from bench.datasets import DATASETS, DatasetSpec
from bench.errors import UserError
from bench.record import current_form, is_real_run_of
from bench.registry import MODELS, display_label
from bench.report.markdown import list_text
from bench.report.paper import paper_numbers
from bench.results import COLUMNS, TABLE, DamageLog, warn
from bench.rundir import read_config
from bench.sync import finished_runs, reconcile
from bench.tidy import parse_bytes, parse_table

REAL = "real"  # model name of the real-data runs (Table 1's first row)
REAL_LABEL = "True"  # the paper's name for that row
FIG7_MODEL = "pie"  # the model of the paper's Fig. 7 (its latent size and eps² values: paper_numbers())
EPS2_COLUMN = f"{FIG7_MODEL}.eps2"
FIG7_FREE_KEYS = ("eps2", "latent_dim")  # the settings Fig. 7 runs set away from their preset
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the presets a run's config.json names
TABLE1_SEEDS = 5  # seeds per model of the protocol's Table 1 (run_all.sh, bench.gpu)


def protocol_runs(model: str) -> int:
    """Runs of ``model`` in the full protocol (run_all.sh, the GPU protocol): Table 1's seeds,
    plus Fig. 7's eps² sweep (one run per eps², latent 10) for the Fig. 7 model."""
    return TABLE1_SEEDS + (len(paper_numbers().fig7_eps2) if model == FIG7_MODEL else 0)


def table1_models() -> tuple[str, ...]:
    """Table 1's model rows: the paper's row order for the models it reports, then every other
    registered model in registry order."""
    paper = [m for m in paper_numbers().sharpness if m in MODELS]
    return (*paper, *(m for m in MODELS if m not in paper))


def label(model: str) -> str:
    """A row's name in tables and figures: "True" for the real data, else the registry's label."""
    return REAL_LABEL if model == REAL else display_label(model)


# ----------------------------------------------------------------------------- loading


def load_table(results: Path, damage: DamageLog | None = None) -> pd.DataFrame:
    """The tidy table of a results directory, or UserError with one line.

    Damage is contained, never fatal: malformed lines are left out; where a finished run's own
    ``metrics.csv`` and the table disagree, the intact copy is used (:func:`bench.sync.reconcile`);
    a table that is missing or no table at all is replaced by the finished runs' own rows. Each
    is named in one warning line; what is damage (not a table that merely lacks whole runs) goes
    into ``damage``. Only a folder with neither a table nor finished runs is an error.
    """
    damage = damage if damage is not None else DamageLog()
    if not results.exists():
        raise UserError(f"results directory '{results}' does not exist")
    if not results.is_dir():
        raise UserError(f"'{results}' is not a directory")
    path = results / TABLE
    read = parse_table(path) if path.is_file() else None  # malformed lines are left out, never read as data
    rebuild = f"python -m bench.run --out {results} ... rebuilds it from {results / 'runs'}"
    if read is None or read.broken:
        n_finished = len(finished_runs(results))
        if not n_finished:
            if read is None:
                raise UserError(f"'{results}' holds no {TABLE} (run python -m bench.run --out {results} first)")
            raise UserError(f"'{path}' is not a pie-bench results table ({read.broken}); {rebuild}")
        instead = f"the report reads the rows of the {n_finished} finished run(s) in runs/ instead; {rebuild}"
        if read is None:  # runs copied in without their table: an index to rebuild, not damage
            warn(f"warning: {path} is missing; {instead}")
        else:
            damage.add(path, f"is not a results table ({read.broken})", instead)
        table = parse_bytes(b"").frame
    else:
        table = read.frame
        if read.dropped:
            damage.add(path, f"has {len(read.dropped)} malformed line(s) ({read.dropped[0]})",
                       "they are left out, never read as data")
    table, checks = reconcile(results, table)
    absent = [c.run_dir.name for c in checks if c.source == "run" and not c.in_table]
    differ = [c.run_dir.name for c in checks if c.source == "run" and c.in_table]
    if absent and read is not None and not read.broken:  # runs copied in, or a table not yet rebuilt: no damage
        warn(f"warning: {path} lacks rows of {len(absent)} finished run(s) in {results / 'runs'} (e.g. {absent[0]}); "
             "the report uses the runs' own copies; re-run the same python -m bench.run command to rewrite the table")
    if differ:
        damage.add(path, f"holds rows of {len(differ)} finished run(s) that differ from their intact copies (e.g. "
                   f"{differ[0]})", "the report uses the runs' own copies; re-run the same python -m bench.run command "
                   "to rewrite the table")
    for check in checks:
        for file, what, action in check.damage:
            damage.add(file, what, READ_ONLY_ACTION[action])
    for col in COLUMNS:
        if col not in table.columns:
            table[col] = pd.NA
    table["run_id"] = table["run_id"].astype(str)
    table["model"] = table["model"].astype(str)
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    table["seed"] = pd.to_numeric(table["seed"], errors="coerce")
    table["latent_dim"] = pd.to_numeric(table["latent_dim"], errors="coerce")
    table["note"] = table["note"].fillna("").astype(str)
    return table


# What the report does about a damaged copy of a finished run's rows (it writes nothing there).
READ_ONLY_ACTION = {
    "done": "its rows are checked without a checksum",
    "table": "the report uses the table's intact rows; python -m bench.run rewrites the run's copy from them",
    "lost": "its rows are left out of the report; python -m bench.run runs it again",
}


def sweep_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in COLUMNS]


def run_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run_id (the run-level columns of its first row)."""
    cols = ["run_id", "model", "seed", "status", "latent_dim", "preset", "config_hash", "git_commit", "started_at",
            *sweep_columns(table)]
    runs = table[cols].drop_duplicates("run_id").reset_index(drop=True)
    runs["started_at"] = runs["started_at"].fillna("").astype(str)
    return runs


def read_json(path: Path) -> dict[str, Any]:
    """A run's ``config.json`` (:func:`bench.rundir.read_config`: ``{}`` when absent or damaged)."""
    return read_config(path.parent)


# ----------------------------------------------------------------------------- selection


class PresetSettings:
    """Each model's section of ``configs/<preset>.yaml``, as JSON texts per key, read once per
    instance (one report build): a preset edited on disk is seen by the next build."""

    def __init__(self, config_dir: Path = CONFIG_DIR):
        self.config_dir = config_dir
        self._read: dict[tuple[str, str], dict[str, str]] = {}

    def __call__(self, preset: str, model: str) -> dict[str, str]:
        """The model's config defaults when there is no such preset (or it no longer loads)."""
        if (preset, model) not in self._read:
            from bench.config import load_config

            path = self.config_dir / f"{preset}.yaml"
            section, per_model = MODELS[model].config_cls(), {}
            if path.is_file():
                try:
                    cfg = load_config(path)
                    section, per_model = cfg.models[model], cfg.train.per_model.get(model, {})
                except UserError:
                    pass
            settings = _with_per_model(dataclasses.asdict(section), per_model)
            self._read[(preset, model)] = {k: json.dumps(v, sort_keys=True) for k, v in settings.items()}
        return self._read[(preset, model)]


@dataclass
class Selection:
    """The runs behind Table 1 and Figure 7, and what was set aside."""

    table1: dict[str, pd.DataFrame]  # model -> its chosen runs (ok and failed), one row per run; row order
    real_run: str | None
    fig7: dict[float, pd.Series]  # eps² -> the run drawn
    fig7_all: pd.DataFrame  # the finished latent-10 PIE runs of the drawn configurations, with their eps²
    notes: list[str] = field(default_factory=list)
    dataset: str = "mnist"  # the table's runs are all of this dataset (build_report splits by it)
    # Finished latent-8 runs of Table 1's models that are not Table 1 rows (other configurations).
    others: pd.DataFrame = field(default_factory=pd.DataFrame)
    presets: PresetSettings = field(default_factory=PresetSettings, repr=False)  # the presets read to select

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS[self.dataset]

    @property
    def has_paper(self) -> bool:
        """The paper reports MNIST only: its column and markers appear for MNIST alone."""
        return self.dataset == paper_numbers().dataset

    @property
    def rows(self) -> tuple[str, ...]:
        """Table 1's rows: the real data, then the models."""
        return (REAL, *self.table1)


def pick_config(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the config_hash with the most finished runs (ties: newest start)."""
    if runs.empty or runs["config_hash"].nunique(dropna=False) <= 1:
        return runs, []
    stats = runs.assign(ok=runs["status"] == "ok").groupby("config_hash", dropna=False).agg(
        ok=("ok", "sum"), newest=("started_at", "max"))
    best = stats.sort_values(["ok", "newest"], ascending=False).index[0]
    dropped = [str(h) for h in stats.index if h != best]
    return runs[runs["config_hash"] == best], dropped


def _with_per_model(section: dict[str, Any], per_model: dict[str, Any]) -> dict[str, Any]:
    """A model's section with its ``train.per_model`` settings as ``per_model.<key>`` (None where unset):
    the optimiser settings a model trains with are its settings too."""
    return {**section, **{f"per_model.{k}": per_model.get(k) for k in PER_MODEL_KEYS}}


def changed_settings(config: dict[str, Any], model: str, free: tuple[str, ...] = FIG7_FREE_KEYS,
                     presets: PresetSettings | None = None) -> dict[str, Any]:
    """``model``'s settings in a run's config.json that differ from its preset's, besides ``free``
    (key -> the run's value); a key the run did not record (older code) or the preset no longer
    has is not counted. ``presets``: the presets read so far (default: read now)."""
    config = current_form(config, model)  # an older run's pie.beta1 counts as its train.per_model entry
    own = config.get(model)
    if not isinstance(own, dict):
        return {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    per_model = train.get("per_model") if isinstance(train.get("per_model"), dict) else {}
    own = _with_per_model(own, per_model.get(model) if isinstance(per_model.get(model), dict) else {})
    preset = (presets or PresetSettings())(str(config.get("preset", "")), model)
    return {k: v for k, v in sorted(own.items())
            if k not in free and k in preset and json.dumps(v, sort_keys=True) != preset[k]}


def settings_changed(config: dict[str, Any], model: str, free: tuple[str, ...] = FIG7_FREE_KEYS,
                     presets: PresetSettings | None = None) -> int:
    """How many of ``model``'s settings differ from its preset's (:func:`changed_settings`)."""
    return len(changed_settings(config, model, free, presets))


def select_runs(table: pd.DataFrame, configs: dict[str, dict]) -> Selection:
    runs = run_frame(table)
    sweeps = sweep_columns(table)
    unswept = runs[sweeps].isna().all(axis=1) if sweeps else pd.Series(True, index=runs.index)
    notes: list[str] = []
    presets = PresetSettings()

    table1: dict[str, pd.DataFrame] = {}
    for model in table1_models():
        cand = runs[(runs["model"] == model) & (runs["latent_dim"] == paper_numbers().table1_latent) & unswept]
        changed = cand["run_id"].map(lambda r, m=model: settings_changed(configs.get(r, {}), m, (), presets))
        if (changed == 0).any() and (changed > 0).any():  # the preset's settings first
            notes.append(f"{label(model)}: runs with settings changed from the preset are not Table 1's row "
                         "(see Other configurations).")
            cand = cand[changed == 0]
        chosen, dropped = pick_config(cand)
        if dropped:
            notes.append(f"{label(model)}: runs of other configurations were set aside (config_hash "
                         f"{list_text(dropped)}); Table 1 uses config_hash {chosen['config_hash'].iloc[0]}.")
        table1[model] = chosen.sort_values("seed")

    real = runs[(runs["model"] == REAL) & (runs["status"] == "ok")]
    real_run = None
    if len(real):
        wanted = [configs.get(r, {}).get("eval") for m in table1.values() for r in m["run_id"]]
        wanted = [e for e in wanted if isinstance(e, dict)]
        match = real[real["run_id"].map(lambda r: any(is_real_run_of(r, e) for e in wanted))]
        if len(match):
            real_run = match.sort_values("started_at")["run_id"].iloc[-1]
        else:
            real_run = real.sort_values("started_at")["run_id"].iloc[-1]
            if wanted:
                notes.append(f"True row: no real-data run matches the Table 1 runs' evaluation config; "
                             f"using the newest one ({real_run}).")

    fig7, fig7_all = select_fig7(runs, configs, [c for c in sweeps if c != EPS2_COLUMN], presets)
    chosen_ids = {r for f in table1.values() for r in f["run_id"]}
    others = runs[runs["model"].isin(list(table1)) & (runs["latent_dim"] == paper_numbers().table1_latent)
                  & (runs["status"] == "ok") & ~runs["run_id"].isin(chosen_ids)]
    return Selection(table1, real_run, fig7, fig7_all, notes, others=others.reset_index(drop=True), presets=presets)


def select_fig7(runs: pd.DataFrame, configs: dict[str, dict], other_sweeps: list[str],
                presets: PresetSettings | None = None) -> tuple[dict[float, pd.Series], pd.DataFrame]:
    """eps² -> the run drawn (see the module docstring), and every finished run of the drawn
    runs' configurations with its eps²."""
    cand = runs[(runs["model"] == FIG7_MODEL) & (runs["latent_dim"] == paper_numbers().fig7_latent)
                & (runs["status"] == "ok")].copy()
    eps_col = pd.to_numeric(cand[EPS2_COLUMN], errors="coerce") if EPS2_COLUMN in cand else \
        pd.Series(np.nan, index=cand.index)
    cand["swept"] = eps_col.notna()
    from_config = cand["run_id"].map(lambda r: (configs.get(r, {}).get(FIG7_MODEL) or {}).get("eps2", np.nan))
    cand["eps2"] = eps_col.fillna(pd.to_numeric(from_config, errors="coerce"))
    cand = cand.dropna(subset=["eps2"])
    presets = presets or PresetSettings()
    cand["_changed"] = [settings_changed(configs.get(r, {}), FIG7_MODEL, presets=presets) for r in cand["run_id"]]
    cand["_other_sweeps"] = cand[other_sweeps].notna().any(axis=1) if other_sweeps else False
    cand["_unswept"] = ~cand["swept"]
    fig7: dict[float, pd.Series] = {}
    same_config = pd.Series(False, index=cand.index)
    for eps2, group in cand.groupby("eps2"):
        group = group.sort_values(["_changed", "_other_sweeps", "_unswept", "seed", "started_at"],
                                  ascending=[True, True, True, True, False])
        fig7[float(eps2)] = group.iloc[0]
        hashes = group["config_hash"].astype(str)
        same_config[group.index[hashes == hashes.iloc[0]]] = True
    return fig7, cand[same_config].drop(columns=["_changed", "_other_sweeps", "_unswept"])
