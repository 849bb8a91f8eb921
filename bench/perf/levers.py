"""Section ``levers``: each speed lever on and off, timed in alternation."""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections.abc import Callable

import torch

from bench import evaluate as E
from bench.config import Config
from bench.data import ImageData
from bench.perf.common import Budget, Row, bare_step_fn, make_batches, new_model, train_dtype, width_label
from bench.perf.timing import interleaved_steps, uses_bf16


def _lever_step(name: str, cfg: Config, device: torch.device, batches: list[torch.Tensor], *,
                channels_last: bool, fused: bool, bf16: bool = False, compile_loss: bool = False) -> Callable[[], None]:
    tcfg = dataclasses.replace(cfg.train, channels_last=channels_last, fused_adam=fused)
    model = new_model(name, cfg, device)
    return bare_step_fn(model, dataclasses.replace(cfg, train=tcfg), batches, bf16, compile_loss)


def bench_levers(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                 opts: argparse.Namespace, log=print) -> list[Row]:
    """Each speed lever on/off, measured in alternation in one process (ratios, robust to a loaded machine).

    Training (bare step at ``--config``, fp32 unless stated): contiguous + foreach Adam (the
    baseline), channels-last, fused Adam, both (the harness default), both with bf16 autocast
    (``train.bf16``; only for models whose contract allows it, on any device) and, with
    ``--compile-levers``, torch.compile on top of both. On a CPU bf16 pays only with native bf16
    instructions (AVX512-BF16 / AMX), reported as ``cpu_native_bf16``; ``--bf16`` does not apply here.
    Evaluation: a whole :func:`bench.evaluate.evaluate_model` with ``eval.channels_last`` off/on.
    """
    rows: list[Row] = []
    batch = budget.batch or cfg.train.batch_size
    for name in names:
        base = {"section": "levers", "model": name, "preset": cfg.preset, "width": width_label(cfg.models[name])}
        probe = new_model(name, cfg, device)
        batches = make_batches(data.train_images, batch, 4, probe.preprocessing, train_dtype(cfg))
        variants = {
            "baseline": dict(channels_last=False, fused=False),
            "channels_last": dict(channels_last=True, fused=False),
            "fused_adam": dict(channels_last=False, fused=True),
            "channels_last+fused_adam": dict(channels_last=True, fused=True),
        }
        if uses_bf16(cfg, probe, True):
            variants["channels_last+fused_adam+bf16"] = dict(channels_last=True, fused=True, bf16=True)
        if opts.compile_levers:
            variants["channels_last+fused_adam+compile"] = dict(channels_last=True, fused=True, compile_loss=True)
        steps = {k: _lever_step(name, cfg, device, batches, **v) for k, v in variants.items()}
        times = interleaved_steps(steps, device, budget.lever_reps, budget.lever_steps, budget.warmup)
        t_base = statistics.median(times["baseline"])
        for k, ts in times.items():
            t = statistics.median(ts)
            rows.append(Row(**base, metric=f"train_ratio[{k}]", value=t_base / t, unit="x", batch=batch,
                            note=f"bare step images/s vs contiguous + foreach Adam ({batch / t:.0f} vs "
                            f"{batch / t_base:.0f} img/s); median of {len(ts)} interleaved rounds of "
                            f"{budget.lever_steps} steps" + (_bf16_note(device) if "bf16" in k else "")))
        log(f"  levers {name}: " + ", ".join(f"{k} {t_base / statistics.median(ts):.2f}x" for k, ts in times.items()))
        rows += _eval_lever(name, cfg, data, device, budget, base, log)
    return rows


def cpu_native_bf16() -> bool | None:
    """Whether oneDNN runs bf16 natively on this CPU (None when this torch cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def _bf16_note(device: torch.device) -> str:
    if device.type != "cpu":
        return "; bf16 autocast (numbers change: opt-in train.bf16)"
    native = cpu_native_bf16()
    return ("; bf16 autocast (numbers change: opt-in train.bf16); on a CPU it pays only with native bf16 "
            f"(AVX512-BF16 / AMX): {'present' if native else 'absent' if native is False else 'unknown'} here")



def _eval_lever(name: str, cfg: Config, data: ImageData, device: torch.device, budget: Budget, base: dict,
                log=print) -> list[Row]:
    n = budget.metric_images
    ecfg = dataclasses.replace(cfg.eval, n_samples=n, test_subset=n, probe_train_size=n,
                               kid_subset_size=min(cfg.eval.kid_subset_size, n // 2),
                               bpd_subset=min(cfg.eval.bpd_subset, n), batch_size=budget.batch or cfg.eval.batch_size)
    model = new_model(name, cfg, device)
    evaluator = E.Evaluator()  # the classifier (shipped) and the real-image statistics, kept after the warm-up
    E.evaluate_model(model, data, ecfg, seed=0, evaluator=evaluator)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    values: dict[bool, dict[str, float]] = {}
    for _ in range(2):
        for cl in (False, True):
            model = new_model(name, cfg, device)
            t = time.perf_counter()
            got, _ = E.evaluate_model(model, data, dataclasses.replace(ecfg, channels_last=cl), seed=0,
                                      evaluator=evaluator)
            seconds[cl].append(time.perf_counter() - t)
            values[cl] = {r.metric: r.value for r in got}
    diff = max((abs(values[True][k] - v) / max(abs(v), 1e-12) for k, v in values[False].items() if math.isfinite(v)),
               default=0.0)
    ratio = min(seconds[False]) / min(seconds[True])
    log(f"  levers {name}: evaluation channels_last {ratio:.2f}x (largest relative change of a metric {diff:.1e})")
    return [Row(**base, metric="eval_ratio[channels_last]", value=ratio, unit="x", batch=ecfg.batch_size,
                note=f"evaluate_model on {n} images, contiguous / channels-last seconds (best of 2 each, "
                f"interleaved); largest relative change of a metric {diff:.1e}")]
