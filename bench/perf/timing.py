"""Device settings, device-synchronised timers and FLOP counting shared by every section."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.config import Config
from bench.errors import UserError
from bench.train import use_bf16_autocast


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


def uses_bf16(cfg: Config, model: nn.Module, bf16: bool) -> bool:
    """``--bf16``: bf16 autocast where the training loop would use it with ``train.bf16`` set to
    ``bf16`` (models whose contract allows it, any device; PIE stays fp32)."""
    return use_bf16_autocast(dataclasses.replace(cfg.train, bf16=bf16), model)


def autocast(enabled: bool, device: torch.device):
    """bf16 autocast on ``device`` (as :func:`bench.train.train_model` does), or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


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
