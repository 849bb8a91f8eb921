"""A small results directory written by the runner's own writers, without training (fast).

Every run is as ``bench.runner`` leaves it: ``config.json`` (the smoke preset's settings),
``train_log.csv``, ``figures.npz``, its own ``metrics.csv``, its rows in the tidy table and
``done.json`` (row count and checksum). No PIE run at latent 10, so the report draws no UMAP.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import load_config
from bench.figure_data import save_figure_data
from bench.record import RunRecord, real_run_id
from bench.results import RUNS, TABLE, atomic_write_bytes, write_csv_atomic
from bench.sync import replace_run_rows
from bench.tidy import done_bytes
from tests.helpers import SMOKE

METRICS = ("sharpness", "fd_lenet", "precision", "recall", "recon_mse", "bits_per_dim", "probe_accuracy",
           "artefact_corner", "final_loss")
STARTED = "2026-01-01T00:00:00+00:00"


def _frame(run_id: str, model: str, seed, latent, rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": run_id, "dataset": "mnist", "model": model, "seed": seed, "split": split,
                          "metric": metric, "value": value, "note": note, "status": "ok", "latent_dim": latent,
                          "preset": "smoke", "config_hash": run_id.split("-")[1], "git_commit": "abc1234",
                          "started_at": STARTED, "elapsed_s": 1.0} for split, metric, value, note in rows])


def _record(out: Path, run_id: str, frame: pd.DataFrame) -> Path:
    run_dir = out / RUNS / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(run_dir / TABLE, frame.dropna(axis=1, how="all"))
    replace_run_rows(out / TABLE, frame)
    atomic_write_bytes(run_dir / "done.json", done_bytes(run_id, frame.dropna(axis=1, how="all")))
    return run_dir


def make_results(out: Path, models: tuple[str, ...] = ("vae", "wae", "pie"), seeds: tuple[int, ...] = (0, 1)) -> Path:
    """``out`` holding one finished run per (model, seed) and the real-image run."""
    cfg = load_config(SMOKE)
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    real_id = real_run_id("0badc0de", cfg.eval)
    _record(out, real_id, _frame(real_id, "real", pd.NA, pd.NA, [
        ("test", m, float(rng.uniform(0.1, 1)), "real test images") for m in
        ("sharpness", "fd_lenet", "precision", "recall", "artefact_corner", "recon_mse_mean_image")]))
    for model in models:
        for seed in seeds:
            run_id = RunRecord.of(cfg, model, seed).run_id
            rows = [("test" if m != "final_loss" else "train", m, float(rng.uniform(0.01, 1)), f"{m} of {model}")
                    for m in METRICS]
            run_dir = _record(out, run_id, _frame(run_id, model, seed, 8, rows))
            config = {"model": model, "seed": seed, "sweep": {}, "preset": "smoke", "run_id": run_id,
                      "device": "cpu (1 threads)", "torch_version": "2", **cfg.run_dict(model)}
            (run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
            epochs = np.arange(1, 4)
            pd.DataFrame({"epoch": epochs, "step": epochs * 12, "lr": 1e-3, "train_loss": 5.0 / epochs + seed,
                          "val_loss": 5.5 / epochs + seed, "seconds": 1.0 * epochs,
                          "epoch_seconds": 1.0}).to_csv(run_dir / "train_log.csv", index=False)
            images = rng.uniform(0, 1, size=(16, 1, 28, 28)).astype(np.float32)
            save_figure_data(run_dir, {"samples_t1": images, "samples_t2": images, "recon_inputs": images,
                                       "recon_outputs": images})
    return out
