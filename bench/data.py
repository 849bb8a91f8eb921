"""The only MNIST pipeline: verified files → one in-memory uint8 tensor → indexed batches.

``python -m bench.data [--data-root D]`` checks the files (fetching them first where allowed)
and prints their folder; ``./run_all.sh test`` runs it once before the offline tests.

Root resolution: ``--data-root``, else ``$MNIST_ROOT``, else ``./data``. The four
standard ``.gz`` files may lie flat in the root or in torchvision's ``MNIST/raw/``
layout; each is verified against the md5 torchvision lists. Missing files are
downloaded through torchvision unless ``$PIE_BENCH_OFFLINE=1`` (tests set it) or the
download fails; then a :class:`UserError` names the files and how to provide them.

Split: the standard 60k/10k train/test split. ``val_size`` training images are held
out by a fixed permutation seeded with ``val_seed`` (independent of the run seed).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.errors import UserError

FILES = {  # name -> md5, as listed by torchvision.datasets.MNIST.resources
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def resolve_root(data_root: str | None) -> Path:
    return Path(data_root or os.environ.get("MNIST_ROOT") or "./data")


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / "MNIST" / "raw" / name):
        if candidate.is_file():
            return candidate
    return None


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _download(root: Path) -> None:
    """Fetch missing files through torchvision (into ``root/MNIST/raw``)."""
    import torchvision

    torchvision.datasets.MNIST(str(root), train=True, download=True)
    torchvision.datasets.MNIST(str(root), train=False, download=True)


def locate_files(root: Path) -> dict[str, Path]:
    """Return verified paths of the four files, downloading if allowed; else UserError."""
    paths = {name: _find(root, name) for name in FILES}
    missing = [n for n, p in paths.items() if p is None]
    if missing and os.environ.get("PIE_BENCH_OFFLINE") != "1":
        created = not root.exists()
        if created and not root.parent.is_dir():  # create the folder asked for, never its parents
            raise UserError(f"MNIST folder '{root}' does not exist, nor does its parent '{root.parent}'; "
                            "create it or pass another --data-root")
        try:
            if created:
                root.mkdir()
            _download(root)
        except Exception:  # any network or disk failure: fall through to the clear error
            if created:
                shutil.rmtree(root, ignore_errors=True)  # leave no half-made folder behind
        paths = {name: _find(root, name) for name in FILES}
        missing = [n for n, p in paths.items() if p is None]
    if missing:
        why = "offline (PIE_BENCH_OFFLINE=1)" if os.environ.get("PIE_BENCH_OFFLINE") == "1" else \
            "the download failed"
        raise UserError(
            f"MNIST file(s) {', '.join(missing)} not found in '{root}' (or '{root}/MNIST/raw') and {why}; "
            "put the four original .gz files in ./data or set MNIST_ROOT (or --data-root) to their folder, "
            "or run ./run_all.sh once with network"
        )
    for name, path in paths.items():
        if _md5(path) != FILES[name]:
            raise UserError(
                f"MNIST file '{path}' fails its md5 check (corrupt or truncated); "
                "replace it with the original file"
            )
    return paths


def _read_idx(path: Path, header: int, shape: tuple[int, ...]) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@dataclass
class MNISTData:
    """MNIST held in memory as uint8 tensors on one device. Images ``[N, 1, 28, 28]``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    checksum: str  # sha256 over the four files' md5s: keys caches (e.g. the classifier)

    def to(self, device: torch.device | str) -> MNISTData:
        fields = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return MNISTData(**fields)


def load_mnist(
    data_root: str | None = None,
    val_size: int = 5000,
    val_seed: int = 1234,
    device: torch.device | str = "cpu",
) -> MNISTData:
    """Verify, decode once and split MNIST; tensors live on ``device``."""
    root = resolve_root(data_root)
    paths = locate_files(root)
    train_x = _read_idx(paths["train-images-idx3-ubyte.gz"], 16, (60000, 1, 28, 28))
    train_y = _read_idx(paths["train-labels-idx1-ubyte.gz"], 8, (60000,))
    test_x = _read_idx(paths["t10k-images-idx3-ubyte.gz"], 16, (10000, 1, 28, 28))
    test_y = _read_idx(paths["t10k-labels-idx1-ubyte.gz"], 8, (10000,))
    if not 0 <= val_size < 60000:
        raise UserError(f"data.val_size must be in [0, 60000), got {val_size}")
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(val_seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    tx, ty = torch.from_numpy(train_x.copy()), torch.from_numpy(train_y.copy()).long()
    checksum = hashlib.sha256("".join(FILES[n] for n in sorted(FILES)).encode()).hexdigest()[:16]
    return MNISTData(
        train_images=tx[train_idx], train_labels=ty[train_idx],
        val_images=tx[val_idx], val_labels=ty[val_idx],
        test_images=torch.from_numpy(test_x.copy()), test_labels=torch.from_numpy(test_y.copy()).long(),
        checksum=checksum,
    ).to(device)


def preprocess(
    images: torch.Tensor, kind: str, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Map uint8 pixels ``k`` to model inputs.

    ``"unit"``: k / 255 in [0, 1] (autoencoders). ``"dequantize"``: (k + u) / 256 with
    u ~ U(0, 1) (density models; uniform dequantisation, Theis et al. 2016), so that a density on [0, 1]^D
    is proper.
    """
    x = images.to(dtype)
    if kind == "unit":
        return x / 255.0
    if kind == "dequantize":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)
        return (x + u) / 256.0
    raise ValueError(f"unknown preprocessing '{kind}'")


def iterate_batches(
    images: torch.Tensor, batch_size: int, generator: torch.Generator, kind: str,
    dtype: torch.dtype = torch.float32,
):
    """One shuffled epoch of preprocessed batches, by indexing the resident tensor.

    The last partial batch is dropped so every step sees ``batch_size`` images.
    """
    n = images.shape[0]
    perm = torch.randperm(n, generator=generator, device=generator.device)
    for start in range(0, n - batch_size + 1, batch_size):
        yield preprocess(images[perm[start:start + batch_size]], kind, generator, dtype)


def main(argv: list[str] | None = None) -> int:
    """Locate (and, unless offline, fetch) the four MNIST files; one line either way."""
    p = argparse.ArgumentParser(prog="python -m bench.data", description=main.__doc__)
    p.add_argument("--data-root", default=None, help="MNIST folder (else $MNIST_ROOT, else ./data)")
    args = p.parse_args(argv)
    try:
        paths = locate_files(resolve_root(args.data_root))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"MNIST: {Path(next(iter(paths.values()))).parent.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
