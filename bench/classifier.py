"""The harness's own classifier: features for FD/KID/precision-recall (Heusel et al. 2017; Bińkowski et al. 2018).

Inception weights cannot be downloaded, so a small LeNet-style net (LeCun et al. 1998, with
batch norm) is the feature extractor. Its weights are **shipped** with the package, one
safetensors file per dataset in ``bench/extractors/`` (pinned by the file's sha256 in
:data:`SHIPPED`), as pytorch-fid and torch-fidelity ship theirs: every machine, thread count
and command computes features with the same network. The recipe that made them stays a
command that retrains them (bit for bit at one thread on the same CPU kernels; another CPU
family gives other bits, see docs/first-run.md)::

    python -m bench.classifier --train --dataset mnist --out lenet-mnist.safetensors
    python -m bench.classifier              # list the shipped files and verify their sha256

A configuration asking for another recipe (``eval.classifier_epochs`` other than 3) or a
dataset without shipped weights trains one at one thread and caches it in the context's cache
folder (``$PIE_BENCH_CACHE``, else ``~/.cache/pie-bench``: :mod:`bench.context`), keyed by the
data, the source of this file and of :mod:`bench.lenet` (the net and its recipe) and the recipe.
Extractors loaded once are remembered in the context's memo (``ctx.memo``), not in this module.
The *extractor id* written next to every feature metric is a hash of the weights'
tensors (:func:`weights_hash`), whatever file they came from.

Public API::

    extractor = get_classifier(data, epochs=cfg.classifier_epochs, ctx=ctx)
    feats = extractor.features(images01)  # [N, 1, 28, 28] in [0, 1] -> [N, 128] (pre-ReLU fc)
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors

from bench import lenet
from bench.cli import Parser, user_errors_exit_2
from bench.context import Context, resolve
from bench.data import ImageData, load_data
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.lenet import (  # noqa: F401 (FEATURE_DIM, LeNet, torch_threads: the public API's names)
    FEATURE_DIM,
    ClassifierRecipe,
    FeatureExtractor,
    LeNet,
    digest,
    new_lenet,
    safetensors_metadata,
    test_accuracy,
    torch_threads,
    train_classifier,
    weights_bytes,
    weights_hash,
)
from bench.results import atomic_write_bytes, locked

EXTRACTOR_DIR = Path(__file__).with_name("extractors")


# The split the shipped weights were trained on: the training images left after the default
# presets' validation split (configs/default.yaml, long.yaml: 5000 images, seed 1234). The test
# images are never seen, whatever split a run uses.
SHIPPED_VAL_SIZE, SHIPPED_VAL_SEED = 5000, 1234
SHIPPED_THREADS = 1  # CPU threads of the training that made them (the bits depend on it)


@dataclass(frozen=True)
class ShippedWeights:
    """One shipped extractor: ``bench/extractors/<file>``, pinned by the sha256 of the file."""

    file: str
    sha256: str
    weights_id: str  # weights_hash() of its tensors: the id in every metric note

    @property
    def path(self) -> Path:
        return EXTRACTOR_DIR / self.file


# dataset -> its shipped weights (``ClassifierRecipe()`` on the split above at one thread;
# ``python -m bench.classifier --train`` remakes a file, docs/first-run.md says where they came from).
SHIPPED: dict[str, ShippedWeights] = {
    "mnist": ShippedWeights(
        "lenet-mnist.safetensors", "9c6f538573abe54ae448614c268b4ac9cc0e118f6e839cad03f5ad69a5c93a33", "8a3eb5886f64"),
    "fashion-mnist": ShippedWeights(
        "lenet-fashion-mnist.safetensors", "ea75bcd6f0eee20ace40840eb1015870bb61dfcf16e45126fdfbee343c3d3366",
        "34f81690f40a"),
}


def cache_key(data: ImageData, recipe: ClassifierRecipe) -> str:
    """Data checksum + exact training images/labels + the source of this file and bench.lenet + the recipe."""
    images = data.train_images.cpu().numpy()
    labels = data.train_labels.cpu().numpy()
    return digest(
        data.checksum.encode(), images.tobytes(), labels.tobytes(), Path(__file__).read_bytes(),
        Path(lenet.__file__).read_bytes(), repr(sorted(asdict(recipe).items())).encode(),
    )[:16]


def shipped_extractor(data: ImageData, batch_size: int = 1000, ctx: Context | None = None) -> FeatureExtractor:
    """The shipped weights for ``data.dataset``, checked against their sha256 and id (once per ``ctx``)."""
    loaded = (ctx or Context()).memo.extractors
    ship = SHIPPED[data.dataset]
    device = data.test_images.device
    key = f"shipped-{ship.sha256[:16]}"
    if (key, str(device)) in loaded:
        return loaded[(key, str(device))]
    try:
        raw = ship.path.read_bytes()
    except OSError as e:
        raise UserError(f"the shipped feature extractor '{ship.path}' cannot be read ({e.strerror}); "
                        "reinstall the package") from None
    if hashlib.sha256(raw).hexdigest() != ship.sha256:
        raise UserError(f"the shipped feature extractor '{ship.path}' fails its sha256 (bench/classifier.py SHIPPED): "
                        "corrupt or replaced; restore it (git checkout, or reinstall the package)")
    with torch.inference_mode(False):
        net = new_lenet(data)
        net.load_state_dict(load_safetensors(raw))
        net = net.to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
    ident = weights_hash(net)
    if ident != ship.weights_id:  # the sha256 matched, so this is a wrong entry in SHIPPED
        raise RuntimeError(f"{ship.file}: weights id {ident}, SHIPPED says {ship.weights_id}")
    extractor = FeatureExtractor(
        net=net, weights_hash=ident, cache_key=key, test_accuracy=test_accuracy(net, data, batch_size),
        n_test=int(len(data.test_images)), train_seconds=0.0, source=f"shipped bench/extractors/{ship.file}",
    )
    loaded[(key, str(device))] = extractor
    return extractor


def _load(path: Path, data: ImageData, device: torch.device) -> dict | None:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        net = new_lenet(data).to(device)
        net.load_state_dict(payload["state_dict"])
        payload["net"] = net.eval()
        return payload
    except Exception:  # missing, truncated or from an incompatible recipe: retrain
        return None


def cache_path(data: ImageData, recipe: ClassifierRecipe, cache_dir: str | Path) -> Path:
    """Where :func:`trained_extractor` keeps the weights trained for ``data`` and ``recipe`` in ``cache_dir``."""
    return Path(cache_dir) / f"lenet-{data.dataset}-{data.checksum[:8]}-{cache_key(data, recipe)}.pt"


def get_classifier(
    data: ImageData, epochs: int = 3, cache_dir: str | Path | None = None, batch_size: int = 1000,
    ctx: Context | None = None,
) -> FeatureExtractor:
    """The feature extractor for ``data``: the shipped weights of its dataset for the default
    recipe (whatever the run's split, threads or cache hold), else :func:`trained_extractor`.

    ``ctx`` gives the cache folder (unless ``cache_dir`` names one) and remembers what was loaded;
    without one, its defaults and nothing remembered."""
    if epochs == ClassifierRecipe().epochs and data.dataset in SHIPPED:
        return shipped_extractor(data, batch_size, ctx)
    return trained_extractor(data, epochs, cache_dir, batch_size, ctx)


def trained_extractor(
    data: ImageData, epochs: int = 3, cache_dir: str | Path | None = None, batch_size: int = 1000,
    ctx: Context | None = None,
) -> FeatureExtractor:
    """A LeNet trained on ``data.train_images`` at one thread: from ``ctx``'s memo, else from disk
    (``cache_dir``, else ``ctx.cache_folder``), else trained and saved. Training happens under a file
    lock, so parallel runners train it once.
    """
    ctx = ctx or Context()
    loaded = ctx.memo.extractors
    recipe = ClassifierRecipe(epochs=epochs)
    key = cache_key(data, recipe)
    device = data.train_images.device
    if (key, str(device)) in loaded:
        return loaded[(key, str(device))]
    path = cache_path(data, recipe, cache_dir if cache_dir is not None else ctx.cache_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Parameters built (or trained) in an inference-mode caller would be inference tensors.
    with torch.inference_mode(False), torch.enable_grad(), locked(path):
        payload = _load(path, data, device) if path.is_file() else None
        seconds = 0.0
        if payload is None:
            t0 = time.perf_counter()
            net = train_classifier(data, recipe)
            seconds = time.perf_counter() - t0
            acc = test_accuracy(net, data, batch_size)
            payload = {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "test_accuracy": acc,
                       "n_test": int(len(data.test_images)), "train_seconds": seconds, "cache_key": key}
            buf = io.BytesIO()
            torch.save(payload, buf)
            atomic_write_bytes(path, buf.getvalue())
            payload["net"] = net
        net = payload["net"]
        for p in net.parameters():
            p.requires_grad_(False)
    extractor = FeatureExtractor(
        net=net, weights_hash=weights_hash(net), cache_key=key, test_accuracy=float(payload["test_accuracy"]),
        n_test=int(payload["n_test"]), train_seconds=seconds,
    )
    loaded[(key, str(device))] = extractor
    return extractor


def train_shipped_recipe(dataset: str, data_root: str | None = None, threads: int = SHIPPED_THREADS,
                         train_subset: int = 0, ctx: Context | None = None) -> tuple[bytes, dict[str, str]]:
    """The recipe of the shipped weights, run now: safetensors bytes and their metadata.

    ``train_subset`` > 0 trains on the first N training images only (tests; not the shipped recipe).
    """
    data = load_data(data_root, SHIPPED_VAL_SIZE, SHIPPED_VAL_SEED, "cpu", dataset, ctx)
    if train_subset > 0:
        data = ImageData(**{**vars(data), "train_images": data.train_images[:train_subset],
                            "train_labels": data.train_labels[:train_subset]})
    recipe = ClassifierRecipe()
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        net = train_classifier(data, recipe, threads)
    seconds = time.perf_counter() - t0
    meta = {
        "dataset": dataset, "weights_id": weights_hash(net), "test_accuracy": f"{test_accuracy(net, data):.4f}",
        "recipe": json.dumps(asdict(recipe), sort_keys=True), "val_size": str(SHIPPED_VAL_SIZE),
        "val_seed": str(SHIPPED_VAL_SEED), "n_train": str(len(data.train_images)), "threads": str(threads),
        "torch_version": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    return weights_bytes(net, meta), {**meta, "train_seconds": f"{seconds:.1f}"}  # time: printed, not stored


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    """List and verify the shipped feature extractors, or (--train) run their recipe into a file."""
    p = Parser(prog="python -m bench.classifier", description=main.__doc__)
    p.add_argument("--train", action="store_true", help="train the shipped recipe and write --out")
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)} (default: %(default)s)")
    p.add_argument("--out", default=None, help="safetensors file to write (with --train)")
    p.add_argument("--threads", type=int, default=SHIPPED_THREADS,
                   help="CPU threads while training (default %(default)s: the shipped files' setting)")
    p.add_argument("--data-root", default=None, help="folder of the dataset's files (else its variable, else ./data)")
    args = p.parse_args(argv)
    if not args.train:
        for name, ship in SHIPPED.items():
            ok = ship.path.is_file() and hashlib.sha256(ship.path.read_bytes()).hexdigest() == ship.sha256
            meta = safetensors_metadata(ship.path.read_bytes()) if ok else {}
            print(f"{name}: {ship.path} sha256 {ship.sha256[:16]}… {'ok' if ok else 'MISSING OR CHANGED'}; "
                  f"extractor id {ship.weights_id}; test accuracy {meta.get('test_accuracy', '?')}; "
                  f"trained at {meta.get('threads', '?')} thread(s), torch {meta.get('torch_version', '?')}, "
                  f"CPU kernels {meta.get('cpu_capability', '?')}")
        return 0
    if args.dataset not in DATASETS:
        raise UserError(f"unknown dataset '{args.dataset}'; valid: {', '.join(DATASETS)}")
    if not args.out:
        raise UserError("--train needs --out FILE (the shipped files are bench/extractors/lenet-<dataset>.safetensors)")
    if args.threads < 1:
        raise UserError(f"--threads must be a positive integer, got {args.threads}")
    raw, meta = train_shipped_recipe(args.dataset, None, args.threads, ctx=resolve(data_root=args.data_root))
    atomic_write_bytes(Path(args.out), raw)
    ship = SHIPPED.get(args.dataset)
    # The weights decide the features; the file's bytes also hold where they were trained.
    same = ship is not None and meta["weights_id"] == ship.weights_id
    other = f"other weights than the shipped file (id {ship.weights_id if ship else 'none'})"
    print(f"wrote {args.out}: sha256 {hashlib.sha256(raw).hexdigest()}, extractor id {meta['weights_id']}, test "
          f"accuracy {meta['test_accuracy']}, {meta['train_seconds']} s at {args.threads} thread(s), CPU kernels "
          f"{meta['cpu_capability']}; " + ("the same weights as the shipped file" if same else other))
    return 0


if __name__ == "__main__":
    sys.exit(main())
