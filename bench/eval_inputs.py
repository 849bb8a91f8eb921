"""The inputs of the metric table (:mod:`bench.metrics.table`): one :class:`Evaluation` computes
each on first use and keeps it, so each shared input (test codes, samples at each temperature,
their LeNet features, ...) is computed once whatever number of metrics use it. Also the seeded
helpers that produce them (test inputs, samples) and the timing phases.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import threadpoolctl
import torch

from bench import metrics as M
from bench.classifier import torch_threads
from bench.config import EvalConfig
from bench.data import ImageData, preprocess
from bench.metrics import table as T
from models.contract import GenerativeEncoder

# Offsets of the run seed for each source of evaluation randomness (independent streams).
TEST_NOISE_OFFSET = 104729  # dequantisation noise of the test images
PROBE_NOISE_OFFSET = 7919  # dequantisation noise of the probe's training images
SAMPLE_OFFSET = 2750159  # z of the generated samples (the same z at both temperatures)
LOG_PROB_OFFSET = 15485863  # noise drawn inside log_prob (IWAE)
RNG_BLOCK = 16  # CPU randn fills 16 values at a time: chunks of a multiple of 16 draw one stream


@dataclass
class MetricRow:
    split: str
    metric: str
    value: float
    note: str = ""


@dataclass
class RealStats:
    """Features of the real test images and what the metrics derive from them."""

    feats: torch.Tensor  # [N, F]
    mu: np.ndarray
    sigma: np.ndarray
    radii: dict[int, torch.Tensor]  # k -> k-NN radii (squared)
    sharpness: float
    sharpness_std: float


@contextlib.contextmanager
def phase(timings: dict[str, float] | None, name: str, device: torch.device):
    """Add the seconds of the ``with`` body to ``timings[name]`` (nothing when ``timings`` is None).

    Names start with ``model:`` for calls into the model (fixed by the protocol's counts) or
    ``metric:`` for the harness's own maths; ``bench.perf`` reports the two sums.
    """
    if timings is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def batched(fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def _unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels k -> k / 255 in [0, 1]: the sharpness recipe's scale (Tolstikhin et al. 2018's code)."""
    return images.float() / 255.0


def _n_test(data: ImageData, cfg: EvalConfig) -> int:
    n = data.test_images.shape[0]
    return min(cfg.test_subset, n) if cfg.test_subset > 0 else n


def test_inputs(model, data: ImageData, cfg: EvalConfig, seed: int, dtype=torch.float32):
    """Test images as the model sees them (fixed dequantisation noise), and their labels."""
    n = _n_test(data, cfg)
    images, labels = data.test_images[:n], data.test_labels[:n]
    gen = torch.Generator(device=images.device).manual_seed(seed + TEST_NOISE_OFFSET)
    return preprocess(images, model.preprocessing, gen, dtype), labels


def generate(model, n: int, temperature: float, cfg: EvalConfig, seed: int) -> torch.Tensor:
    """``n`` samples in chunks, from a generator seeded with ``seed``; clamped to [0, 1], float32.

    The chunk is the batch size rounded down to a multiple of 16, so on CPU the chunks
    draw the same normal stream as one big call and the samples do not depend on it.
    """
    param = next(model.parameters())
    gen = torch.Generator(device=param.device).manual_seed(seed)
    chunk = max(RNG_BLOCK, cfg.batch_size // RNG_BLOCK * RNG_BLOCK)
    out = [model.sample(min(chunk, n - i), temperature, generator=gen).float().clamp(0.0, 1.0)
           for i in range(0, n, chunk)]
    return torch.cat(out)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """One torch and one BLAS thread on CPU for the feature metrics, so that FD, KID and
    precision/recall do not depend on the machine's thread count: KID's float64 sums, split
    over 2 threads, differ from 1 thread in the last digits (measured). Runs already use
    one thread each (``./run_all.sh``), so their numbers do not change."""
    if device.type != "cpu":
        yield
        return
    with torch_threads(1), threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


# Computed at one CPU thread (one_cpu_thread): the LeNet features and what is derived from them.
ONE_THREAD = {"features", "feature_stats", "precision_recall", "confidence"}


class Evaluation:
    """One evaluation's inputs, each computed once on first use (:data:`INPUTS`), and its facts;
    ``evaluator`` (a :class:`bench.evaluate.Evaluator`) gives the classifier and the real statistics.

    ``values`` may be preset (the real-data row puts the validation images in ``("samples", "val")``).
    """

    def __init__(self, evaluator, data: ImageData, cfg: EvalConfig, model=None, seed: int = 0,
                 timings: dict[str, float] | None = None, device: torch.device | None = None,
                 one_thread: bool = True):
        self.evaluator, self.data, self.cfg, self.model, self.seed, self.timings = (
            evaluator, data, cfg, model, seed, timings)
        self.device = device if device is not None else next(model.parameters()).device
        self.values: dict[Any, Any] = {}
        self.one_thread = one_thread  # the feature metrics at one CPU thread (one_cpu_thread)
        self.set_names = {"t1": "generated", "t2": f"generated at T = {cfg.second_temperature_std():.4g}",
                          "val": "validation"}

    def get(self, name: str, at: str = "t1"):
        key = (name, at) if name in PER_SET else name
        if key not in self.values:
            if name not in INPUTS:
                raise KeyError(f"no evaluation input {name!r} (bench.eval_inputs.INPUTS)")
            self.values[key] = INPUTS[name](self, at)
        return self.values[key]

    def threads(self, names=("features",)):
        """one_cpu_thread when any of ``names`` is computed from the LeNet features (ONE_THREAD)."""
        one = self.one_thread and ONE_THREAD.intersection(names)
        return one_cpu_thread(self.device) if one else contextlib.nullcontext()

    def timed(self, name: str):
        return phase(self.timings, name, self.device)

    def facts(self, at: str) -> dict[str, Any]:
        """The fields of the notes' templates (bench.metrics.table.FACTS)."""
        cfg, real = self.cfg, self.get("real")
        n_test = _n_test(self.data, cfg)
        samples = self.values.get(("samples", at))
        model = self.model
        return {"cfg": cfg, "model": model, "extractor": self.get("extractor"), "real": real, "n": cfg.n_samples,
                "n_test": n_test, "t2": cfg.second_temperature_std(),
                "preprocessing": getattr(model, "preprocessing", ""),
                "n_probe": min(cfg.probe_train_size, len(self.data.train_images)),
                "n_diag": min(cfg.batch_size, n_test), "n_bpd": _n_bpd(cfg, n_test), "corner": M.CORNER,
                "recipe": T.RECIPE, "raw": T.RAW, "set_name": self.set_names.get(at, at),
                "n_set": len(samples) if samples is not None else 0, "n_real": len(real.feats)}

    def value(self, metric: T.Metric, at: str | None = None) -> tuple[Any, dict[str, Any]]:
        """The value of one table entry and its extra note fields (``at`` overrides the entry's set)."""
        at = at or metric.at
        with self.threads(metric.needs):
            args = {k: self.get(k, at) for k in metric.needs}
            with self.timed(metric.phase or f"metric: {metric.name}"):
                return T.split_value(metric.fn(**args))

    def row(self, metric: T.Metric, at: str | None = None) -> list[MetricRow]:
        """The rows of one table entry (``at`` overrides the entry's set of samples)."""
        at = at or metric.at
        value, fields = self.value(metric, at)
        note = T.note(metric, self.facts(at), fields)
        if metric.expands:
            return [MetricRow("test", metric.name + str(k), v, note) for k, v in value.items()]
        return [MetricRow("test", metric.name, value, note)]


def _n_bpd(cfg: EvalConfig, n_test: int) -> int:
    return min(cfg.bpd_subset, n_test) if cfg.bpd_subset > 0 else n_test


def _test_inputs(ev: Evaluation, at: str):
    x, labels = test_inputs(ev.model, ev.data, ev.cfg, ev.seed, next(ev.model.parameters()).dtype)
    if ev.cfg.channels_last:  # faster convolutions (oneDNN / cuDNN); values move at the 1e-7 level
        ev.model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return x, labels


def _codes(ev: Evaluation, at: str):
    x = ev.get("x")
    with ev.timed("model: encode test images"):
        return batched(ev.model.encode, x, ev.cfg.batch_size)


def _recon(ev: Evaluation, at: str):
    # The test set is encoded once: its codes serve the probe, the interpolations and, when the
    # model keeps the contract's reconstruct = decode(encode(x)), the reconstructions too.
    x, model, bs = ev.get("x"), ev.model, ev.cfg.batch_size
    z = ev.get("codes") if type(model).reconstruct is GenerativeEncoder.reconstruct else None
    with ev.timed("model: reconstruct test images"):
        return batched(model.decode, z, bs) if z is not None else batched(model.reconstruct, x, bs)


def _train_codes(ev: Evaluation, at: str):
    n_probe = min(ev.cfg.probe_train_size, len(ev.data.train_images))
    x = ev.get("x")
    gen = torch.Generator(device=x.device).manual_seed(ev.seed + PROBE_NOISE_OFFSET)
    x_train = preprocess(ev.data.train_images[:n_probe], ev.model.preprocessing, gen, x.dtype)
    if ev.cfg.channels_last:
        x_train = x_train.contiguous(memory_format=torch.channels_last)
    with ev.timed("model: encode probe images"):
        return batched(ev.model.encode, x_train, ev.cfg.batch_size)


def _samples(ev: Evaluation, at: str):
    if at not in ("t1", "t2"):
        raise KeyError(f"no samples {at!r} in this evaluation")
    cfg = ev.cfg
    temperature, name = (1.0, "T = 1") if at == "t1" else (cfg.second_temperature_std(), "the second temperature")
    with ev.timed(f"model: samples at {name}"):
        return generate(ev.model, cfg.n_samples, temperature, cfg, ev.seed + SAMPLE_OFFSET)


def _features(ev: Evaluation, at: str):
    samples = ev.get("samples", at)
    with ev.threads(), ev.timed("metric: LeNet features"):
        return ev.get("extractor").features(samples, ev.cfg.batch_size)


def _per_set(fn, phase_name: str, *needs: str):
    def produce(ev: Evaluation, at: str):
        args = [ev.get(k, at) for k in needs]
        with ev.threads(), ev.timed(phase_name):
            return fn(ev, *args)
    return produce


def _log_prob(ev: Evaluation, at: str):
    """log_prob of the first ``bpd_subset`` dequantised test images, or None without a density."""
    model, cfg, data, x = ev.model, ev.cfg, ev.data, ev.get("x")
    if not model.has_density:
        return None
    n = _n_bpd(cfg, len(x))
    if model.preprocessing == "dequantize":
        xb = x[:n]
    else:  # bits/dim needs (k + u) / 256 whatever the model trained on (dequantisation, Theis et al. 2016)
        gen = torch.Generator(device=x.device).manual_seed(ev.seed + TEST_NOISE_OFFSET)
        xb = preprocess(data.test_images[:n], "dequantize", gen, x.dtype)
    devices = [x.device] if x.device.type == "cuda" else []
    with ev.timed("model: log_prob (bits/dim)"), torch.random.fork_rng(devices=devices):
        torch.manual_seed(ev.seed + LOG_PROB_OFFSET)  # log_prob's own noise; caller's RNG untouched
        lp = batched(model.log_prob, xb, cfg.log_prob_batch_size)
    return lp, int(np.prod(xb.shape[1:])), log_prob_note(model)


def _diagnostics(ev: Evaluation, at: str):
    x = ev.get("x")
    with ev.timed("model: diagnostics"):  # the model's own diagnostics (models/contract.py), one batch
        return ev.model.diagnostics(x[:min(ev.cfg.batch_size, len(x))])


def _lenet(ev: Evaluation, at: str):
    with ev.timed("metric: classifier and real statistics (cached per process)"):
        return ev.evaluator.classifier(ev.data, ev.cfg)


def _real(ev: Evaluation, at: str):
    with ev.timed("metric: classifier and real statistics (cached per process)"):
        return ev.evaluator.real_stats(ev.data, ev.cfg, ev.get("extractor"))


# Each input of a metric (bench.metrics.table): name -> producer(evaluation, set of samples).
INPUTS: dict[str, Callable[[Evaluation, str], Any]] = {
    "cfg": lambda ev, at: ev.cfg, "model": lambda ev, at: ev.model, "data": lambda ev, at: ev.data,
    "extractor": _lenet, "real": _real, "test": _test_inputs,
    "x": lambda ev, at: ev.get("test")[0], "labels": lambda ev, at: ev.get("test")[1],
    "codes": _codes, "recon": _recon,
    "recon_errors": lambda ev, at: _timed_call(ev, "metric: reconstruction error", M.reconstruction_errors,
                                               ev.get("x"), ev.get("recon")),
    "train_codes": _train_codes,
    "train_labels": lambda ev, at: ev.data.train_labels[:min(ev.cfg.probe_train_size, len(ev.data.train_images))],
    "samples": _samples, "features": _features,
    "sharpness_stats": lambda ev, at: _timed_call(ev, "metric: Laplacian (sharpness, corner artefact)",
                                                  M.sharpness_stats, ev.get("samples", at)),
    "feature_stats": _per_set(lambda ev, f: M.feature_stats(f), "metric: Fréchet distance", "features"),
    "precision_recall": _per_set(lambda ev, real, f: M.precision_recall(real.feats, f, ev.cfg.pr_k,
                                                                        real.radii[ev.cfg.pr_k]),
                                 "metric: precision/recall", "real", "features"),
    "confidence": _per_set(lambda ev, ex, f: M.sample_confidence(ex.net.head(f), ev.cfg.confidence_threshold),
                           "metric: LeNet confidence", "extractor", "features"),  # the head on the same features
    "log_prob": _log_prob, "diagnostics": _diagnostics,
    "n_bpd": lambda ev, at: _n_bpd(ev.cfg, len(ev.get("x"))),
}
PER_SET = {"samples", "features", "sharpness_stats", "feature_stats", "precision_recall", "confidence"}
# Inputs that call the model, in the order of the calls: the model may draw from the global RNG.
MODEL_CALLS = ("test", "extractor", "real", "codes", "recon", "train_codes", ("samples", "t1"), ("samples", "t2"),
               "log_prob", "diagnostics")
ALWAYS = {"test", "extractor", "real", "codes", "recon", ("samples", "t1"), ("samples", "t2")}  # the artefacts'


def _timed_call(ev: Evaluation, name: str, fn, *args):
    with ev.timed(name):
        return fn(*args)


def log_prob_note(model: GenerativeEncoder) -> str:
    """How the model's log_prob is obtained: the contract's ``log_prob_estimator``, never its name."""
    if not model.log_prob_estimator:
        raise ValueError(f"{type(model).__name__} has a density but no log_prob_estimator (models/contract.py)")
    return f"{model.log_prob_estimator} [log_prob of {type(model).__name__}]"


