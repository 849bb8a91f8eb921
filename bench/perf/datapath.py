"""Section ``data``: the harness's resident loader against a plain torchvision ``DataLoader``."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import torch

from bench.config import Config
from bench.context import Context
from bench.data import ImageData, iterate_batches, locate_files
from bench.datasets import get_dataset
from bench.perf.common import Budget, Row
from bench.perf.timing import timed


def torchvision_root(ctx: Context, tmp: Path, dataset: str = "mnist") -> Path:
    """A folder laid out as torchvision 0.29's MNIST-style classes want it (``ROOT/<Class>/raw/<name>``
    uncompressed, ``<Class>`` the dataset's ``torchvision_class``).

    ``MNIST._check_exists`` looks for the files without ``.gz`` and ``read_image_file`` opens
    them as they are, so the local ``.gz`` files (in ``ctx.root(dataset)``) are decompressed into
    ``tmp``; nothing is downloaded.
    """
    raw = tmp / get_dataset(dataset).torchvision_class / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in locate_files(ctx.root(dataset), dataset, ctx).items():
        (raw / name[:-len(".gz")]).write_bytes(gzip.decompress(path.read_bytes()))
    return tmp


def bench_data(cfg: Config, data: ImageData, device: torch.device, budget: Budget, ctx: Context,
               log=print) -> list[Row]:
    """Batches/s of the harness's resident loader vs a plain torchvision DataLoader."""
    import torchvision
    from torchvision.transforms import ToTensor

    rows: list[Row] = []
    batch = 100  # the baseline's batch size, as specified
    base = {"section": "data", "model": "-", "preset": cfg.preset, "width": "-"}
    images = data.train_images
    full = images.shape[0] // batch
    n_batches = min(full, budget.data_batches or full)
    rates = {}
    for kind in ("unit", "dequantize"):
        gen = torch.Generator(device=images.device).manual_seed(0)
        it = iterate_batches(images, batch, gen, kind)  # first next() pays the shuffle

        def consume(it=it):
            for _, _x in zip(range(n_batches), it, strict=False):
                pass

        seconds, _ = timed(consume, device)
        rates[kind] = n_batches / seconds
        rows.append(Row(**base, metric=f"harness_{kind}_batches_per_s", value=rates[kind], unit="batches/s",
                        batch=batch, note=f"bench.data.iterate_batches, {n_batches} batches, {kind} preprocessing, "
                        f"resident {images.device.type} uint8 tensor"))
    spec = data.spec
    with tempfile.TemporaryDirectory(prefix="pie-perf-data-") as tmp:
        root = torchvision_root(ctx, Path(tmp), spec.name)
        cls = getattr(torchvision.datasets, spec.torchvision_class)
        t_build, dataset = timed(lambda: cls(str(root), train=True, download=False, transform=ToTensor()),
                                 torch.device("cpu"))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
        m = min(len(loader), budget.loader_batches)

        def consume_loader():
            for _, (x, _y) in zip(range(m), loader, strict=False):
                x.to(device)

        seconds, _ = timed(consume_loader, device)
    baseline = m / seconds
    rows += [
        Row(**base, metric="dataloader_batches_per_s", value=baseline, unit="batches/s", batch=batch,
            note=f"DataLoader(torchvision {spec.torchvision_class}, ToTensor, shuffle=True, num_workers=0), {m} batches"
            + (", copied to the GPU" if device.type == "cuda" else "") + f"; dataset build {t_build:.2f} s excluded"),
        Row(**base, metric="data_path_ratio", value=rates["unit"] / baseline, unit="x", batch=batch,
            note="harness unit-preprocessed batches/s / DataLoader batches/s (like for like: both give k/255)"),
        Row(**base, metric="data_path_ratio_dequantize", value=rates["dequantize"] / baseline, unit="x",
            batch=batch, note="harness dequantised batches/s / DataLoader batches/s"),
    ]
    log(f"  data: harness {rates['unit']:.0f} batches/s (dequantize {rates['dequantize']:.0f}), "
        f"DataLoader {baseline:.1f} batches/s, ratio {rates['unit'] / baseline:.1f}x")
    return rows
