"""Figure functions for the report. They take arrays and data frames, never models.

Everything here is drawn from what the runner saved (CSV tables and the arrays of
``figures.npz``, see ``bench.figure_data``), so every figure can be rebuilt without
checkpoints or retraining. Matplotlib
runs on the Agg backend; image grids come from ``torchvision.utils.make_grid``.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bench.datasets import DATASETS, DatasetSpec  # noqa: E402
from bench.metrics import names as N

GRID_PAD = 2
PAD_VALUE = 1.0  # white separators: visible between black MNIST backgrounds and grey samples
DPI = 110


# ----------------------------------------------------------------------------- image grids


def as_images(images: np.ndarray) -> np.ndarray:
    """``[N, 1, H, W]`` (or ``[N, H, W]``) float images, clipped to [0, 1]."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"expected images of shape [N, C, H, W], got {arr.shape}")
    return np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0)


def make_grid(images: np.ndarray, nrow: int) -> np.ndarray:
    """One ``[H, W]`` grey array of the images, ``nrow`` per row (torchvision's make_grid)."""
    import torch
    import torchvision

    arr = as_images(images)
    grid = torchvision.utils.make_grid(torch.from_numpy(arr), nrow=max(1, nrow), padding=GRID_PAD,
                                       pad_value=PAD_VALUE)
    return grid[0].numpy()  # make_grid repeats one channel to three: keep one


def alternate_rows(inputs: np.ndarray, outputs: np.ndarray, per_row: int) -> np.ndarray:
    """Interleave rows: ``per_row`` inputs, then their ``per_row`` outputs, and so on."""
    n = min(len(inputs), len(outputs))
    per_row = max(1, min(per_row, n))
    n -= n % per_row  # whole rows only, so inputs and outputs stay aligned
    chunks = []
    for start in range(0, n, per_row):
        chunks.append(inputs[start:start + per_row])
        chunks.append(outputs[start:start + per_row])
    return np.concatenate(chunks) if chunks else np.asarray(inputs[:0])


def interpolation_steps(n_images: int, hint: int | None = None) -> int:
    """Images per interpolation row: the config's value if it divides the count, else 10, else √n."""
    for cand in (hint, 10):
        if cand and cand > 0 and n_images % cand == 0:
            return int(cand)
    return max(1, int(round(np.sqrt(n_images))))


def _wrap(title: str, width_in: float) -> str:
    """Wrap each line of a title to the figure width (about 13 characters per inch at 9 pt)."""
    width = max(20, int(width_in * 13))
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def _image_axes(ax, grid: np.ndarray, title: str, width_in: float | None = None) -> None:
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(_wrap(title, width_in) if width_in else title, fontsize=9)
    ax.set_axis_off()


def _save(fig, path: Path, title: str | None = None, title_size: int = 10, top: float = 1.0,
          subtitle: str = "") -> Path:
    """Lay out (below a figure title, if any, and its ``subtitle`` line: the protocol), write the
    PNG and free the figure."""
    if title:
        if subtitle:  # a second title line takes as much room again
            title, top = f"{title}\n{subtitle}", 1.0 - 2 * (1.0 - top)
        fig.suptitle(title, fontsize=title_size)
        fig.tight_layout(rect=(0, 0, 1, top))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _epoch_axes(ax, title: str) -> None:
    """Title, whole-number epochs and a small legend: the panels of the curve figures."""
    ax.set_title(title, fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)


def save_image_grid(images: np.ndarray, path: Path, nrow: int, title: str) -> Path:
    """A titled PNG of an image grid; the figure size follows the grid."""
    grid = make_grid(images, nrow)
    h, w = grid.shape
    scale = 1 / 40  # inches per grid pixel (a 28-pixel digit is ~0.75 inch)
    width_in = max(4.5, w * scale)
    n_title_lines = _wrap(title, width_in).count("\n") + 1
    fig, ax = plt.subplots(figsize=(width_in, max(2.0, h * scale) + 0.2 + 0.18 * n_title_lines))
    _image_axes(ax, grid, title, width_in)
    return _save(fig, path)


# ----------------------------------------------------------------------------- UMAP


def exact_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (self first) by the dot-product form of the distance.

    Given to UMAP as ``precomputed_knn``: it skips compiling pynndescent, which costs
    more than the embedding itself for the few thousand points plotted here.
    """
    x = np.asarray(x, dtype=np.float64)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(d2, -1.0)  # self first, at distance 0
    idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(d2, idx, 1), axis=1)
    idx = np.take_along_axis(idx, order, 1)
    dist = np.sqrt(np.maximum(np.take_along_axis(d2, idx, 1), 0.0))
    return idx.astype(np.int32), dist.astype(np.float32)


def umap_embedding(latents: np.ndarray, labels: np.ndarray, max_points: int = 3000, random_state: int = 0,
                   n_neighbors: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """2-d UMAP of at most ``max_points`` latents (fixed subsample and random_state)."""
    import umap

    from bench.figure_data import umap_subset

    z, y = umap_subset(latents, labels, max_points, random_state)
    if len(z) < 4:
        raise ValueError(f"only {len(z)} finite latents: too few for UMAP")
    k = min(n_neighbors, len(z) - 1)
    knn = exact_knn(z, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", small-data notes
        reducer = umap.UMAP(n_neighbors=k, random_state=random_state, precomputed_knn=(*knn, None))
        emb = reducer.fit_transform(z)
    return np.asarray(emb), y


def umap_axes(ax, emb: np.ndarray, labels: np.ndarray, title: str, legend: bool = True,
              dataset: DatasetSpec = DATASETS["mnist"]) -> None:
    import seaborn as sns

    names = np.asarray(dataset.class_names)
    frame = pd.DataFrame({"umap 1": emb[:, 0], "umap 2": emb[:, 1], dataset.item: names[labels.astype(int)]})
    sns.scatterplot(data=frame, x="umap 1", y="umap 2", hue=dataset.item, palette="tab10", s=6, linewidth=0,
                    ax=ax, legend="full" if legend else False, hue_order=list(dataset.class_names))
    if legend:
        ax.legend(title=dataset.item, fontsize=7, title_fontsize=8, markerscale=2, loc="center left",
                  bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def umap_figure(emb: np.ndarray, labels: np.ndarray, path: Path, title: str,
                dataset: DatasetSpec = DATASETS["mnist"]) -> Path:
    """Fig. 7e: UMAP of the test latents coloured by class (digit for MNIST)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    umap_axes(ax, emb, labels, title, dataset=dataset)
    return _save(fig, path)


# ----------------------------------------------------------------------------- composite figures


def _missing_axes(ax, title: str, reason: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, f"missing\n{reason}", ha="center", va="center", fontsize=8, color="firebrick", wrap=True,
            transform=ax.transAxes)
    ax.set_axis_off()


def fig7_overview(rows: Sequence[dict], path: Path, dataset: DatasetSpec = DATASETS["mnist"],
                  subtitle: str = "") -> Path:
    """All Fig. 7 panels: one row per eps², columns (a)-(e) as in the paper.

    Each row dict has ``label`` and ``panels``: a list of 5 entries, each
    ``("grid", array, title)``, ``("umap", (emb, labels), title)`` or ``("missing", reason, title)``.
    """
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 5, figsize=(20, 4.2 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1.4, 1, 1, 1.4, 1.2]})
    for r, row in enumerate(rows):
        for c, (kind, payload, title) in enumerate(row["panels"]):
            ax = axes[r][c]
            full = f"{row['label']}: {title}"
            if kind == "grid":
                _image_axes(ax, payload, full)
            elif kind == "umap":
                umap_axes(ax, payload[0], payload[1], full, legend=(c == 4 and r == 0), dataset=dataset)
            else:
                _missing_axes(ax, full, payload)
    return _save(fig, path, "Figure 7 (reproduction): PIE, dim(z) = 10", 12, 0.97, subtitle)


def samples_side_by_side(entries: Sequence[dict], path: Path, subtitle: str = "") -> Path:
    """Samples of several models next to each other; ``entries``: label, samples (or None), title."""
    fig, axes = plt.subplots(1, max(1, len(entries)), figsize=(4.2 * max(1, len(entries)), 4.8), squeeze=False)
    for ax, entry in zip(axes[0], entries, strict=False):
        if entry.get("samples") is None:
            _missing_axes(ax, entry["title"], entry.get("reason", "no samples"))
        else:
            samples = entry["samples"]
            _image_axes(ax, make_grid(samples, max(1, int(np.ceil(np.sqrt(len(samples)))))), entry["title"])
    return _save(fig, path, "Samples at T = 1 (Table 1 runs, latent 8)", 11, 0.94, subtitle)


def sharpness_bars(per_run: pd.DataFrame, paper: dict[str, float], path: Path,
                   real_value: float | None = None, order: Sequence[str] | None = None,
                   dataset: DatasetSpec = DATASETS["mnist"], subtitle: str = "") -> Path:
    """Bar chart of sharpness: mean ± std over seeds (``per_run``: columns row, value), the paper's
    values marked where given (MNIST only; ``paper`` may be empty)."""
    import seaborn as sns

    order = list(order if order is not None else paper)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    data = per_run[per_run["row"].isin(order)]
    present = [r for r in order if (data["row"] == r).any()]
    if len(data):
        # The strip plot's jitter draws from NumPy's global RNG: seed it (and restore it), so the
        # same table always gives the same PNG bytes.
        rng_state = np.random.get_state()
        np.random.seed(0)
        sns.barplot(data=data, x="row", y="value", order=order, errorbar="sd", capsize=0.15, ax=ax,
                    color="#7aa6c2", label="this reproduction (mean ± std over seeds)")
        sns.stripplot(data=data, x="row", y="value", order=order, color="black", size=3, jitter=0.12, ax=ax,
                      alpha=0.6)
        np.random.set_state(rng_state)
    else:
        ax.set_xticks(range(len(order)), order)
    if paper:
        ax.scatter([order.index(r) for r in paper if r in order], [paper[r] for r in paper if r in order],
                   marker="D", s=46, color="firebrick", zorder=5, label="paper, Table 1")
    if real_value is not None and np.isfinite(real_value):
        ax.axhline(real_value, ls="--", lw=1, color="grey", label=f"real test {dataset.item}s ({real_value:.3g})")
    missing = [r for r in order if r not in present]
    if missing:
        ax.text(0.01, 0.98, "no data: " + ", ".join(missing), transform=ax.transAxes, va="top", fontsize=8,
                color="firebrick")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("")
    ax.set_ylabel("sharpness (variance of the Laplacian)")
    ax.set_title(f"Table 1: sharpness of generated {dataset.item}s (latent 8)" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.93) if missing else None)
    return _save(fig, path)


def training_curves(logs: pd.DataFrame, path: Path, panels: Sequence[str], subtitle: str = "") -> Path:
    """Train and validation loss vs epoch, one panel per entry of ``panels``.

    ``logs`` is long: panel, epoch, loss, curve ("train"/"val"), hue (seed or eps² label).
    Lines are means over the runs of one hue, with the std band.
    """
    import seaborn as sns

    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        data = logs[logs["panel"] == panel].dropna(subset=["loss"])
        if data.empty:
            _missing_axes(ax, panel, "no train_log.csv")
            continue
        hue = "curve" if data["hue"].nunique() <= 1 else "hue"
        style = None if hue == "curve" else "curve"
        sns.lineplot(data=data, x="epoch", y="loss", hue=hue, style=style, errorbar="sd", marker="o",
                     markersize=4, ax=ax)
        _epoch_axes(ax, panel)
    return _save(fig, path, "Training curves (train loss = mean over the epoch; val = held-out images)", top=0.95,
                 subtitle=subtitle)


def convergence_curves(curves: pd.DataFrame, real: dict[str, float], path: Path, metrics: Sequence[str],
                       subtitle: str = "") -> Path:
    """Each tracked metric against the epoch: one line per model (mean over seeds, band ± std).

    ``curves`` is long: model, seed, epoch, metric, value. ``real`` maps a metric to the real
    data's value at the same sample size, drawn as a dashed horizontal line.
    """
    import seaborn as sns

    n = max(1, len(metrics))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        data = curves[curves["metric"] == metric]
        if data.empty:
            _missing_axes(ax, metric, "no learning curves (eval.track_every = 0)")
            continue
        sns.lineplot(data=data, x="epoch", y="value", hue="model", errorbar="sd", marker="o", markersize=3, ax=ax)
        if np.isfinite(real.get(metric, np.nan)):
            ax.axhline(real[metric], ls="--", lw=1, color="grey", label=f"real digits ({real[metric]:.3g})")
        if metric == N.FD_LENET or (data["value"] > 0).all() and data["value"].max() > 50 * data["value"].min():
            ax.set_yscale("log")  # FD falls by orders of magnitude; so do artefact scores between models
        ax.set_ylabel("")
        _epoch_axes(ax, metric)
    return _save(fig, path, "Learning curves of Table 1's metrics (mean ± std over seeds)", top=0.93,
                 subtitle=subtitle)
