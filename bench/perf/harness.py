"""Section ``harness``: the real training loop against the bare loop, per model."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.config import Config
from bench.data import ImageData
from bench.perf.common import Budget, Row, bare_step_fn, make_batches, new_model, subset, train_dtype, width_label
from bench.perf.timing import sync, time_calls, uses_bf16

# The per-epoch work of bench.train.train_model: its hook events "<phase>_start" / "<phase>_end".
PHASES = ("validation", "log", "checkpoint")


class StepProbe:
    """The ``hook`` of :func:`bench.train.train_model` that times one epoch (device-synchronised).

    ``marks[j + 1] - marks[j]`` is the loop's whole step ``j``: indexing and preprocessing the
    batch, forward, backward, clipping, finite checks, optimiser step (``marks[0]`` is taken
    before the first batch is drawn). ``fixed[phase]`` holds the seconds of each per-epoch
    phase: validation loss, train log, checkpoint.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[float] = []
        self.fixed = dict.fromkeys(PHASES, 0.0)
        self._started: dict[str, float] = {}

    def __call__(self, event: str) -> None:
        sync(self.device)
        now = time.perf_counter()
        if event in ("epoch_start", "step_end"):
            self.marks.append(now)
            return
        phase, _, edge = event.rpartition("_")
        if edge == "start":
            self._started[phase] = now
        else:
            self.fixed[phase] += now - self._started.pop(phase)


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
        bf16 = uses_bf16(cfg, model, opts.bf16)
        batches = make_batches(data.train_images, batch, 8, model.preprocessing, train_dtype(cfg))
        bare_step = bare_step_fn(model, cfg, batches, bf16, opts.compile)

        def bare_run(step=bare_step):
            return time_calls(step, device, warmup=budget.warmup, min_steps=budget.harness_steps,
                              max_steps=budget.harness_steps, seconds=0.0)

        bare = bare_run()
        # The real loop on the same number of steps.
        model = new_model(name, cfg, device)
        probe = StepProbe(device)
        with tempfile.TemporaryDirectory(prefix="pie-perf-") as tmp:
            run_dir = Path(tmp) / name
            run_dir.mkdir()
            result = train_model(model, sliced, tcfg, seed=0, run_dir=run_dir,
                                 progress=False, log=lambda *a, **k: None, hook=probe)
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
                f"{probe.fixed['validation']:.3g} s + checkpoint {probe.fixed['checkpoint']:.3g} s "
                f"+ train log {probe.fixed['log']:.3g} s"),
            Row(**base, metric="harness_epoch_ratio", value=epoch_ratio, unit="x", batch=cfg.train.batch_size,
                note=f"projected for a full epoch of {full_steps} steps, per-epoch work included"),
            Row(**base, metric="harness_run_images_per_s", value=run_ips, unit="images/s", batch=batch,
                note=f"whole train_model call on {len(probe.marks) - 1} steps: warm-up and per-epoch work "
                "included (not amortised)"),
        ]
        log(f"  harness {name}: bare {batch / t_bare:7.1f} img/s, loop {batch / t_harness:7.1f} img/s, "
            f"ratio {ratio:.3f} (full epoch {epoch_ratio:.3f}), per-epoch {per_epoch:.2f} s")
    return rows
