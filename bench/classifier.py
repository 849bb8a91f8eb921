"""The harness's own classifier: features for FD/KID/precision-recall (Heusel et al. 2017; Bińkowski et al. 2018).

Inception weights cannot be downloaded, so a small LeNet-style net (LeCun et al. 1998,
with batch norm) is trained here with a fixed seed, once per dataset, and cached:
in this process, and on disk under ``$PIE_BENCH_CACHE`` (else ``~/.cache/pie-bench``).
The cache key hashes the data checksum, the exact training images, this file's source
and the training settings, so editing the recipe retrains. The *extractor hash* written
next to every feature metric is a hash of the trained weights themselves.

Public API::

    extractor = get_classifier(data, epochs=cfg.classifier_epochs)
    feats = extractor.features(images01)  # [N, 1, 28, 28] in [0, 1] -> [N, 128] (pre-ReLU fc)
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.data import ImageData
from bench.results import atomic_write_bytes, locked

CACHE_ENV = "PIE_BENCH_CACHE"
FEATURE_DIM = 128


@dataclass(frozen=True)
class ClassifierRecipe:
    """Training settings (hashed into the cache key)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3  # Adam; cosine decay to 0 over all steps
    seed: int = 0


class LeNet(nn.Module):
    """conv5(16)-BN-ReLU-pool, conv5(32)-BN-ReLU-pool, fc(128), ReLU-fc(classes). Input ``[B, 1, 28, 28]`` in [0, 1],
    normalised inside the net by the dataset's pixel mean and std (``bench.datasets``).

    Features are the 128 penultimate activations *before* their ReLU: after it, units
    that never fire on digits are constant 0 and make the feature covariance singular.
    """

    def __init__(self, mean: float, std: float, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 24 -> 12
            nn.Conv2d(16, 32, 5, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 12 -> 8 -> 4
            nn.Flatten(), nn.Linear(32 * 4 * 4, FEATURE_DIM),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[B, 128]`` (before the ReLU)."""
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class FeatureExtractor:
    """A trained :class:`LeNet` in eval mode plus what identifies it."""

    net: LeNet
    weights_hash: str  # sha256 of the trained weights, 12 hex digits: the "extractor hash"
    cache_key: str
    test_accuracy: float  # on all of data.test_images
    n_test: int
    train_seconds: float  # 0 when loaded from the cache

    def _batched(self, fn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        param = next(self.net.parameters())
        out = [fn(images[i:i + batch_size].to(param.device, param.dtype)) for i in range(0, len(images), batch_size)]
        return torch.cat(out)

    @torch.inference_mode()
    def features(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """``[N, 1, 28, 28]`` in [0, 1] -> penultimate features ``[N, 128]`` float32."""
        return self._batched(self.net.features, images, batch_size)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        return self._batched(self.net, images, batch_size)


_LOADED: dict[tuple[str, str], FeatureExtractor] = {}  # (cache key, device) -> extractor


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pie-bench")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def cache_key(data: ImageData, recipe: ClassifierRecipe) -> str:
    """Data checksum + exact training images/labels + this file's source + the recipe."""
    images = data.train_images.cpu().numpy()
    labels = data.train_labels.cpu().numpy()
    return _digest(
        data.checksum.encode(), images.tobytes(), labels.tobytes(), Path(__file__).read_bytes(),
        repr(sorted(asdict(recipe).items())).encode(),
    )[:16]


def weights_hash(net: nn.Module) -> str:
    parts = [t.detach().cpu().contiguous().numpy().tobytes() for t in net.state_dict().values()]
    return _digest(*parts)[:12]


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def train_classifier(data: ImageData, recipe: ClassifierRecipe) -> LeNet:
    """Adam + cosine decay on ``data.train_images``; seeded, does not touch the global RNG."""
    device = data.train_images.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = _new_lenet(data).to(device)
    gen = torch.Generator(device=device).manual_seed(recipe.seed)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    n = data.train_images.shape[0]
    bs = min(recipe.batch_size, n)
    steps_per_epoch = n // bs
    total = max(1, recipe.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    net.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(n, generator=gen, device=device)
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            loss = F.cross_entropy(net(_to_unit(data.train_images[idx])), data.train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def _new_lenet(data: ImageData) -> LeNet:
    spec = data.spec
    return LeNet(spec.mean, spec.std, spec.n_classes)


def _load(path: Path, data: ImageData, device: torch.device) -> dict | None:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        net = _new_lenet(data).to(device)
        net.load_state_dict(payload["state_dict"])
        payload["net"] = net.eval()
        return payload
    except Exception:  # missing, truncated or from an incompatible recipe: retrain
        return None


def get_classifier(
    data: ImageData, epochs: int = 3, cache_dir: str | Path | None = None, batch_size: int = 1000,
) -> FeatureExtractor:
    """The trained extractor for ``data``: from memory, else from disk, else trained and saved.

    Training happens under a file lock, so parallel runners train it once.
    """
    recipe = ClassifierRecipe(epochs=epochs)
    key = cache_key(data, recipe)
    device = data.train_images.device
    if (key, str(device)) in _LOADED:
        return _LOADED[(key, str(device))]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lenet-{data.dataset}-{data.checksum[:8]}-{key}.pt"
    # Parameters built (or trained) in an inference-mode caller would be inference tensors.
    with torch.inference_mode(False), torch.enable_grad(), locked(path):
        payload = _load(path, data, device) if path.is_file() else None
        seconds = 0.0
        if payload is None:
            t0 = time.perf_counter()
            net = train_classifier(data, recipe)
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                logits = torch.cat([net(_to_unit(data.test_images[i:i + batch_size]))
                                    for i in range(0, len(data.test_images), batch_size)])
            acc = float((logits.argmax(1) == data.test_labels).double().mean())
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
    _LOADED[(key, str(device))] = extractor
    return extractor

