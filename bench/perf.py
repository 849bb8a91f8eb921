"""Speed benchmark: ``python -m bench.perf [--device cpu|cuda|auto] [--config F] [--out results/perf.csv] [--quick]``.

One process measures where the time goes and writes a tidy CSV (one row per
measurement, columns :data:`COLUMNS`: section, model, preset, width, metric, value, unit,
batch, note, then the machine: device, device_name, threads, torch_version) plus a printed
table. Sections:

``machine``
    Cores and the 1-minute load average at start and end: on a shared CPU the timings mean
    little, and with more than one torch thread they can collapse (OpenMP threads spin-wait
    for a descheduled sibling); ``--threads 1`` (or ``OMP_WAIT_POLICY=PASSIVE``) limits that.
``model``
    For every model at the CPU preset (``--config``, default ``configs/default.yaml``) and the
    paper preset (``--paper-config``): training images/s of a bare step (forward, backward,
    Adam step on pre-made batches), sampling images/s, FLOPs per training image (forward +
    backward of ``model.loss``, counted with ``torch.utils.flop_counter.FlopCounterMode``:
    matmuls and convolutions only, elementwise ops are not counted) and achieved GFLOP/s.
    Throughputs are ``batch / median step time`` after a warm-up (robust to a loaded machine).
``harness``
    The real training loop (:func:`bench.train.train_model`, one epoch on a slice of the
    training set, checkpoints in a temporary directory) against the bare loop for the same
    model. The loop is instrumented from outside (``bench.train``'s ``iterate_batches``,
    ``validation_loss``, ``save_checkpoint`` and ``write_csv_atomic`` are wrapped with timers)
    so the per-step cost (batch indexing + preprocessing, step, clipping, finite checks) and the
    per-epoch cost (validation loss, checkpoint, log) are reported apart, and the full-epoch
    ratio is projected from both.
``data``
    Batches/s of :func:`bench.data.iterate_batches` against a plain
    ``DataLoader(torchvision.datasets.MNIST(..., transform=ToTensor()), batch_size=100, shuffle=True)``
    built on a temporary ``MNIST/raw`` copy of the local files (never downloads).
``metrics``
    Seconds of each metric on ``eval.n_samples`` images (10 000): sharpness, classifier
    features + Fréchet distance (+ KID, precision/recall), bits/dim (density models; timed on
    fewer images and scaled linearly, as the note says) and the linear probe (encoding
    included); then a whole ``bench.evaluate.evaluate_model`` per (untrained) model.
``evalshare``
    One whole run per model as ``./run_all.sh`` does it (``bench.run.execute_run``: train,
    then evaluate, in this process, into a temporary folder): ``eval_seconds / train_seconds``
    against the 20 % target. The classifier and the real test images' statistics are loaded
    first (once per process in the runner too; their seconds are reported apart).
    ``--quick`` uses the smoke preset (``configs/smoke.yaml``).
``householder``
    PIE's Householder maps at the sizes they have in the model: materialised matrix (as
    implemented) vs successive reflections, per map (forward + backward) and for the whole
    training step, measured in alternation.
``levers``
    Each speed lever on and off, timed in alternation: training steps with channels-last,
    fused Adam, both (the default) and optionally torch.compile (``--compile-levers``), against
    contiguous tensors and foreach Adam; a whole evaluation with and without channels-last.
``peer``
    One training epoch of ``bench.train.train_model`` (validation and checkpoint included)
    against Pythae's ``BaseTrainer`` on identical DCGAN nets (width 0.125), latent and batch
    (VAE, WAE), in alternation. Optional: skipped with a note unless pythae is installed
    (``pip install -e ".[peer]"``).
``targets``
    The speed targets of the project with ``met`` / ``not met`` in the note.

Paper widths on a CPU are slow, so they are timed for a few steps only. ``--quick`` shrinks
every measurement (tiny batches, few steps) so that tests can run the whole benchmark; its
numbers mean nothing. On ``--device cuda``: TF32 is allowed, ``--bf16`` turns on bf16
autocast for the models that allow it (the VAE/WAE; PIE stays fp32) and timings synchronise
the device; without a GPU the GPU numbers are reported as not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench import evaluate as E
from bench.classifier import FeatureExtractor, LeNet, get_classifier
from bench.config import Config, load_config
from bench.data import FILES, ImageData, iterate_batches, load_mnist, locate_files, preprocess, resolve_root
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.evaluate import batched
from bench.registry import MODELS, build_model
from bench.results import write_csv_atomic

DEFAULT_CONFIG = "configs/default.yaml"
PAPER_CONFIG = "configs/paper.yaml"
SECTIONS = ("machine", "model", "harness", "data", "metrics", "evalshare", "householder", "levers", "peer",
            "targets")
COLUMNS = ("section", "model", "preset", "width", "metric", "value", "unit", "batch", "note",
           "device", "device_name", "threads", "torch_version")

# Targets of the project (issue "Fast on one machine").
TARGET_DATA_RATIO = 20.0
TARGET_HARNESS_RATIO = 0.9
TARGET_EVAL_FRACTION = 0.2
TARGET_RUN_ALL_SECONDS = 30 * 60
TARGET_PEER_RATIO = 1.5  # training throughput vs Pythae's BaseTrainer on the same nets and batch
PEER_WIDTH = 0.125  # the peer comparison's DCGAN width (issue #13), latent and batch from --config


@dataclass(frozen=True)
class Budget:
    """How much each measurement does. ``batch`` overrides every batch size (quick mode)."""

    warmup: int = 2
    min_steps: int = 3
    max_steps: int = 30
    seconds: float = 10.0  # per timed measurement, after warm-up (stops at max(min_steps, budget))
    big_max_steps: int = 5  # paper widths on a CPU: a few steps only
    harness_steps: int = 30  # timed steps of the real loop (after ``warmup`` steps)
    data_batches: int = 0  # harness loader batches; 0 = one full epoch
    loader_batches: int = 200  # plain DataLoader batches
    metric_images: int = 10000  # images per metric (results are reported for eval.n_samples)
    bpd_images: int = 1000  # images actually pushed through log_prob (scaled to metric_images)
    householder_reps: int = 24
    val_images: int = 0  # 0 = keep the full validation split in the harness run
    lever_reps: int = 5  # interleaved rounds of the levers section
    lever_steps: int = 6  # training steps per model variant and round
    peer_images: int = 0  # training images of the peer epoch (0 = the whole training split)
    peer_reps: int = 2  # interleaved (ours, Pythae) epochs per model
    batch: int | None = None


FULL = Budget()
# A device call of a few minutes (bench.gpu): enough steps for a median, no 10-s windows.
SHORT = Budget(warmup=3, min_steps=5, max_steps=40, seconds=2.0, big_max_steps=40, harness_steps=20,
               val_images=1000, lever_reps=3, lever_steps=4, peer_reps=1, metric_images=2000, bpd_images=200)
QUICK = Budget(warmup=1, min_steps=2, max_steps=2, seconds=0.0, big_max_steps=2, harness_steps=3,
               data_batches=20, loader_batches=10, metric_images=300, bpd_images=40, householder_reps=3,
               val_images=40, batch=4, lever_reps=2, lever_steps=2, peer_images=40, peer_reps=1)


@dataclass
class Row:
    section: str
    model: str
    preset: str
    width: str
    metric: str
    value: float
    unit: str
    batch: int | None = None
    note: str = ""


# ----------------------------------------------------------------------------- machine & timing


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux), else the platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(device: torch.device) -> dict[str, object]:
    """The machine columns of every row."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": device.type, "device_name": name, "threads": torch.get_num_threads(),
            "torch_version": torch.__version__}


def load_average() -> float:
    """1-minute load average (0 where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def machine_rows(preset: str, load_start: float, load_end: float) -> list[Row]:
    """How busy the machine was: on a shared CPU, timings mean little (and more threads can be far slower)."""
    base = {"section": "machine", "model": "-", "preset": preset, "width": "-"}
    env = os.environ.get("OMP_WAIT_POLICY", "unset")
    return [
        Row(**base, metric="cpu_count", value=float(os.cpu_count() or 1), unit="cores"),
        Row(**base, metric="load_avg_start", value=load_start, unit="runnable",
            note=f"1-minute load average when the benchmark started; OMP_WAIT_POLICY={env}"),
        Row(**base, metric="load_avg_end", value=load_end, unit="runnable",
            note="1-minute load average when it ended"),
    ]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is available "
                        "(GPU numbers: not measured; use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu, cuda or auto, got '{name}'")
    return torch.device(name)


def configure_device(device: torch.device) -> list[str]:
    """Speed settings of the GPU path (TF32 matmuls/convs, cuDNN autotuning); notes to print."""
    if device.type != "cuda":
        return ["GPU numbers: not measured (no GPU in this run; rerun with --device cuda on a GPU machine)"]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    return [f"GPU path: TF32 allowed, cuDNN benchmark on ({torch.cuda.get_device_name(device)})"]


def uses_bf16(name: str, model: nn.Module, device: torch.device, bf16: bool) -> bool:
    """bf16 autocast only on CUDA, only if asked, only for models that allow it (PIE stays fp32)."""
    if not bf16 or device.type != "cuda":
        return False
    return bool(model.allows_bf16)  # the model contract says whether bf16 is safe for it


def autocast(enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, *, warmup: int, min_steps: int,
               max_steps: int, seconds: float) -> list[float]:
    """Per-call wall times (device-synchronised) after ``warmup`` untimed calls.

    Stops after ``max_steps`` calls, or earlier once ``min_steps`` calls are done and
    ``seconds`` have passed.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max(1, max_steps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        if len(times) >= min_steps and time.perf_counter() - start >= seconds:
            break
    return times


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn`` runs (matmuls and convolutions), by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def training_flops_per_image(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of forward + backward of ``model.loss(x)["loss"]`` per image (no optimiser step)."""
    def step():
        model.loss(x)["loss"].backward()

    model.zero_grad(set_to_none=True)
    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops / x.shape[0]


# ----------------------------------------------------------------------------- helpers


def width_label(model_cfg) -> str:
    """How wide a model is, from its config (the channel multiplier, or PIE's hidden sizes)."""
    if hasattr(model_cfg, "width"):
        return f"width={model_cfg.width:g}"
    keys = [k for k in ("coupling_conv_hidden", "coupling_linear_hidden") if hasattr(model_cfg, k)]
    return ",".join(f"{k.replace('coupling_', '')}={getattr(model_cfg, k)}" for k in keys) or "-"


def train_dtype(cfg: Config) -> torch.dtype:
    return torch.float64 if cfg.train.float64 else torch.float32


def make_batches(images: torch.Tensor, batch: int, n: int, kind: str, dtype: torch.dtype,
                 seed: int = 0) -> list[torch.Tensor]:
    """``n`` distinct preprocessed batches (pre-made: the bare loop pays no data cost)."""
    gen = torch.Generator(device=images.device).manual_seed(seed)
    n = max(1, min(n, images.shape[0] // batch))
    return [preprocess(images[i * batch:(i + 1) * batch], kind, gen, dtype) for i in range(n)]


def new_model(name: str, cfg: Config, device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, cfg).to(device=device, dtype=train_dtype(cfg))


def bare_step_fn(model: nn.Module, cfg: Config, batches: list[torch.Tensor], bf16: bool,
                 compile_loss: bool) -> Callable[[], None]:
    """One bare training step per call: forward, backward, Adam step, cycling through ``batches``.

    Memory format and Adam flavour follow ``cfg.train`` (``channels_last``, ``fused_adam``), as
    in :func:`bench.train.train_model`, so the harness ratio isolates the loop's own overhead.
    """
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    batches = [b.contiguous(memory_format=fmt) for b in batches]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2),
                           fused=cfg.train.fused_adam or None)
    loss_fn = torch.compile(model.loss) if compile_loss else model.loss
    state = {"i": 0}
    model.train()

    def step():
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        with autocast(bf16):
            loss = loss_fn(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def subset(data: ImageData, n_train: int, n_val: int = 0) -> ImageData:
    """The first ``n_train`` training images (``data.train_subset``-style); ``n_val > 0`` cuts validation."""
    out = dataclasses.replace(data, train_images=data.train_images[:n_train],
                              train_labels=data.train_labels[:n_train])
    if n_val > 0:
        out = dataclasses.replace(out, val_images=data.val_images[:n_val], val_labels=data.val_labels[:n_val])
    return out


# ----------------------------------------------------------------------------- section: model


def bench_models(names: list[str], presets: list[tuple[Config, bool]], data: ImageData, device: torch.device,
                 budget: Budget, opts: argparse.Namespace, log=print) -> list[Row]:
    """Training and sampling throughput, FLOPs/image and GFLOP/s of every model at every preset."""
    rows: list[Row] = []
    for cfg, big in presets:
        few = big and device.type == "cpu"
        for name in names:
            model = new_model(name, cfg, device)
            width = width_label(cfg.models[name])
            batch = budget.batch or cfg.train.batch_size
            dtype = train_dtype(cfg)
            batches = make_batches(data.train_images, batch, 8, model.preprocessing, dtype)
            bf16 = uses_bf16(name, model, device, opts.bf16)
            flops = training_flops_per_image(model, batches[0])
            step = bare_step_fn(model, cfg, batches, bf16, opts.compile)
            times = time_calls(step, device, warmup=budget.warmup, min_steps=budget.min_steps,
                               max_steps=budget.big_max_steps if few else budget.max_steps, seconds=budget.seconds)
            t_step = statistics.median(times)
            ips = batch / t_step
            note = (f"median of {len(times)} steps after {budget.warmup} warm-up" + (", bf16 autocast" if bf16 else "")
                    + (", channels_last" if cfg.train.channels_last else "")
                    + (", fused Adam" if cfg.train.fused_adam else "") + (", torch.compile" if opts.compile else ""))
            base = {"section": "model", "model": name, "preset": cfg.preset, "width": width}
            rows += [
                Row(**base, metric="n_params", value=float(sum(p.numel() for p in model.parameters())),
                    unit="count"),
                Row(**base, metric="train_step_seconds", value=t_step, unit="s", batch=batch, note=note),
                Row(**base, metric="train_images_per_s", value=ips, unit="images/s", batch=batch, note=note),
                Row(**base, metric="train_flops_per_image", value=flops, unit="FLOP", batch=batch,
                    note="forward+backward of model.loss; matmul/conv only (FlopCounterMode)"),
                Row(**base, metric="train_gflops_per_s", value=flops * ips / 1e9, unit="GFLOP/s", batch=batch),
            ]
            # Sampling: the evaluation batch (the training batch for paper widths on a CPU).
            s_batch = budget.batch or (cfg.train.batch_size if few else cfg.eval.batch_size)
            s_flops, s_times = _sampling(model, s_batch, device, bf16, budget, few)
            s_ips = s_batch / statistics.median(s_times)
            s_note = f"model.sample(n, T=1), median of {len(s_times)} calls" + (
                ", channels_last" if cfg.train.channels_last else "")
            rows += [
                Row(**base, metric="sample_images_per_s", value=s_ips, unit="images/s", batch=s_batch, note=s_note),
                Row(**base, metric="sample_flops_per_image", value=s_flops, unit="FLOP", batch=s_batch),
                Row(**base, metric="sample_gflops_per_s", value=s_flops * s_ips / 1e9, unit="GFLOP/s",
                    batch=s_batch),
            ]
            log(f"  model {cfg.preset:>8} {name}: train {ips:8.1f} img/s ({flops * ips / 1e9:.2f} GFLOP/s), "
                f"sample {s_ips:8.1f} img/s")
    return rows


def _sampling(model: nn.Module, n: int, device: torch.device, bf16: bool, budget: Budget,
              few: bool) -> tuple[float, list[float]]:
    """(FLOPs per sampled image, per-call times of ``model.sample(n)``) in inference mode."""
    model.eval()
    with torch.inference_mode(), autocast(bf16):
        flops = count_flops(lambda: model.sample(n)) / n
        times = time_calls(lambda: model.sample(n), device, warmup=1, min_steps=2 if few else budget.min_steps,
                           max_steps=budget.big_max_steps if few else budget.max_steps, seconds=budget.seconds)
    return flops, times


# ----------------------------------------------------------------------------- section: harness


@contextlib.contextmanager
def instrumented_train(device: torch.device) -> Iterator[SimpleNamespace]:
    """Wrap ``bench.train``'s batch iterator and per-epoch calls with timers (restored on exit).

    ``probe.marks[j + 1] - probe.marks[j]`` is the harness's whole step ``j``: indexing and
    preprocessing the batch, forward, backward, clipping, finite checks, optimiser step.
    ``probe.fixed`` holds the seconds of the per-epoch work (validation loss, checkpoint, log).
    """
    import bench.train as train_mod

    probe = SimpleNamespace(marks=[], fixed={"validation_loss": 0.0, "save_checkpoint": 0.0,
                                             "write_csv_atomic": 0.0})
    names = ("iterate_batches", *probe.fixed)
    originals = {n: getattr(train_mod, n) for n in names}

    def timer(key: str, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                probe.fixed[key] += time.perf_counter() - t
        return wrapper

    def batches(*args, **kwargs):
        sync(device)
        probe.marks.append(time.perf_counter())
        for x in originals["iterate_batches"](*args, **kwargs):
            yield x
            sync(device)
            probe.marks.append(time.perf_counter())

    try:
        train_mod.iterate_batches = batches
        for key in probe.fixed:
            setattr(train_mod, key, timer(key, originals[key]))
        yield probe
    finally:
        for n, fn in originals.items():
            setattr(train_mod, n, fn)


def bench_harness(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                  opts: argparse.Namespace, log=print) -> list[Row]:
    """Real training loop (one epoch on a slice) vs the bare loop, per model."""
    from bench.train import train_model

    rows: list[Row] = []
    batch = budget.batch or cfg.train.batch_size
    tcfg = dataclasses.replace(cfg.train, epochs=1, batch_size=batch, compile=opts.compile, bf16=opts.bf16)
    n_steps = budget.warmup + budget.harness_steps
    sliced = subset(data, n_steps * batch, budget.val_images)
    n_full = cfg.data.train_subset or data.train_images.shape[0]
    full_steps = n_full // cfg.train.batch_size
    for name in names:
        base = {"section": "harness", "model": name, "preset": cfg.preset, "width": width_label(cfg.models[name])}
        # Bare loop: same model, same optimiser, same batch size, pre-made batches.
        model = new_model(name, cfg, device)
        bf16 = uses_bf16(name, model, device, opts.bf16)
        batches = make_batches(data.train_images, batch, 8, model.preprocessing, train_dtype(cfg))
        bare_step = bare_step_fn(model, cfg, batches, bf16, opts.compile)

        def bare_run(step=bare_step):
            return time_calls(step, device, warmup=budget.warmup, min_steps=budget.harness_steps,
                              max_steps=budget.harness_steps, seconds=0.0)

        bare = bare_run()
        # The real loop on the same number of steps.
        model = new_model(name, cfg, device)
        with tempfile.TemporaryDirectory(prefix="pie-perf-") as tmp, instrumented_train(device) as probe:
            run_dir = Path(tmp) / name
            run_dir.mkdir()
            result = train_model(model, sliced, tcfg, seed=0, run_dir=run_dir, config_dict={},
                                 progress=False, log=lambda *a, **k: None)
        bare += bare_run()  # bare loop before and after the real one: load drift hits both alike
        t_bare = statistics.median(bare)
        steps = [b - a for a, b in zip(probe.marks[:-1], probe.marks[1:], strict=True)][budget.warmup:]
        t_harness = statistics.median(steps)
        per_epoch = sum(probe.fixed.values())
        ratio = t_bare / t_harness
        epoch_ratio = full_steps * t_bare / (full_steps * t_harness + per_epoch)
        run_ips = len(probe.marks[1:]) * batch / result.seconds
        note = f"median of {len(steps)} steps after {budget.warmup} warm-up"
        rows += [
            Row(**base, metric="bare_images_per_s", value=batch / t_bare, unit="images/s", batch=batch,
                note=f"median of 2 x {budget.harness_steps} steps (before and after the real loop); forward, "
                "backward, Adam step on pre-made batches"),
            Row(**base, metric="harness_step_images_per_s", value=batch / t_harness, unit="images/s", batch=batch,
                note=note + "; bench.train.train_model step incl. batch indexing+preprocessing, clipping, "
                "finite checks"),
            Row(**base, metric="harness_ratio", value=ratio, unit="x", batch=batch,
                note="harness step images/s / bare images/s (training steps only)"),
            Row(**base, metric="per_epoch_seconds", value=per_epoch, unit="s",
                note=f"validation loss on {sliced.val_images.shape[0]} images "
                f"{probe.fixed['validation_loss']:.3g} s + checkpoint {probe.fixed['save_checkpoint']:.3g} s "
                f"+ train log {probe.fixed['write_csv_atomic']:.3g} s"),
            Row(**base, metric="harness_epoch_ratio", value=epoch_ratio, unit="x", batch=cfg.train.batch_size,
                note=f"projected for a full epoch of {full_steps} steps, per-epoch work included"),
            Row(**base, metric="harness_run_images_per_s", value=run_ips, unit="images/s", batch=batch,
                note=f"whole train_model call on {len(probe.marks) - 1} steps: warm-up and per-epoch work "
                "included (not amortised)"),
        ]
        log(f"  harness {name}: bare {batch / t_bare:7.1f} img/s, loop {batch / t_harness:7.1f} img/s, "
            f"ratio {ratio:.3f} (full epoch {epoch_ratio:.3f}), per-epoch {per_epoch:.2f} s")
    return rows


# ----------------------------------------------------------------------------- section: data


def torchvision_mnist_root(data_root: str | None, tmp: Path) -> Path:
    """A folder laid out as torchvision 0.29's MNIST wants it (``ROOT/MNIST/raw/<name>`` uncompressed).

    ``MNIST._check_exists`` looks for the files without ``.gz`` and ``read_image_file`` opens
    them as they are, so the local ``.gz`` files are decompressed into ``tmp``; nothing is downloaded.
    """
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in locate_files(resolve_root(data_root)).items():
        assert name in FILES
        (raw / name[:-len(".gz")]).write_bytes(gzip.decompress(path.read_bytes()))
    return tmp


def bench_data(cfg: Config, data: ImageData, device: torch.device, budget: Budget, data_root: str | None,
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
    with tempfile.TemporaryDirectory(prefix="pie-perf-mnist-") as tmp:
        root = torchvision_mnist_root(data_root, Path(tmp))
        t_build, dataset = timed(lambda: torchvision.datasets.MNIST(str(root), train=True, download=False,
                                                                    transform=ToTensor()), torch.device("cpu"))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
        m = min(len(loader), budget.loader_batches)

        def consume_loader():
            for _, (x, _y) in zip(range(m), loader, strict=False):
                x.to(device)

        seconds, _ = timed(consume_loader, device)
    baseline = m / seconds
    rows += [
        Row(**base, metric="dataloader_batches_per_s", value=baseline, unit="batches/s", batch=batch,
            note=f"DataLoader(torchvision MNIST, ToTensor, shuffle=True, num_workers=0), {m} batches"
            + (", copied to the GPU" if device.type == "cuda" else "") + f"; dataset build {t_build:.2f} s excluded"),
        Row(**base, metric="data_path_ratio", value=rates["unit"] / baseline, unit="x", batch=batch,
            note="harness unit-preprocessed batches/s / DataLoader batches/s (like for like: both give k/255)"),
        Row(**base, metric="data_path_ratio_dequantize", value=rates["dequantize"] / baseline, unit="x",
            batch=batch, note="harness dequantised batches/s / DataLoader batches/s"),
    ]
    log(f"  data: harness {rates['unit']:.0f} batches/s (dequantize {rates['dequantize']:.0f}), "
        f"DataLoader {baseline:.1f} batches/s, ratio {rates['unit'] / baseline:.1f}x")
    return rows


# ----------------------------------------------------------------------------- section: metrics


def feature_extractor(device: torch.device, batch: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """``(images [N, 1, 28, 28] in [0, 1] -> features [N, F], note)`` with the harness's classifier.

    Weights do not change the cost, so an untrained ``bench.classifier.LeNet`` is timed
    through ``FeatureExtractor.features`` (the evaluation's code path) without training it.
    """
    mnist = DATASETS["mnist"]  # the cost does not depend on the dataset
    net = LeNet(mnist.mean, mnist.std, mnist.n_classes).to(device).eval()
    extractor = FeatureExtractor(net=net, weights_hash="untrained", cache_key="perf", test_accuracy=math.nan,
                                 n_test=0, train_seconds=0.0)
    return (lambda x: extractor.features(x, batch)), "bench.classifier FeatureExtractor.features, untrained LeNet"


def bench_metrics(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                  log=print) -> list[Row]:
    """Seconds of each metric on ``eval.n_samples`` (10 000) images, then of a whole evaluation per model."""
    from bench import metrics as M

    ecfg = cfg.eval
    target = ecfg.n_samples if budget.metric_images >= ecfg.n_samples else budget.metric_images
    n = min(target, data.test_images.shape[0])
    scale = target / n
    eb = budget.batch * 25 if budget.batch else ecfg.batch_size
    rows: list[Row] = []
    base = {"section": "metrics", "model": "-", "preset": cfg.preset, "width": "-"}
    gen = torch.Generator(device=data.test_images.device).manual_seed(0)
    real = preprocess(data.test_images[:n], "unit", gen)
    other = preprocess(data.train_images[:n], "unit", gen)  # stands in for generated images
    note_n = f"{n} images" + (f", scaled x{scale:g} to {target}" if scale != 1 else "")

    with torch.inference_mode():
        t, _ = timed(lambda: M.sharpness_stats(other), device)
        rows.append(Row(**base, metric="sharpness_seconds", value=t * scale, unit="s", batch=n,
                        note=f"sharpness_stats (Laplacian variance, float64) on {note_n}"))
        feats_fn, feat_note = feature_extractor(device, eb)
        t_feat, (fa, fb) = timed(lambda: (feats_fn(real), feats_fn(other)), device)
        with warnings.catch_warnings():  # untrained features can be rank-deficient: sqrtm warns
            warnings.simplefilter("ignore")
            t_fd, _ = timed(lambda: M.frechet_distance(fa, fb), device)
        rows.append(Row(**base, metric="features_fd_seconds", value=(t_feat + t_fd) * scale, unit="s", batch=eb,
                        note=f"features of 2 x {note_n} ({feat_note}) {t_feat * scale:.3g} s + Fréchet distance "
                        f"{t_fd:.3g} s"))
        kid_subset = min(ecfg.kid_subset_size, n)
        t, _ = timed(lambda: M.kernel_distance(fa, fb, kid_subset, ecfg.kid_subsets), device)
        rows.append(Row(**base, metric="kid_seconds", value=t, unit="s",
                        note=f"{ecfg.kid_subsets} subsets of {kid_subset} (features given)"))
        t, _ = timed(lambda: M.precision_recall(fa, fb, ecfg.pr_k), device)
        rows.append(Row(**base, metric="precision_recall_seconds", value=t * scale ** 2, unit="s",
                        note=f"k={ecfg.pr_k} on {n} vs {n} features, both radii" +
                        (f", scaled x{scale ** 2:g} (quadratic)" if scale != 1 else "")))
    log(f"  metrics: sharpness {rows[0].value:.2f} s, features+FD {rows[1].value:.2f} s ({feat_note})")

    probe_n = min(ecfg.probe_train_size, n)
    for name in names:
        model = new_model(name, cfg, device).eval()
        rows += _model_metric_costs(model, name, cfg, data, device, {**base, "model": name,
                                    "width": width_label(cfg.models[name])}, n, target, probe_n, eb, budget)
        log(f"  metrics {name}: " + ", ".join(f"{r.metric} {r.value:.2f} s" for r in rows if r.model == name))
    rows += bench_evaluation(names, cfg, data, device, budget, log)
    return rows


def _model_metric_costs(model: nn.Module, name: str, cfg: Config, data: ImageData, device: torch.device,
                        base: dict, n: int, target: int, probe_n: int, eb: int, budget: Budget) -> list[Row]:
    """bits/dim (density models) and the linear probe, for one (untrained) model."""
    from bench import metrics as M

    rows: list[Row] = []
    scale = target / n
    note_n = f"{n} images" + (f", scaled x{scale:g} to {target}" if scale != 1 else "")
    gen = torch.Generator(device=data.test_images.device).manual_seed(1)
    dtype = train_dtype(cfg)
    x_test = preprocess(data.test_images[:n], model.preprocessing, gen, dtype)
    x_train = preprocess(data.train_images[:probe_n], model.preprocessing, gen, dtype)
    with torch.inference_mode():
        if model.has_density:
            k = min(n, budget.bpd_images)
            lp_batch = min(cfg.eval.log_prob_batch_size, eb)
            t, lp = timed(lambda: batched(model.log_prob, x_test[:k], lp_batch), device)
            M.bits_per_dim(lp, x_test[0].numel())
            iw = getattr(cfg.models[name], "iw_samples", None)
            rows.append(Row(**base, metric="bits_per_dim_seconds", value=t * target / k, unit="s", batch=lp_batch,
                            note=f"log_prob + bits_per_dim on {k} test images, scaled x{target / k:g} to {target}"
                            + (f"; iw_samples={iw}" if iw else "")))
            subset_n = cfg.eval.bpd_subset or data.test_images.shape[0]
            rows.append(Row(**base, metric="bits_per_dim_eval_seconds", value=t * subset_n / k, unit="s",
                            batch=lp_batch, note=f"the same for the {subset_n} images the evaluation scores "
                            "(eval.bpd_subset)"))
        t_enc, (z_tr, z_te) = timed(lambda: (batched(model.encode, x_train, eb), batched(model.encode, x_test, eb)),
                                    device)
    t_fit, _ = timed(lambda: M.linear_probe_accuracy(z_tr, data.train_labels[:probe_n], z_te, data.test_labels[:n]),
                     device)
    rows.append(Row(**base, metric="probe_seconds", value=(t_enc + t_fit) * scale, unit="s", batch=eb,
                    note=f"encode {probe_n} train + {note_n} test {t_enc * scale:.3g} s + L-BFGS fit "
                    f"{t_fit * scale:.3g} s (untrained model; fit time depends on the codes)"))
    return rows


def bench_evaluation(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                     log=print) -> list[Row]:
    """Seconds of ``bench.evaluate.evaluate_model`` for one (untrained) model: the per-run evaluation cost.

    The classifier comes from ``bench.classifier.get_classifier`` (its on-disk cache, trained
    there once if absent: reported apart) and the real test images' statistics are computed
    once per process before timing, as in the runner. ``--quick`` evaluates a shrunken
    protocol on a slice of the data with the classifier cache in a temporary folder.
    """
    ecfg, eval_data = cfg.eval, data
    rows: list[Row] = []
    base = {"section": "metrics", "model": "-", "preset": cfg.preset, "width": "-"}
    with contextlib.ExitStack() as stack:
        if budget.batch:  # quick: a few images everywhere, classifier trained on a slice into a temp cache
            small = {"n_samples": 50, "test_subset": 50, "probe_train_size": 50, "bpd_subset": 8,
                     "kid_subset_size": 20, "kid_subsets": 2, "classifier_epochs": 1, "batch_size": 50,
                     "log_prob_batch_size": 8}
            ecfg = dataclasses.replace(ecfg, **small)
            eval_data = subset(data, 400, 50)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pie-perf-cache-"))
            stack.enter_context(_env("PIE_BENCH_CACHE", tmp))
        t_clf, extractor = timed(lambda: get_classifier(eval_data, ecfg.classifier_epochs, batch_size=ecfg.batch_size),
                                 device)
        rows.append(Row(**base, metric="classifier_seconds", value=t_clf, unit="s",
                        note="get_classifier: trained once per data set (0 s when the cache holds it)"
                        + (f"; trained {extractor.train_seconds:.3g} s" if extractor.train_seconds
                           else "; from the cache")))
        t_real, _ = timed(lambda: E.real_stats(eval_data, ecfg, extractor), device)
        rows.append(Row(**base, metric="real_stats_seconds", value=t_real, unit="s",
                        note="features, statistics and k-NN radii of the real test images: once per process"))
        for name in names:
            model = new_model(name, cfg, device)
            t, _ = timed(lambda: E.evaluate_model(model, eval_data, ecfg, 0), device)  # noqa: B023
            rows.append(Row(**{**base, "model": name, "width": width_label(cfg.models[name])}, metric="eval_seconds",
                            value=t, unit="s", batch=ecfg.batch_size,
                            note="bench.evaluate.evaluate_model on an untrained model, real-image statistics cached"))
            log(f"  evaluation {name}: {t:.1f} s")
    return rows


SMOKE_CONFIG = "configs/smoke.yaml"


def bench_eval_share(names: list[str], cfg: Config, data: ImageData, device: torch.device, data_root: str | None,
                     quick: bool, log=print) -> list[Row]:
    """``eval_seconds / train_seconds`` of one real run per model (one epoch at the default preset).

    The run goes through ``bench.run.execute_run`` into a temporary results folder, so the two
    times are the runner's own rows; seed 0. The classifier and the real-image statistics are
    warmed up first, as after a worker's first run.
    """
    from bench.results import TABLE
    from bench.runner import RunSpec, execute_run

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pie-perf-evalshare-"))
        if quick:  # smoke preset on a slice, its classifier trained for 1 epoch into a temporary cache
            cfg = load_config(SMOKE_CONFIG)
            data = subset(data, cfg.data.train_subset, 50)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_size=50),
                                      eval=dataclasses.replace(cfg.eval, classifier_epochs=1))
            stack.enter_context(_env("PIE_BENCH_CACHE", tmp))
        elif cfg.data.val_size != data.val_images.shape[0]:
            data = load_mnist(data_root, cfg.data.val_size, cfg.data.val_seed, device)
        base = {"section": "evalshare", "model": "-", "preset": cfg.preset, "width": "-"}
        rows: list[Row] = []
        t_clf, extractor = timed(lambda: get_classifier(data, cfg.eval.classifier_epochs,
                                                        batch_size=cfg.eval.batch_size), device)
        t_real, _ = timed(lambda: E.real_stats(data, cfg.eval, extractor), device)
        rows.append(Row(**base, metric="real_stats_seconds", value=t_real, unit="s",
                        note=f"real test images' features, statistics and k-NN radii, once per process (classifier "
                        f"load {t_clf:.3g} s); not in eval_seconds below"))
        for name in names:
            spec = RunSpec(model=name, seed=0, config=cfg, out_dir=tmp, data_root=data_root, device=str(device))
            outcome = execute_run(spec, data, log=lambda *a, **k: None)
            if outcome.status != "ok":
                raise RuntimeError(f"evalshare run {name} failed: {outcome.reason}")
            table = pd.read_csv(Path(tmp) / TABLE)
            got = table[table["run_id"] == spec.run_id].set_index("metric")["value"]
            train, evaluation = float(got["train_seconds"]), float(got["eval_seconds"])
            share = evaluation / train
            mb = {**base, "model": name, "width": width_label(cfg.models[name])}
            rows += [Row(**mb, metric="run_train_seconds", value=train, unit="s", batch=cfg.train.batch_size,
                         note=f"train_seconds of one run ({cfg.train.epochs} epoch(s), bench.run.execute_run)"),
                     Row(**mb, metric="run_eval_seconds", value=evaluation, unit="s", batch=cfg.eval.batch_size,
                         note="eval_seconds of the same run (bench.evaluate.evaluate_model)"),
                     Row(**mb, metric="eval_share", value=share, unit="fraction",
                         note=f"eval_seconds / train_seconds; target <= {TARGET_EVAL_FRACTION:g}: "
                         f"{'met' if share <= TARGET_EVAL_FRACTION else 'not met'}")]
            log(f"  evalshare {name}: train {train:.1f} s, eval {evaluation:.1f} s, share {share:.3f}")
    return rows


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


# ----------------------------------------------------------------------------- section: householder


def reflect(x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``W x`` with ``W = H(v_n) ... H(v_1)`` applied as successive reflections along axis 1."""
    for v in vectors:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        coef = (x * v.view(shape)).sum(1, keepdim=True)  # vᵀx per position
        x = x - (2.0 / v.dot(v)) * coef * v.view(shape)
    return x


def matrix_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``W x`` along axis 1 with a materialised ``W`` as one matmul (no convolution)."""
    if x.dim() == 2:
        return x @ w.T
    return (w @ x.flatten(2)).view(x.shape)


def householder_maps(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The model's Householder maps with their per-sample input shapes, from one forward pass."""
    from models.flows.householder import _Householder

    seen: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, tuple(args[0].shape[1:]))))
             for m in model.modules() if isinstance(m, _Householder)]
    try:
        with torch.no_grad():
            model.loss(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@contextlib.contextmanager
def householder_impl(impl: str) -> Iterator[None]:
    """Within the block, PIE's Householder maps run as ``impl``: "matrix" (as implemented) or "reflections".

    ``"reflections"`` swaps the classes' ``forward``/``inverse`` for :func:`reflect` (the inverse
    applies the reflections in reverse order); the originals are restored on exit.
    """
    from models.flows.householder import HouseholderConv1x1, HouseholderLinear

    classes = (HouseholderConv1x1, HouseholderLinear)
    originals = {c: (c.forward, c.inverse) for c in classes}

    def forward(self, x):
        return reflect(x, self.vectors), x.new_zeros(x.shape[0])

    def inverse(self, y):
        return reflect(y, self.vectors.flip(0)), y.new_zeros(y.shape[0])

    try:
        if impl == "reflections":
            for c in classes:
                c.forward, c.inverse = forward, inverse
        elif impl != "matrix":
            raise ValueError(f"unknown Householder implementation '{impl}'")
        yield
    finally:
        for c, (f, i) in originals.items():
            c.forward, c.inverse = f, i


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, reps: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Per-call times of several variants measured in alternation (drift hits them alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, reps)):
        for key, fn in fns.items():
            times[key].append(timed(fn, device)[0])
    return times


def bench_householder(names: list[str], presets: list[tuple[Config, bool]], data: ImageData, device: torch.device,
                      budget: Budget, log=print) -> list[Row]:
    """Materialised matrix (as implemented) vs successive reflections.

    Per map size (forward + backward of one map, and a matmul instead of the 1x1 convolution),
    then the decisive number: the model's whole training step with either implementation,
    measured in alternation.
    """
    rows: list[Row] = []
    for cfg, big in presets:
        for name in names:
            model = new_model(name, cfg, device)
            batch = budget.batch or cfg.train.batch_size
            dtype = train_dtype(cfg)
            batches = make_batches(data.train_images, batch, 4, model.preprocessing, dtype)
            maps = householder_maps(model, batches[0])
            if not maps:
                continue
            counts: dict[tuple, list] = {}
            for mod, shape in maps:
                key = (type(mod).__name__, shape, mod.vectors.shape[0])
                counts.setdefault(key, [mod, 0])[1] += 1
            totals = {"matrix": 0.0, "reflections": 0.0, "matrix_matmul": 0.0}
            for (kind, shape, n_refl), (mod, count) in counts.items():
                inp = torch.randn(batch, *shape, device=device, dtype=dtype, requires_grad=True)
                impls = {
                    "matrix": lambda inp=inp, mod=mod: mod(inp)[0],
                    "reflections": lambda inp=inp, mod=mod: reflect(inp, mod.vectors),
                    "matrix_matmul": lambda inp=inp, mod=mod: matrix_matmul(inp, mod.matrix()),
                }
                ref = impls["matrix"]().detach()
                width = f"{kind} C={shape[0]}" + (f" {shape[1]}x{shape[2]}" if len(shape) == 3 else "") + \
                    f" n_refl={n_refl} x{count}"
                base = {"section": "householder", "model": name, "preset": cfg.preset, "width": width}
                for impl, fn in impls.items():
                    if not torch.allclose(fn().detach(), ref, rtol=1e-4, atol=1e-4):
                        raise AssertionError(f"householder {impl} disagrees with the module at {width}")

                def fwd_bwd(fn, mod=mod, inp=inp):
                    mod.zero_grad(set_to_none=True)
                    inp.grad = None
                    fn().square().sum().backward()

                times = interleaved({k: (lambda f=f: fwd_bwd(f)) for k, f in impls.items()}, device,
                                    budget.householder_reps, warmup=2)
                ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
                for impl in impls:
                    totals[impl] += ms[impl] * count
                    rows.append(Row(**base, metric=f"{impl}_ms", value=ms[impl], unit="ms", batch=batch,
                                    note=f"forward+backward of one map, median of {len(times[impl])}, interleaved"))
                rows.append(Row(**base, metric="reflections_speedup", value=ms["matrix"] / ms["reflections"],
                                unit="x", batch=batch, note="matrix time / reflections time (>1: reflections faster)"))
            base = {"section": "householder", "model": name, "preset": cfg.preset, "width": "all maps"}
            for impl, total in totals.items():
                rows.append(Row(**base, metric=f"{impl}_per_step_ms", value=total, unit="ms", batch=batch,
                                note=f"sum over the model's {len(maps)} maps of the isolated forward+backward"))
            # The whole training step with each implementation, alternating.
            steps = {}
            for impl in ("matrix", "reflections"):
                step = bare_step_fn(model, cfg, batches, False, False)

                def run_step(impl=impl, step=step):
                    with householder_impl(impl):
                        step()

                steps[impl] = run_step
            reps = max(1, budget.householder_reps // (6 if big and device.type == "cpu" else 3))
            times = interleaved(steps, device, reps, warmup=budget.warmup)
            ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            base = {**base, "width": "training step"}
            for impl, value in ms.items():
                rows.append(Row(**base, metric=f"step_{impl}_ms", value=value, unit="ms", batch=batch,
                                note=f"forward, backward, Adam step; median of {len(times[impl])}, interleaved"))
            rows.append(Row(**base, metric="step_reflections_speedup", value=ms["matrix"] / ms["reflections"],
                            unit="x", batch=batch, note="matrix step time / reflections step time"))
            log(f"  householder {cfg.preset} {name}: maps per step matrix {totals['matrix']:.1f} ms, "
                f"reflections {totals['reflections']:.1f} ms, matmul {totals['matrix_matmul']:.1f} ms; "
                f"whole step matrix {ms['matrix']:.0f} ms vs reflections {ms['reflections']:.0f} ms")
    return rows


# ----------------------------------------------------------------------------- section: levers


def _lever_step(name: str, cfg: Config, device: torch.device, batches: list[torch.Tensor], bf16: bool, *,
                channels_last: bool, fused: bool, compile_loss: bool = False) -> Callable[[], None]:
    tcfg = dataclasses.replace(cfg.train, channels_last=channels_last, fused_adam=fused)
    model = new_model(name, cfg, device)
    return bare_step_fn(model, dataclasses.replace(cfg, train=tcfg), batches, bf16, compile_loss)


def bench_levers(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                 opts: argparse.Namespace, log=print) -> list[Row]:
    """Each speed lever on/off, measured in alternation in one process (ratios, robust to a loaded machine).

    Training (bare step at ``--config``): contiguous + foreach Adam (the baseline), channels-last,
    fused Adam, both (the harness default) and, with ``--compile-levers``, torch.compile on top.
    Evaluation: a whole :func:`bench.evaluate.evaluate_model` with ``eval.channels_last`` off/on.
    """
    rows: list[Row] = []
    batch = budget.batch or cfg.train.batch_size
    for name in names:
        base = {"section": "levers", "model": name, "preset": cfg.preset, "width": width_label(cfg.models[name])}
        probe = new_model(name, cfg, device)
        bf16 = uses_bf16(name, probe, device, opts.bf16)
        batches = make_batches(data.train_images, batch, 4, probe.preprocessing, train_dtype(cfg))
        variants = {
            "baseline": dict(channels_last=False, fused=False),
            "channels_last": dict(channels_last=True, fused=False),
            "fused_adam": dict(channels_last=False, fused=True),
            "channels_last+fused_adam": dict(channels_last=True, fused=True),
        }
        if opts.compile_levers:
            variants["channels_last+fused_adam+compile"] = dict(channels_last=True, fused=True, compile_loss=True)
        steps = {k: _lever_step(name, cfg, device, batches, bf16, **v) for k, v in variants.items()}
        times = interleaved_steps(steps, device, budget.lever_reps, budget.lever_steps, budget.warmup)
        t_base = statistics.median(times["baseline"])
        for k, ts in times.items():
            t = statistics.median(ts)
            rows.append(Row(**base, metric=f"train_ratio[{k}]", value=t_base / t, unit="x", batch=batch,
                            note=f"bare step images/s vs contiguous + foreach Adam ({batch / t:.0f} vs "
                            f"{batch / t_base:.0f} img/s); median of {len(ts)} interleaved rounds of "
                            f"{budget.lever_steps} steps"))
        log(f"  levers {name}: " + ", ".join(f"{k} {t_base / statistics.median(ts):.2f}x" for k, ts in times.items()))
        rows += _eval_lever(name, cfg, data, device, budget, base, log)
    return rows


def interleaved_steps(fns: dict[str, Callable[[], None]], device: torch.device, reps: int, steps: int,
                      warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, ``reps`` rounds in alternation after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            out[k].append((time.perf_counter() - t) / steps)
    return out


def _eval_lever(name: str, cfg: Config, data: ImageData, device: torch.device, budget: Budget, base: dict,
                log=print) -> list[Row]:
    n = budget.metric_images
    ecfg = dataclasses.replace(cfg.eval, n_samples=n, test_subset=n, probe_train_size=n,
                               kid_subset_size=min(cfg.eval.kid_subset_size, n // 2),
                               bpd_subset=min(cfg.eval.bpd_subset, n), batch_size=budget.batch or cfg.eval.batch_size)
    model = new_model(name, cfg, device)
    E.evaluate_model(model, data, ecfg, seed=0)  # warm-up; the real-image statistics are cached after it
    seconds: dict[bool, list[float]] = {False: [], True: []}
    values: dict[bool, dict[str, float]] = {}
    for _ in range(2):
        for cl in (False, True):
            model = new_model(name, cfg, device)
            t = time.perf_counter()
            got, _ = E.evaluate_model(model, data, dataclasses.replace(ecfg, channels_last=cl), seed=0)
            seconds[cl].append(time.perf_counter() - t)
            values[cl] = {r.metric: r.value for r in got}
    diff = max((abs(values[True][k] - v) / max(abs(v), 1e-12) for k, v in values[False].items() if math.isfinite(v)),
               default=0.0)
    ratio = min(seconds[False]) / min(seconds[True])
    log(f"  levers {name}: evaluation channels_last {ratio:.2f}x (largest relative change of a metric {diff:.1e})")
    return [Row(**base, metric="eval_ratio[channels_last]", value=ratio, unit="x", batch=ecfg.batch_size,
                note=f"evaluate_model on {n} images, contiguous / channels-last seconds (best of 2 each, "
                f"interleaved); largest relative change of a metric {diff:.1e}")]


# ----------------------------------------------------------------------------- section: peer


def _pythae_model(name: str, latent: int, width: float):
    """Pythae's VAE / WAE-MMD around the harness's own DCGAN encoder and decoder (identical nets)."""
    from pythae.models import VAE, WAE_MMD, VAEConfig, WAE_MMD_Config
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    from baselines.nets import ConvDecoder, ConvEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.net = ConvEncoder(2 * latent if name == "vae" else latent, width)

        def forward(self, x):
            h = self.net(x)
            if name == "vae":
                mu, logvar = h.chunk(2, dim=1)
                return ModelOutput(embedding=mu, log_covariance=logvar)
            return ModelOutput(embedding=h)

    class Decoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.net = ConvDecoder(latent, width)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    if name == "vae":
        cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=latent, reconstruction_loss="mse")
        return VAE(cfg, encoder=Encoder(), decoder=Decoder())
    cfg = WAE_MMD_Config(input_dim=(1, 28, 28), latent_dim=latent, kernel_choice="imq", reg_weight=10.0)
    return WAE_MMD(cfg, encoder=Encoder(), decoder=Decoder())


def _pythae_epoch(name: str, cfg: Config, images: torch.Tensor, device: torch.device, tmp: Path) -> float:
    """Seconds of one ``BaseTrainer.train()`` epoch (Pythae's data loader, loop and final save)."""
    import logging

    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    logging.getLogger("pythae").setLevel(logging.ERROR)
    for lname in list(logging.root.manager.loggerDict):
        if lname.startswith("pythae"):
            logging.getLogger(lname).setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = _pythae_model(name, cfg.models[name].latent_dim, PEER_WIDTH)
    x = images.float().div(255.0).reshape(-1, 1, 28, 28).cpu()
    dataset = BaseDataset(x, torch.zeros(len(x)))
    tcfg = BaseTrainerConfig(output_dir=str(tmp), num_epochs=1, per_device_train_batch_size=cfg.train.batch_size,
                             per_device_eval_batch_size=1000, learning_rate=cfg.train.lr,
                             optimizer_params={"betas": (cfg.train.beta1, cfg.train.beta2)},
                             no_cuda=device.type != "cuda")
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        trainer = BaseTrainer(model, train_dataset=dataset, training_config=tcfg)
        sync(device)
        t = time.perf_counter()
        trainer.train()
        sync(device)
    return time.perf_counter() - t


def bench_peer(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
               log=print) -> list[Row]:
    """One training epoch: ``bench.train.train_model`` (validation and checkpoint included) vs Pythae's
    ``BaseTrainer`` on identical DCGAN nets (width ``PEER_WIDTH``), latent and batch, in alternation.

    Skipped with a note when pythae is not installed (``pip install -e ".[peer]"``).
    """
    from bench.train import train_model

    base = {"section": "peer", "preset": cfg.preset, "width": f"{PEER_WIDTH:g}"}
    todo = [n for n in names if n in ("vae", "wae")]
    if not todo:
        return []
    try:
        from importlib.metadata import version

        import pythae  # noqa: F401

        pythae_version = version("pythae")
    except ImportError:
        log("  peer: skipped (pythae is not installed; pip install -e '.[peer]')")
        return [Row(**base, model="-", metric="peer_skipped", value=float("nan"), unit="-",
                    note="pythae is not installed (pip install -e '.[peer]'): no side-by-side measured")]
    rows: list[Row] = []
    n_train = budget.peer_images or data.train_images.shape[0]
    sliced = subset(data, n_train, budget.val_images)
    batch = budget.batch or cfg.train.batch_size
    pcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, batch_size=batch))
    pcfg = _with_width(pcfg, todo, PEER_WIDTH)
    for name in todo:
        ours, theirs = [], []
        for _ in range(budget.peer_reps):
            with tempfile.TemporaryDirectory(prefix="pie-perf-peer-") as tmp:
                run_dir = Path(tmp) / name
                run_dir.mkdir()
                model = new_model(name, pcfg, device)
                result = train_model(model, sliced, pcfg.train, seed=0, run_dir=run_dir, config_dict={},
                                     progress=False, log=lambda *a, **k: None)
                ours.append(result.seconds)
                theirs.append(_pythae_epoch(name, pcfg, sliced.train_images, device, Path(tmp) / "pythae"))
        t_ours, t_theirs = min(ours), min(theirs)
        ratio = t_theirs / t_ours
        common = (f"{n_train} training images, batch {batch}, latent {pcfg.models[name].latent_dim}, width "
                  f"{PEER_WIDTH:g}; best of {len(ours)} interleaved epochs; pythae {pythae_version}")
        rows += [
            Row(**base, model=name, metric="ours_images_per_s", value=n_train / t_ours, unit="images/s", batch=batch,
                note=f"bench.train.train_model, one epoch incl. validation on {sliced.val_images.shape[0]} images "
                f"and checkpoint; {common}"),
            Row(**base, model=name, metric="pythae_images_per_s", value=n_train / t_theirs, unit="images/s",
                batch=batch, note=f"pythae BaseTrainer.train(), one epoch, no eval set; {common}"),
            Row(**base, model=name, metric="peer_ratio", value=ratio, unit="x", batch=batch,
                note=f"ours / Pythae images/s; {common}"),
        ]
        log(f"  peer {name}: ours {n_train / t_ours:7.1f} img/s, pythae {n_train / t_theirs:7.1f} img/s, "
            f"ratio {ratio:.2f}")
    return rows


def _with_width(cfg: Config, names: list[str], width: float) -> Config:
    models = dict(cfg.models)
    for n in names:
        models[n] = dataclasses.replace(models[n], width=width)
    return dataclasses.replace(cfg, models=models)


# ----------------------------------------------------------------------------- section: targets


def _value(frame: pd.DataFrame, section: str, metric: str, model: str | None = None, preset: str | None = None):
    sel = (frame["section"] == section) & (frame["metric"] == metric)
    if model is not None:
        sel &= frame["model"] == model
    if preset is not None:
        sel &= frame["preset"] == preset
    vals = frame.loc[sel, "value"]
    return float(vals.iloc[0]) if len(vals) else None


def eval_fraction_from_table(path: Path, preset: str) -> tuple[float, str] | None:
    """Largest eval_seconds / train_seconds over the finished runs of ``preset`` in a metrics.csv."""
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    need = {"run_id", "metric", "value", "preset"}
    if not need <= set(table.columns):
        return None
    sel = table[(table["preset"] == preset) & table["metric"].isin(["train_seconds", "eval_seconds"])]
    wide = sel.pivot_table(index="run_id", columns="metric", values="value", aggfunc="last").dropna()
    if wide.empty or not {"train_seconds", "eval_seconds"} <= set(wide.columns):
        return None
    frac = wide["eval_seconds"] / wide["train_seconds"]
    return float(frac.max()), f"from {path}: max over {len(frac)} {preset} runs (median {frac.median():.3f})"


def estimate_run(frame: pd.DataFrame, name: str, cfg: Config, n_train: int) -> tuple[float, float, str] | None:
    """(training seconds, evaluation seconds, how) of one run of ``name``, projected from the measurements.

    Training: epochs x (full-epoch steps at the harness's step rate + per-epoch work). Evaluation:
    the measured ``evaluate_model`` time if present, else the sum of the measured parts.
    """
    step = _value(frame, "harness", "harness_step_images_per_s", name, cfg.preset)
    per_epoch = _value(frame, "harness", "per_epoch_seconds", name, cfg.preset)
    if step is None or per_epoch is None:
        return None
    steps = n_train // cfg.train.batch_size
    train = cfg.train.epochs * (steps * cfg.train.batch_size / step + per_epoch)
    evaluation = _value(frame, "metrics", "eval_seconds", name, cfg.preset)
    if evaluation is not None:
        return train, evaluation, "evaluate_model measured"
    sample = _value(frame, "model", "sample_images_per_s", name, cfg.preset)
    if sample is None:
        return None
    common = sum(_value(frame, "metrics", m) or 0.0 for m in
                 ("sharpness_seconds", "features_fd_seconds", "kid_seconds", "precision_recall_seconds"))
    evaluation = (2 * cfg.eval.n_samples / sample + common
                  + (_value(frame, "metrics", "bits_per_dim_eval_seconds", name) or 0.0)
                  + (_value(frame, "metrics", "probe_seconds", name) or 0.0))
    return train, evaluation, "sum of measured parts"


def targets(frame: pd.DataFrame, cfg: Config, names: list[str], n_train: int, metrics_csv: Path) -> list[Row]:
    """The project's speed targets with met / not met."""
    rows: list[Row] = []
    base = {"section": "targets", "model": "-", "preset": cfg.preset, "width": "-"}

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    ratio = _value(frame, "data", "data_path_ratio")
    if ratio is not None:
        rows.append(Row(**base, metric="data_path_ratio", value=ratio, unit="x",
                        note=f"target >= {TARGET_DATA_RATIO:g}x: {verdict(ratio >= TARGET_DATA_RATIO)}"))
    h = frame[(frame["section"] == "harness") & (frame["metric"] == "harness_ratio")]
    if len(h):
        worst = h.loc[h["value"].idxmin()]
        rows.append(Row(**base, metric="harness_ratio_min", value=float(worst["value"]), unit="x",
                        note=f"target >= {TARGET_HARNESS_RATIO:g} (overhead <= 10 %), training steps only, worst "
                        f"model {worst['model']}: {verdict(worst['value'] >= TARGET_HARNESS_RATIO)}"))
        e = frame[(frame["section"] == "harness") & (frame["metric"] == "harness_epoch_ratio")]
        worst = e.loc[e["value"].idxmin()]
        rows.append(Row(**base, metric="harness_epoch_ratio_min", value=float(worst["value"]), unit="x",
                        note=f"same with per-epoch work over a full epoch, worst model {worst['model']}: "
                        f"{verdict(worst['value'] >= TARGET_HARNESS_RATIO)}"))
    peer = frame[(frame["section"] == "peer") & (frame["metric"] == "peer_ratio")]
    if len(peer):
        worst = peer.loc[peer["value"].idxmin()]
        rows.append(Row(**base, metric="peer_ratio_min", value=float(worst["value"]), unit="x",
                        note=f"target >= {TARGET_PEER_RATIO:g}x Pythae's BaseTrainer (identical nets, width "
                        f"{worst['width']}), worst model {worst['model']}: "
                        f"{verdict(worst['value'] >= TARGET_PEER_RATIO)}"))
    measured = eval_fraction_from_table(metrics_csv, cfg.preset)
    estimates = {n: estimate_run(frame, n, cfg, n_train) for n in names}
    estimates = {n: e for n, e in estimates.items() if e is not None}
    if measured is not None:
        rows.append(Row(**base, metric="eval_fraction", value=measured[0], unit="fraction",
                        note=f"target <= {TARGET_EVAL_FRACTION:g}: {verdict(measured[0] <= TARGET_EVAL_FRACTION)} "
                        f"({measured[1]})"))
    if estimates:
        n, (tr, ev, how) = max(estimates.items(), key=lambda kv: kv[1][1] / kv[1][0])
        rows.append(Row(**base, metric="eval_fraction_estimate", value=ev / tr, unit="fraction",
                        note=f"eval {ev:.0f} s / projected training {tr:.0f} s ({how}), worst model {n}: "
                        f"{verdict(ev / tr <= TARGET_EVAL_FRACTION)} (estimate; results/metrics.csv is the measure)"))
    share = frame[(frame["section"] == "evalshare") & (frame["metric"] == "eval_share")]
    if len(share):
        worst = share.loc[share["value"].idxmax()]
        rows.append(Row(**{**base, "preset": worst["preset"]}, metric="eval_share_max", value=float(worst["value"]),
                        unit="fraction", note=f"target <= {TARGET_EVAL_FRACTION:g}: "
                        f"{verdict(worst['value'] <= TARGET_EVAL_FRACTION)} (measured in this process: one run "
                        f"per model, worst model {worst['model']}; median "
                        f"{share['value'].median():.3f})"))
    if set(estimates) >= {"pie", "vae", "wae"}:
        runs = {"pie": 5 + 3, "vae": 5, "wae": 5}  # run_all.sh: Table 1 x 5 seeds + Fig. 7 PIE x 3 eps²
        total = sum(runs[n] * (estimates[n][0] + estimates[n][1]) for n in runs)
        rows.append(Row(**base, metric="run_all_seconds_estimate", value=total, unit="s",
                        note=f"target <= {TARGET_RUN_ALL_SECONDS} s: measured separately (./run_all.sh); this "
                        f"serial projection would be {verdict(total <= TARGET_RUN_ALL_SECONDS)}"))
    return rows


# ----------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="CPU preset (default: %(default)s)")
    p.add_argument("--paper-config", default=PAPER_CONFIG, help="paper-width preset (default: %(default)s)")
    p.add_argument("--out", default="results/perf.csv", help="CSV to write (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="shrink everything (smoke test; numbers mean nothing)")
    p.add_argument("--short", action="store_true", help="fewer, shorter timings (a GPU call of a few minutes)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default: %(default)s)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $PIE_BENCH_THREADS, else 1 with --quick, else torch's)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the VAE/WAE on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile model.loss in the training steps")
    p.add_argument("--compile-levers", action="store_true",
                   help="also time torch.compile in the levers section (slow to warm up on a CPU)")
    p.add_argument("--metrics-csv", default="results/metrics.csv",
                   help="runner table for the eval-time target (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="MNIST folder (else $MNIST_ROOT, else ./data)")
    return p.parse_args(argv)


def format_tables(frame: pd.DataFrame) -> str:
    """One pivot table per section: rows (preset, model, width), columns metrics."""
    out = []
    for section in SECTIONS:
        part = frame[frame["section"] == section]
        if part.empty:
            continue
        if section == "targets":
            lines = [f"{r.metric:>26} {r.value:12.4g} {r.unit:<9} {r.note}" for r in part.itertuples()]
            out.append(f"== {section}\n" + "\n".join(lines))
            continue
        wide = part.pivot_table(index=["preset", "model", "width"], columns="metric", values="value",
                                aggfunc="first", sort=False)
        out.append(f"== {section}\n" + wide.to_string(float_format=lambda v: f"{v:.4g}"))
    return "\n\n".join(out)


def run(argv: list[str] | None = None, log=print) -> pd.DataFrame:
    args = parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for n in names:
        if n not in MODELS:
            raise UserError(f"unknown model '{n}' (valid models: {', '.join(MODELS)})")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise UserError(f"unknown section '{s}' (valid sections: {', '.join(SECTIONS)})")
    device = resolve_device(args.device)
    threads = args.threads or int(os.environ.get("PIE_BENCH_THREADS", 0)) or (1 if args.quick else 0)
    if threads:
        torch.set_num_threads(threads)
    notes = configure_device(device)
    budget = QUICK if args.quick else SHORT if args.short else FULL
    cfg = load_config(args.config)
    paper = load_config(args.paper_config)
    presets = [(cfg, False), (paper, True)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = load_mnist(args.data_root, cfg.data.val_size, cfg.data.val_seed, device)
    n_train = cfg.data.train_subset or data.train_images.shape[0]
    info = machine(device)
    log(f"bench.perf on {info['device_name']} ({device.type}), {info['threads']} threads, torch "
        f"{info['torch_version']}{' [quick]' if args.quick else ''}")
    for note in notes:
        log(note)
    load_start = load_average()
    cores = os.cpu_count() or 1
    if load_start > 0.5 * cores:
        notes.append(f"warning: load average {load_start:.1f} on {cores} cores when starting: other processes "
                     "compete for the CPU, so timings are unreliable (with several torch threads they can be many "
                     "times slower; --threads 1 or OMP_WAIT_POLICY=PASSIVE limit the damage)")
        log(notes[-1])

    rows: list[Row] = []
    t0 = time.perf_counter()
    if "data" in sections:
        rows += bench_data(cfg, data, device, budget, args.data_root, log)
    if "model" in sections:
        rows += bench_models(names, presets, data, device, budget, args, log)
    if "harness" in sections:
        rows += bench_harness(names, cfg, data, device, budget, args, log)
    if "metrics" in sections:
        rows += bench_metrics(names, cfg, data, device, budget, log)
    if "evalshare" in sections:
        rows += bench_eval_share(names, cfg, data, device, args.data_root, args.quick, log)
    if "householder" in sections:
        rows += bench_householder(names, presets, data, device, budget, log)
    if "levers" in sections:
        rows += bench_levers(names, cfg, data, device, budget, args, log)
    if "peer" in sections:
        rows += bench_peer(names, cfg, data, device, budget, log)
    if "machine" in sections:
        rows = machine_rows(cfg.preset, load_start, load_average()) + rows
    frame = pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=list(Row.__dataclass_fields__))
    if "targets" in sections:
        extra = targets(frame, cfg, names, n_train, Path(args.metrics_csv))
        frame = pd.concat([frame, pd.DataFrame([dataclasses.asdict(r) for r in extra])], ignore_index=True)
    for key, value in info.items():
        frame[key] = value
    frame["batch"] = frame["batch"].astype("Int64")
    frame = frame[list(COLUMNS)]
    write_csv_atomic(out, frame)
    log("")
    log(format_tables(frame))
    log("")
    for note in notes:
        log(note)
    log(f"wrote {len(frame)} rows to {out} in {time.perf_counter() - t0:.0f} s")
    return frame


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv, log=lambda *a: print(*a, flush=True))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

