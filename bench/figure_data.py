"""What the report's figures need from one run, small enough to commit: ``runs/<id>/figures.npz``.

``artefacts.npz`` (every test latent, float images) stays out of git. ``figures.npz`` holds
only what the figures show: the image grids as uint8 (round(255·x)), the interpolations,
the UMAP's subset of test latents and their labels (a few hundred kB per run). The
report reads ``figures.npz`` first and derives the very same arrays from ``artefacts.npz``
when only that exists, so both give byte-identical figures and a fresh clone of the
repository rebuilds every committed figure.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bench.results import atomic_write_bytes

FIGURES = "figures.npz"
ARTEFACTS = "artefacts.npz"
IMAGE_KEYS = ("samples_t1", "samples_t2", "recon_inputs", "recon_outputs", "interpolations")
UMAP_POINTS = 3000  # most test latents kept for the UMAP panel (the report's --umap-points default)
UMAP_SEED = 0  # fixed subsample and UMAP random_state


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (NaN as 0, clipped) as uint8 round(255·x): what a PNG can show anyway."""
    arr = np.clip(np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return np.rint(arr * 255.0).astype(np.uint8)


def umap_subset(latents: np.ndarray, labels: np.ndarray, max_points: int = UMAP_POINTS,
                seed: int = UMAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The finite latents (flattened, float32) and their labels; at most ``max_points`` of them,
    a fixed random subset kept in the original order."""
    z = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
    y = np.asarray(labels).reshape(-1)[: len(z)]
    z = z[: len(y)]
    finite = np.isfinite(z).all(1)
    z, y = z[finite], y[finite]
    if len(z) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(z), max_points, replace=False))
        z, y = z[keep], y[keep]
    return z, y


def figure_arrays(artefacts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of ``figures.npz`` from a run's artefacts (absent ones left out)."""
    out = {k: to_uint8(artefacts[k]) for k in IMAGE_KEYS if k in artefacts}
    if "test_latents" in artefacts and "test_labels" in artefacts:
        z, y = umap_subset(artefacts["test_latents"], artefacts["test_labels"])
        out["test_latents"], out["test_labels"] = z, y.astype(np.uint8)
    return out


def save_figure_data(run_dir: Path, artefacts: dict[str, np.ndarray]) -> Path:
    """Write ``run_dir/figures.npz`` atomically; returns its path."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **figure_arrays(artefacts))
    path = Path(run_dir) / FIGURES
    atomic_write_bytes(path, buf.getvalue())
    return path


def _read(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {n: np.asarray(npz[n]) for n in names if n in npz.files}


MAX_LABEL = 255  # labels are stored as uint8


def arrays_problem(arrays: dict[str, np.ndarray]) -> str:
    """Why figure arrays (as :func:`figure_arrays` makes them) are not what a run writes ("" if they are):
    images uint8 ``[N, C, H, W]`` with C 1 or 3, reconstructions the shape of their inputs, latents
    float ``[N, d]`` and as many integer labels in [0, 255]."""
    for key in IMAGE_KEYS:
        a = arrays.get(key)
        if a is None:
            continue
        if a.dtype != np.uint8:
            return f"{key} has dtype {a.dtype}, not uint8"
        if a.ndim != 4 or a.shape[1] not in (1, 3) or min(a.shape) < 1:
            return f"{key} has shape {list(a.shape)}, not [N, C, H, W] with C 1 or 3"
    if "recon_inputs" in arrays and "recon_outputs" in arrays and \
            arrays["recon_inputs"].shape[1:] != arrays["recon_outputs"].shape[1:]:
        return "recon_inputs and recon_outputs differ in image shape"
    z, y = arrays.get("test_latents"), arrays.get("test_labels")
    if z is not None and (not np.issubdtype(z.dtype, np.floating) or z.ndim != 2 or z.shape[1] < 1):
        return f"test_latents has dtype {z.dtype} and shape {list(z.shape)}, not float [N, d]"
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            return f"test_labels has dtype {y.dtype} and shape {list(y.shape)}, not integer [N]"
        if len(y) and (y.min() < 0 or y.max() > MAX_LABEL):
            return f"test_labels holds {int(y.min() if y.min() < 0 else y.max())}, not a label"
        if z is not None and len(y) != len(z):
            return f"test_labels holds {len(y)} labels for {len(z)} test_latents"
    return ""


def load_figure_data(run_dir: Path, names: tuple[str, ...], damage=None) -> tuple[dict[str, np.ndarray], str]:
    """The named figure arrays of one run, images as float32 k/255, and an error text.

    From ``figures.npz`` if readable, else derived from ``artefacts.npz``. The error text
    is empty when a file was read, else it says that neither could be read: the
    figure's inputs are unavailable (a fresh clone of results written before figures.npz).
    A file that exists but cannot be read, or holds arrays no run writes (truncated, wrong
    dtype or shape), is damaged: it is named in ``damage`` (a :class:`bench.results.DamageLog`)
    with what was done instead, and the next file is tried.
    """
    run_dir = Path(run_dir)
    problems = []
    damaged = []
    for name in (FIGURES, ARTEFACTS):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            if name == FIGURES:
                arrays = _read(path, names)
            else:
                arrays = {k: v for k, v in figure_arrays(_read(path, names)).items() if k in names}
            why = arrays_problem(arrays)
        except Exception as e:  # truncated zip, bad CRC, pickled objects, ...: any failure is this file's damage
            text = str(e).splitlines()[0] if str(e).strip() else ""
            why = f"is unreadable ({type(e).__name__}{': ' + text[:80] if text else ''})"
        else:
            why = f"is malformed ({why})" if why else ""
        if why:
            problems.append(f"runs/{run_dir.name}/{name} {why}")
            damaged.append((path, why))
            continue
        for path, what in damaged:
            if damage is not None:
                damage.add(path, what, f"its figures are drawn from {name}")
        images = {k: v.astype(np.float32) / 255.0 for k, v in arrays.items() if k in IMAGE_KEYS}
        return {**arrays, **images}, ""
    for path, what in damaged:
        if damage is not None:
            damage.add(path, what, "its figures are not redrawn (an earlier build's PNG is kept where there is one)")
    return {}, "; ".join(problems) or f"runs/{run_dir.name} has neither {FIGURES} nor {ARTEFACTS}"
