"""The only data pipeline: verified files → one in-memory uint8 tensor → indexed batches.

The dataset (``data.dataset``: MNIST or Fashion-MNIST) is a row of ``bench.datasets.DATASETS``.
``python -m bench.data [--dataset NAME] [--data-root D]`` checks the files (fetching them first
where allowed) and prints their folder; ``./run_all.sh test`` runs it once before the offline tests.

Root resolution (:meth:`bench.context.Context.root`): ``--data-root``, else the dataset's
variable (``$MNIST_ROOT``, ``$FASHION_MNIST_ROOT``), else its default folder (``./data``,
``./data/fashion-mnist``). The four standard ``.gz`` files may lie flat in the root or in torchvision's ``<Class>/raw/``
layout; each passes if the md5 of the ``.gz`` matches torchvision's list or, failing that, the
sha256 of its decompressed contents matches the table (recompressed copies); a verified file is
remembered in the context's memo, so the slower content check runs once. Missing files are
downloaded through torchvision unless the context is offline (``$PIE_BENCH_OFFLINE=1``; tests
set it) or the download fails; then a :class:`UserError` names the files and how to provide them.

Split: the standard 60k/10k train/test split. ``val_size`` training images are held
out by a fixed permutation seeded with ``val_seed`` (independent of the run seed).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.cli import Parser, user_errors_exit_2
from bench.context import Context, resolve
from bench.datasets import DATASETS, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, DatasetSpec, get_dataset
from bench.errors import UserError


def _find(root: Path, name: str, spec: DatasetSpec) -> Path | None:
    for candidate in (root / name, root / spec.torchvision_class / "raw" / name):
        if candidate.is_file():
            return candidate
    return None


def _verified(path: Path, name: str, spec: DatasetSpec, seen: set) -> bool:
    """md5 of the .gz (fast), else sha256 of its decompressed contents; remembered in ``seen``."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, spec.name)
    if key in seen:
        return True
    raw = path.read_bytes()
    ok = hashlib.md5(raw).hexdigest() == spec.gz_md5[name]
    if not ok:
        try:
            ok = hashlib.sha256(gzip.decompress(raw)).hexdigest() == spec.content_sha256[name]
        except (OSError, EOFError, gzip.BadGzipFile):  # truncated or not gzip at all
            ok = False
    if ok:
        seen.add(key)
    return ok


def _download(root: Path, spec: DatasetSpec) -> None:
    """Fetch missing files through torchvision (into ``root/<Class>/raw``)."""
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def locate_files(root: Path, dataset: str = "mnist", ctx: Context | None = None) -> dict[str, Path]:
    """Return verified paths of the dataset's four files, downloading unless ``ctx.offline``; else UserError.

    ``ctx`` (default: :class:`~bench.context.Context`'s defaults) says whether to download and
    remembers the files verified."""
    ctx = ctx or Context()
    spec = get_dataset(dataset)
    title, raw_dir = spec.title, f"{root}/{spec.torchvision_class}/raw"
    paths = {name: _find(root, name, spec) for name in spec.files}
    missing = [n for n, p in paths.items() if p is None]
    if missing and not ctx.offline:
        created = not root.exists()
        if created and not root.parent.is_dir():  # create the folder asked for, never its parents
            raise UserError(f"{title} folder '{root}' does not exist, nor does its parent '{root.parent}'; "
                            "create it or pass another --data-root")
        try:
            if created:
                root.mkdir()
            _download(root, spec)
        except Exception:  # any network or disk failure: fall through to the clear error
            if created:
                shutil.rmtree(root, ignore_errors=True)  # leave no half-made folder behind
        paths = {name: _find(root, name, spec) for name in spec.files}
        missing = [n for n, p in paths.items() if p is None]
    if missing:
        why = "offline (PIE_BENCH_OFFLINE=1)" if ctx.offline else "the download failed"
        raise UserError(
            f"{title} file(s) {', '.join(missing)} not found in '{root}' (or '{raw_dir}') and {why}; "
            f"put the four original .gz files in {spec.default_root} or set {spec.root_env} (or --data-root) "
            "to their folder, or run ./run_all.sh once with network"
        )
    for name, path in paths.items():
        if not _verified(path, name, spec, ctx.memo.verified):
            raise UserError(
                f"{title} file '{path}' fails its checksum (neither the .gz md5 nor the sha256 of its contents "
                "matches: corrupt or truncated); replace it with the original file"
            )
    return paths


def _read_idx(path: Path, header: int, shape: tuple[int, ...]) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@dataclass
class ImageData:
    """A dataset held in memory as uint8 tensors on one device. Images ``[N, C, H, W]`` (``spec.image_shape``)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    checksum: str  # sha256 over the four files' published md5s: keys caches (e.g. the classifier)
    dataset: str = "mnist"  # its row of bench.datasets.DATASETS

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS[self.dataset]

    def to(self, device: torch.device | str) -> ImageData:
        fields = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return ImageData(**fields)


def load_data(
    data_root: str | None = None,
    val_size: int = 5000,
    val_seed: int = 1234,
    device: torch.device | str = "cpu",
    dataset: str = "mnist",
    ctx: Context | None = None,
) -> ImageData:
    """Verify, decode once and split ``dataset``; tensors live on ``device``.

    Its files are in ``data_root``, else in ``ctx.root(dataset)`` (flag, variable, default folder).
    """
    spec = get_dataset(dataset)
    ctx = ctx or Context()
    paths = locate_files(Path(data_root) if data_root else ctx.root(dataset), dataset, ctx)
    n, m = spec.n_train, spec.n_test
    train_x = _read_idx(paths[TRAIN_IMAGES], 16, (n, *spec.image_shape))
    train_y = _read_idx(paths[TRAIN_LABELS], 8, (n,))
    test_x = _read_idx(paths[TEST_IMAGES], 16, (m, *spec.image_shape))
    test_y = _read_idx(paths[TEST_LABELS], 8, (m,))
    if not 0 <= val_size < n:
        raise UserError(f"data.val_size must be in [0, {n}), got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(val_seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    tx, ty = torch.from_numpy(train_x.copy()), torch.from_numpy(train_y.copy()).long()
    # The published md5s identify the contents (verified above, by md5 or by content sha256).
    checksum = hashlib.sha256("".join(spec.gz_md5[f] for f in sorted(spec.gz_md5)).encode()).hexdigest()[:16]
    return ImageData(
        train_images=tx[train_idx], train_labels=ty[train_idx],
        val_images=tx[val_idx], val_labels=ty[val_idx],
        test_images=torch.from_numpy(test_x.copy()), test_labels=torch.from_numpy(test_y.copy()).long(),
        checksum=checksum, dataset=dataset,
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


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    """Locate (and, unless offline, fetch) a dataset's four files; one line either way."""
    p = Parser(prog="python -m bench.data", description=main.__doc__)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)} (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="folder of the files (else $MNIST_ROOT / $FASHION_MNIST_ROOT, else ./data[/fashion-mnist])")
    args = p.parse_args(argv)
    ctx = resolve(data_root=args.data_root)
    paths = locate_files(ctx.root(args.dataset), args.dataset, ctx)
    print(f"{get_dataset(args.dataset).title}: {Path(next(iter(paths.values()))).parent.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
