"""Section ``targets``: the project's speed targets with ``met`` / ``not met``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.config import Config
from bench.perf.common import (
    TARGET_DATA_RATIO,
    TARGET_EVAL_FRACTION,
    TARGET_HARNESS_RATIO,
    TARGET_PEER_RATIO,
    TARGET_PIE_GFLOPS_RATIO,
    TARGET_PIE_INFERENCE_SPEEDUP,
    TARGET_RUN_ALL_SECONDS,
    Row,
)
from bench.registry import MODELS
from bench.report.selection import protocol_runs


def _value(frame: pd.DataFrame, section: str, metric: str, model: str | None = None, preset: str | None = None):
    sel = (frame["section"] == section) & (frame["metric"] == metric)
    if model is not None:
        sel &= frame["model"] == model
    if preset is not None:
        sel &= frame["preset"] == preset
    vals = frame.loc[sel, "value"]
    return float(vals.iloc[0]) if len(vals) else None


def eval_fraction_from_table(path: Path, preset: str) -> tuple[float, str] | None:
    """Largest eval_seconds / train_seconds over the finished runs of ``preset`` in a metrics.csv."""
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    need = {"run_id", "metric", "value", "preset"}
    if not need <= set(table.columns):
        return None
    sel = table[(table["preset"] == preset) & table["metric"].isin(["train_seconds", "eval_seconds"])]
    wide = sel.pivot_table(index="run_id", columns="metric", values="value", aggfunc="last").dropna()
    if wide.empty or not {"train_seconds", "eval_seconds"} <= set(wide.columns):
        return None
    frac = wide["eval_seconds"] / wide["train_seconds"]
    return float(frac.max()), f"from {path}: max over {len(frac)} {preset} runs (median {frac.median():.3f})"


def estimate_run(frame: pd.DataFrame, name: str, cfg: Config, n_train: int) -> tuple[float, float, str] | None:
    """(training seconds, evaluation seconds, how) of one run of ``name``, projected from the measurements.

    Training: epochs x (full-epoch steps at the harness's step rate + per-epoch work). Evaluation:
    the measured ``evaluate_model`` time if present, else the sum of the measured parts.
    """
    step = _value(frame, "harness", "harness_step_images_per_s", name, cfg.preset)
    per_epoch = _value(frame, "harness", "per_epoch_seconds", name, cfg.preset)
    if step is None or per_epoch is None:
        return None
    steps = n_train // cfg.train.batch_size
    train = cfg.train.epochs * (steps * cfg.train.batch_size / step + per_epoch)
    evaluation = _value(frame, "metrics", "eval_seconds", name, cfg.preset)
    if evaluation is not None:
        return train, evaluation, "evaluate_model measured"
    sample = _value(frame, "model", "sample_images_per_s", name, cfg.preset)
    if sample is None:
        return None
    common = sum(_value(frame, "metrics", m) or 0.0 for m in
                 ("sharpness_seconds", "features_fd_seconds", "kid_seconds", "precision_recall_seconds"))
    evaluation = (2 * cfg.eval.n_samples / sample + common
                  + (_value(frame, "metrics", "bits_per_dim_eval_seconds", name) or 0.0)
                  + (_value(frame, "metrics", "probe_seconds", name) or 0.0))
    return train, evaluation, "sum of measured parts"


def target_rows(frame: pd.DataFrame, cfg: Config, names: list[str], n_train: int, metrics_csv: Path) -> list[Row]:
    """The project's speed targets with met / not met."""
    rows: list[Row] = []
    base = {"section": "targets", "model": "-", "preset": cfg.preset, "width": "-"}

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    ratio = _value(frame, "data", "data_path_ratio")
    if ratio is not None:
        rows.append(Row(**base, metric="data_path_ratio", value=ratio, unit="x",
                        note=f"target >= {TARGET_DATA_RATIO:g}x: {verdict(ratio >= TARGET_DATA_RATIO)}"))
    h = frame[(frame["section"] == "harness") & (frame["metric"] == "harness_ratio")]
    if len(h):
        worst = h.loc[h["value"].idxmin()]
        rows.append(Row(**base, metric="harness_ratio_min", value=float(worst["value"]), unit="x",
                        note=f"target >= {TARGET_HARNESS_RATIO:g} (overhead <= 10 %), training steps only, worst "
                        f"model {worst['model']}: {verdict(worst['value'] >= TARGET_HARNESS_RATIO)}"))
        e = frame[(frame["section"] == "harness") & (frame["metric"] == "harness_epoch_ratio")]
        worst = e.loc[e["value"].idxmin()]
        rows.append(Row(**base, metric="harness_epoch_ratio_min", value=float(worst["value"]), unit="x",
                        note=f"same with per-epoch work over a full epoch, worst model {worst['model']}: "
                        f"{verdict(worst['value'] >= TARGET_HARNESS_RATIO)}"))
    peer = frame[(frame["section"] == "peer") & (frame["metric"] == "peer_ratio")]
    if len(peer):
        worst = peer.loc[peer["value"].idxmin()]
        bf16 = frame[(frame["section"] == "peer") & (frame["metric"] == "peer_ratio[bf16]")]
        bf16_note = ""
        if len(bf16):
            low = bf16.loc[bf16["value"].idxmin()]
            bf16_note = (f"; with the opt-in train.bf16 (numbers change) the worst is {low['value']:.2f}x "
                         f"({low['model']})")
        rows.append(Row(**base, metric="peer_ratio_min", value=float(worst["value"]), unit="x",
                        note=f"target >= {TARGET_PEER_RATIO:g}x Pythae's BaseTrainer (identical nets, width "
                        f"{worst['width']}), default fp32 config, worst model {worst['model']}: "
                        f"{verdict(worst['value'] >= TARGET_PEER_RATIO)}{bf16_note}"))
    measured = eval_fraction_from_table(metrics_csv, cfg.preset)
    estimates = {n: estimate_run(frame, n, cfg, n_train) for n in names}
    estimates = {n: e for n, e in estimates.items() if e is not None}
    if measured is not None:
        rows.append(Row(**base, metric="eval_fraction", value=measured[0], unit="fraction",
                        note=f"target <= {TARGET_EVAL_FRACTION:g}: {verdict(measured[0] <= TARGET_EVAL_FRACTION)} "
                        f"({measured[1]})"))
    if estimates:
        n, (tr, ev, how) = max(estimates.items(), key=lambda kv: kv[1][1] / kv[1][0])
        rows.append(Row(**base, metric="eval_fraction_estimate", value=ev / tr, unit="fraction",
                        note=f"eval {ev:.0f} s / projected training {tr:.0f} s ({how}), worst model {n}: "
                        f"{verdict(ev / tr <= TARGET_EVAL_FRACTION)} (estimate; results/metrics.csv is the measure)"))
    share = frame[(frame["section"] == "evalshare") & (frame["metric"] == "eval_share")]
    if len(share):
        worst = share.loc[share["value"].idxmax()]
        floor = frame[(frame["section"] == "evalshare") & (frame["metric"] == "eval_model_share")]
        floor_note = ""
        if len(floor):  # the model's own calls: no faster metric code goes below this
            top = floor.loc[floor["value"].idxmax()]
            reach = "within reach" if top["value"] <= TARGET_EVAL_FRACTION else "out of reach"
            floor_note = (f"; the model's own calls alone take up to {top['value']:.3f} of training ({top['model']}), "
                          f"so the target is {reach} of faster metric code at this protocol's sample counts")
        rows.append(Row(**{**base, "preset": worst["preset"]}, metric="eval_share_max", value=float(worst["value"]),
                        unit="fraction", note=f"target <= {TARGET_EVAL_FRACTION:g}: "
                        f"{verdict(worst['value'] <= TARGET_EVAL_FRACTION)} (measured in this process: one run "
                        f"per model, worst model {worst['model']}; median "
                        f"{share['value'].median():.3f}){floor_note}"))
    rows += _pie_rows(frame, base, verdict)
    if set(estimates) >= set(MODELS):  # every registered model, each with its protocol's run count
        total = sum(protocol_runs(n) * (estimates[n][0] + estimates[n][1]) for n in MODELS)
        rows.append(Row(**base, metric="run_all_seconds_estimate", value=total, unit="s",
                        note=f"target <= {TARGET_RUN_ALL_SECONDS} s: measured separately (./run_all.sh); this "
                        f"serial projection would be {verdict(total <= TARGET_RUN_ALL_SECONDS)}"))
    return rows


def _pie_rows(frame: pd.DataFrame, base: dict, verdict) -> list[Row]:
    """PIE's FLOP rate against the VAE's (best variant per preset and thread count), and its inference speed-ups."""
    rows: list[Row] = []
    part = frame[(frame["section"] == "pie_speed")]
    ratios = part[part["metric"].str.startswith("gflops_ratio_to_vae[")]
    for (preset, threads), group in ratios.groupby([ratios["preset"], ratios["metric"].str.extract(r",(\d+t)\]")[0]]):
        best = group.loc[group["value"].idxmax()]
        eager = group[group["metric"].str.startswith("gflops_ratio_to_vae[eager,")]["value"]
        rows.append(Row(**{**base, "preset": preset}, metric=f"pie_gflops_ratio[{threads}]", value=float(best["value"]),
                        unit="x", note=f"target >= {TARGET_PIE_GFLOPS_RATIO:g}: "
                        f"{verdict(best['value'] >= TARGET_PIE_GFLOPS_RATIO)} (best lever: "
                        f"{best['metric'].split('[')[1].split(',')[0]}; eager {float(eager.iloc[0]):.2f})"))
    for what in ("encode", "sample"):
        sp = part[part["metric"].str.startswith(f"{what}_speedup_vs_eager[")]
        for r in sp.itertuples():
            rows.append(Row(**{**base, "preset": r.preset}, metric=r.metric, value=float(r.value), unit="x",
                            note=f"target >= {TARGET_PIE_INFERENCE_SPEEDUP:g}: "
                            f"{verdict(r.value >= TARGET_PIE_INFERENCE_SPEEDUP)}"))
    return rows
