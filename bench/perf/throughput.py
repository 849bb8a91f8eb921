"""Section ``model``: training and sampling images/s, FLOPs per image and GFLOP/s of every model."""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from bench.config import Config
from bench.data import ImageData
from bench.perf.common import Budget, Row, bare_step_fn, make_batches, new_model, train_dtype, width_label
from bench.perf.timing import autocast, count_flops, time_calls, training_flops_per_image, uses_bf16


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
            bf16 = uses_bf16(cfg, model, opts.bf16)
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
    with torch.inference_mode(), autocast(bf16, device):
        flops = count_flops(lambda: model.sample(n)) / n
        times = time_calls(lambda: model.sample(n), device, warmup=1, min_steps=2 if few else budget.min_steps,
                           max_steps=budget.big_max_steps if few else budget.max_steps, seconds=budget.seconds)
    return flops, times
