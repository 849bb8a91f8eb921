"""Sections ``pie_profile`` and ``pie_speed``: where PIE's training step spends its time, and what
each speed lever buys, side by side with the VAE's FLOP rate.

``pie_profile``
    ``torch.profiler`` over a few training steps (forward, backward, fused Adam) at 1 and 2
    threads: each operator's share of the step's self time, its calls per step and the part of
    the model it comes from (:data:`SOURCES`). The breakdown to re-measure after each change.
``pie_speed``
    Bare training steps of PIE in alternation (one process, same weights, same batches): the
    eager step as it trains today (the reference) against each lever, at 1 and 2 threads, for
    the CPU preset's widths and the paper's. Rows: images/s and GFLOP/s of each variant, its
    speed-up over the reference, the VAE's GFLOP/s in the same process and thread count, and the
    ratio PIE/VAE that the target (>= 0.7) is judged on. Then encoding and sampling, eager
    against compiled. Levers that did not pay stay in the table (their speed-up near 1).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.config import Config
from bench.data import ImageData
from bench.perf.common import Budget, Row, bare_step_fn, make_batches, new_model, train_dtype, width_label
from bench.perf.machine import load_average
from bench.perf.timing import interleaved_steps, sync, training_flops_per_image
from models.flows.coupling import AffineCoupling

# Where each operator of a PIE step comes from (the op's name without "aten::"); the rest is "other".
SOURCES = {
    "convolution_backward": "sub-network and g convs, backward (3x3/1x1, 2-16 channels)",
    "mkldnn_convolution": "sub-network and g convs, forward; Householder 1x1 convs",
    "threshold_backward": "ReLU of the sub-networks, backward",
    "clamp_min": "ReLU of the sub-networks, forward",
    "mul": "coupling scale (Eq. 18), tanh clamp, residual density",
    "mm": "Householder matrices (Eq. 19) and MLP couplings",
    "addmm": "MLP couplings and g (linear blocks)",
    "cat": "coupling output halves; split merge",
    "copy_": "dtype/format copies (wrapped scalars, channels-last)",
    "_to_copy": "wrapped Python scalars made tensors",
    "add": "coupling shift, log-det sums",
    "sum": "log-det and residual sums",
    "_fused_adam_": "Adam (one fused kernel)",
    "tanh": "scale clamp s = exp(c tanh(a/c))",
    "exp": "coupling scale",
}
PROFILE_TOP = 12


def _pie_step(cfg: Config, data: ImageData, device: torch.device, batch: int, compile_loss: bool = False,
              model: nn.Module | None = None) -> tuple[nn.Module, Callable[[], None], torch.Tensor]:
    """(model, one bare training step, its first batch) of PIE at ``cfg``."""
    model = model if model is not None else new_model("pie", cfg, device)
    batches = make_batches(data.train_images, batch, 4, model.preprocessing, train_dtype(cfg))
    return model, bare_step_fn(model, cfg, batches, False, compile_loss), batches[0]


def bench_pie_profile(cfg: Config, data: ImageData, device: torch.device, budget: Budget,
                      threads: list[int], log=print) -> list[Row]:
    """Top operators of PIE's training step by self time, per thread count."""
    from torch.profiler import ProfilerActivity, profile

    rows: list[Row] = []
    batch = budget.batch or cfg.train.batch_size
    steps = max(2, min(5, budget.max_steps))
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        _, step, _ = _pie_step(cfg, data, device, batch)
        for _ in range(budget.warmup + 1):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        total = sum(e.self_cpu_time_total for e in events)
        calls = sum(e.count for e in events) / steps
        base = {"section": "pie_profile", "model": "pie", "preset": cfg.preset, "width": width_label(cfg.models["pie"])}
        note = f"{n_threads} thread(s); {steps} profiled steps; aten calls per step {calls:.0f}"
        rows.append(Row(**base, metric=f"aten_calls_per_step[{n_threads}t]", value=calls, unit="count",
                        batch=batch, note=note))
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:PROFILE_TOP]:
            op = e.key.removeprefix("aten::")
            rows.append(Row(**base, metric=f"self_share[{op},{n_threads}t]", value=e.self_cpu_time_total / total,
                            unit="fraction", batch=batch,
                            note=f"{e.count / steps:.0f} calls/step; from: {SOURCES.get(op, 'other')}"))
        top = rows[-min(PROFILE_TOP, len(events)):][:3]
        log(f"  pie_profile {n_threads}t: {calls:.0f} aten calls/step; top: "
            + ", ".join(r.metric.split("[")[1].split(",")[0] + f" {r.value:.0%}" for r in top))
    return rows


def _fused_coupling_forward(self: AffineCoupling, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 18 with fewer kernels (addcmul, one multiply for the clamp): a lever that did not pay."""
    x1, x2 = x.split([self.c1, self.c2], dim=1)
    c = self.scale_clamp
    a, b = self.net1(x2).split([self.c1, self.c1], dim=1)
    log_s1 = torch.tanh(a * (1.0 / c)) * c
    y1 = torch.addcmul(b, torch.exp(log_s1), x1)
    a, b = self.net2(y1).split([self.c2, self.c2], dim=1)
    log_s2 = torch.tanh(a * (1.0 / c)) * c
    y2 = torch.addcmul(b, torch.exp(log_s2), x2)
    dims = tuple(range(1, x.dim()))
    return torch.cat([y1, y2], 1), log_s1.sum(dims) + log_s2.sum(dims)


def _variant(model: nn.Module, lever: str) -> nn.Module:
    """A copy of ``model`` (same weights) with one eager lever applied."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if lever == "relu_inplace" and isinstance(m, nn.ReLU):
            m.inplace = True
        if lever == "fused_coupling" and isinstance(m, AffineCoupling) and not m.additive:
            m.forward = _fused_coupling_forward.__get__(m)
    return out


def bench_pie_speed(presets: list[tuple[Config, bool]], data: ImageData, device: torch.device, budget: Budget,
                    opts: argparse.Namespace, threads: list[int], log=print) -> list[Row]:
    """PIE's training step, eager (reference) against each lever, and the VAE's FLOP rate, per thread count."""
    rows: list[Row] = []
    for cfg, big in presets:
        few = big and device.type == "cpu"
        batch = budget.batch or cfg.train.batch_size
        steps = 1 if few else budget.lever_steps
        reps = min(budget.lever_reps, 3) if few else budget.lever_reps
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            ref, ref_step, first = _pie_step(cfg, data, device, batch)
            flops = training_flops_per_image(ref, first)  # once: every variant has the same arithmetic
            fns = {"eager": ref_step}
            for lever in ("relu_inplace", "fused_coupling"):
                fns[lever] = _pie_step(cfg, data, device, batch, model=_variant(ref, lever))[1]
            compile_s = None
            if not opts.quick:  # inductor's first compile takes minutes on a CPU: not in the smoke benchmark
                compiled = _pie_step(cfg, data, device, batch, compile_loss=True, model=copy.deepcopy(ref))[1]
                t0 = time.perf_counter()
                compiled()
                sync(device)
                compile_s = time.perf_counter() - t0
                fns["compile"] = compiled
            vae = new_model("vae", cfg, device)
            vae_batches = make_batches(data.train_images, batch, 4, vae.preprocessing, train_dtype(cfg))
            vae_flops = training_flops_per_image(vae, vae_batches[0])
            fns["vae"] = bare_step_fn(vae, cfg, vae_batches, False, False)
            times = {k: statistics.median(v) for k, v in
                     interleaved_steps(fns, device, reps=reps, steps=steps, warmup=budget.warmup).items()}
            vae_gflops = vae_flops * batch / times.pop("vae") / 1e9
            base = {"section": "pie_speed", "model": "pie", "preset": cfg.preset,
                    "width": width_label(cfg.models["pie"])}
            note = (f"{n_threads} thread(s); median of {reps} interleaved rounds of {steps} step(s); "
                    f"load average {load_average():.1f} after")
            rows.append(Row(section="pie_speed", model="vae", preset=cfg.preset, width=width_label(cfg.models["vae"]),
                            metric=f"train_gflops_per_s[{n_threads}t]", value=vae_gflops, unit="GFLOP/s",
                            batch=batch, note=note))
            if compile_s is not None:
                rows.append(Row(**base, metric=f"compile_warmup_seconds[{n_threads}t]", value=compile_s, unit="s",
                                batch=batch, note="first compiled step (inductor cache may be warm)"))
            for name, t in times.items():
                gflops = flops * batch / t / 1e9
                rows += [
                    Row(**base, metric=f"train_images_per_s[{name},{n_threads}t]", value=batch / t, unit="images/s",
                        batch=batch, note=note),
                    Row(**base, metric=f"train_gflops_per_s[{name},{n_threads}t]", value=gflops, unit="GFLOP/s",
                        batch=batch, note=note),
                    Row(**base, metric=f"speedup_vs_eager[{name},{n_threads}t]", value=times["eager"] / t, unit="x",
                        batch=batch, note=note),
                    Row(**base, metric=f"gflops_ratio_to_vae[{name},{n_threads}t]", value=gflops / vae_gflops,
                        unit="x", batch=batch, note=note + "; target >= 0.7"),
                ]
            log(f"  pie_speed {cfg.preset} {n_threads}t: " + ", ".join(
                f"{k} {flops * batch / t / 1e9 / vae_gflops:.2f}x VAE" for k, t in times.items()))
            rows += _inference_rows(ref, cfg, device, budget, few, n_threads, base, compile_on=not opts.quick)
    return rows


def _inference_rows(model: nn.Module, cfg: Config, device: torch.device, budget: Budget, few: bool,
                    n_threads: int, base: dict, compile_on: bool) -> list[Row]:
    """Encoding and sampling images/s, eager against compiled (inference mode, evaluation batch)."""
    batch = budget.batch or (cfg.train.batch_size if few else cfg.eval.batch_size)
    model = model.eval()
    x = torch.rand(batch, *model.image_shape, device=device).contiguous(memory_format=torch.channels_last)
    fns = {"encode[eager]": lambda: model.encode(x), "sample[eager]": lambda: model.sample(batch)}
    if compile_on:
        # Sampling compiled is decode compiled: the draw of z stays outside (dynamo cannot trace
        # randn under inference mode once shapes turn dynamic), and it is not where the time goes.
        encode_c, decode_c = torch.compile(model.encode, dynamic=False), torch.compile(model.decode, dynamic=False)
        fns |= {"encode[compile]": lambda: encode_c(x),
                "sample[compile]": lambda: decode_c(torch.randn(batch, model.latent_dim, device=device))}
    with torch.inference_mode():
        times = {k: statistics.median(v) for k, v in interleaved_steps(
            fns, device, reps=2 if few else budget.lever_reps, steps=1 if few else budget.lever_steps,
            warmup=budget.warmup).items()}
    note = f"{n_threads} thread(s); inference mode, channels-last input"
    rows = [Row(**base, metric=f"{k.replace('[', '_images_per_s[')[:-1]},{n_threads}t]", value=batch / t,
                unit="images/s", batch=batch, note=note) for k, t in times.items()]
    for what in ("encode", "sample") if compile_on else ():
        rows.append(Row(**base, metric=f"{what}_speedup_vs_eager[compile,{n_threads}t]",
                        value=times[f"{what}[eager]"] / times[f"{what}[compile]"], unit="x", batch=batch,
                        note=note + "; target >= 2"))
    return rows
