"""The harness's feature network: a small LeNet (LeCun et al. 1998, with batch norm), its training
recipe, and what identifies a trained one (:func:`weights_hash`). Which weights are used, shipped
or trained and cached, is :mod:`bench.classifier`'s business.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import struct
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors
from torch import nn

from bench.data import ImageData

FEATURE_DIM = 128


@dataclass(frozen=True)
class ClassifierRecipe:
    """Training settings (hashed into the cache key)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3  # Adam; cosine decay to 0 over all steps
    seed: int = 0


class LeNet(nn.Module):
    """conv5(16)-BN-ReLU-pool, conv5(32)-BN-ReLU-pool, fc(128), ReLU-fc(classes). Input ``[B, C, H, W]`` (the
    dataset's ``image_shape``) in [0, 1], normalised inside the net by the dataset's pixel mean and std
    (``bench.datasets``).

    Features are the 128 penultimate activations *before* their ReLU: after it, units
    that never fire on digits are constant 0 and make the feature covariance singular.
    """

    def __init__(self, mean: float, std: float, n_classes: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        c, h, w = image_shape
        side = [((s - 4) // 2 - 4) // 2 for s in (h, w)]  # each conv5 takes 4, each pool halves: 28 -> 4
        self.body = nn.Sequential(
            nn.Conv2d(c, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * side[0] * side[1], FEATURE_DIM),
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
    train_seconds: float  # 0 when loaded from the cache or shipped
    source: str = "trained"  # "shipped bench/extractors/<file>", or "trained" (the cache)

    def _batched(self, fn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        param = next(self.net.parameters())
        out = [fn(images[i:i + batch_size].to(param.device, param.dtype)) for i in range(0, len(images), batch_size)]
        return torch.cat(out)

    @torch.inference_mode()
    def features(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """``[N, C, H, W]`` in [0, 1] -> penultimate features ``[N, 128]`` float32."""
        return self._batched(self.net.features, images, batch_size)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        return self._batched(self.net, images, batch_size)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def weights_hash(net: nn.Module) -> str:
    """12 hex digits of a sha256 over the state dict's tensors in order: the extractor id.

    It hashes the numbers, not a file, so the same weights get the same id however they are
    stored (the ids in the committed metric notes predate the shipped files).
    """
    parts = [t.detach().cpu().contiguous().numpy().tobytes() for t in net.state_dict().values()]
    return digest(*parts)[:12]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``n`` intra-op CPU threads inside the block (None: unchanged), restored after it."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_classifier(data: ImageData, recipe: ClassifierRecipe, threads: int | None = 1) -> LeNet:
    """Adam + cosine decay on ``data.train_images``; seeded, does not touch the global RNG.

    On CPU the bits of the result depend on the thread count (how reductions are split) and on
    the CPU's kernels; ``threads`` fixes the first (None: the process's setting; the shipped weights: 1).
    """
    device = data.train_images.device
    with torch_threads(threads if device.type == "cpu" else None):
        return _train(data, recipe)


def _train(data: ImageData, recipe: ClassifierRecipe) -> LeNet:
    device = data.train_images.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = new_lenet(data).to(device)
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
            loss = F.cross_entropy(net(to_unit(data.train_images[idx])), data.train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def new_lenet(data: ImageData) -> LeNet:
    spec = data.spec
    return LeNet(spec.mean, spec.std, spec.n_classes, spec.image_shape)


@torch.no_grad()
def test_accuracy(net: LeNet, data: ImageData, batch_size: int = 1000) -> float:
    """Accuracy on all of ``data.test_images``."""
    param = next(net.parameters())
    logits = torch.cat([net(to_unit(data.test_images[i:i + batch_size]).to(param.device))
                        for i in range(0, len(data.test_images), batch_size)])
    return float((logits.argmax(1) == data.test_labels.to(param.device)).double().mean())


def weights_bytes(net: LeNet, metadata: dict[str, str]) -> bytes:
    """The state dict as safetensors bytes (tensors only, never pickle), with string metadata.

    The metadata is one JSON string under one key: safetensors writes a metadata map in hash
    order, which differs between processes, and the file's sha256 must not.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return save_safetensors(tensors, {"pie_bench": json.dumps(metadata, sort_keys=True)})


def safetensors_metadata(raw: bytes) -> dict[str, str]:
    """What :func:`weights_bytes` stored: the header is 8 bytes of length, then JSON."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(json.loads(raw[8:8 + n]).get("__metadata__", {}).get("pie_bench", "{}"))

