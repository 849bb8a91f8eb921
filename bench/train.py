"""The one training loop for every model: Adam, piecewise lr schedule, clipping, checkpoints.

The model is only used through ``model.loss(x)["loss"]``. Checkpoints are written at
the end of every epoch (atomically; the previous one is kept; :mod:`bench.checkpoint`), so a
killed run resumes from its last epoch and, on CPU, ends with the same numbers as an
uninterrupted run of the same seed. A run with no checkpoint of its own continues from
the newest checkpoint of a *shorter* run of the same configuration in the same results
directory (:func:`shorter_runs`): the lr schedule is set by epoch milestones, not by the
epoch count, and the data order and RNG states are in the checkpoint, so training 20 more
epochs on top of a finished 20-epoch run equals training 40 from scratch. A non-finite
loss or gradient raises :class:`Diverged` naming the step and the loss part.

With ``train.until_converged`` a run trains ``train.epochs`` epochs, then goes on epoch by
epoch until the convergence rule (:mod:`bench.convergence`) holds on its learning curves
(the ``track_*`` columns the ``on_epoch_end`` tracker adds), or until ``train.max_epochs``.
The rule is judged before each further epoch, on the history the checkpoint holds, so a
resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import convergence
from bench.checkpoint import (  # noqa: F401  (re-exported: the loop's checkpoints are part of its API)
    CHECKPOINT,
    CHECKPOINT_PREV,
    _plain,
    _rng_state,
    _set_rng_state,
    check_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from bench.config import TrainConfig
from bench.data import ImageData, iterate_batches, preprocess
from bench.record import RunRecord
from bench.results import write_csv_atomic
from bench.rundir import CONFIG
from bench.train_time import total_train_seconds

# Why a run stopped training (TrainResult.stopped_by).
STOPPED_EPOCHS, STOPPED_CONVERGED, STOPPED_CAP = "epochs", "converged", "cap reached"

# Where train_model calls its ``hook(event)``, in this order every epoch: "epoch_start" before
# the first batch is drawn, "step_end" after each optimiser step, then each "<phase>_start" /
# "<phase>_end" pair around the validation loss, the train_log.csv write and the checkpoint.
HOOK_EVENTS = ("epoch_start", "step_end", "validation_start", "validation_end", "log_start", "log_end",
               "checkpoint_start", "checkpoint_end")


class Diverged(RuntimeError):
    """A non-finite loss or gradient; ``step`` and ``part`` say where."""

    def __init__(self, step: int, part: str):
        super().__init__(f"non-finite {part} at step {step}")
        self.step, self.part = step, part


@dataclass
class TrainResult:
    # one row per epoch: epoch, step, lr, train_<part>..., val_loss, seconds (since this process
    # started training), epoch_seconds (that epoch alone: steps, validation, on_epoch_end)
    history: pd.DataFrame
    final_parts: dict[str, float] = field(default_factory=dict)  # last epoch's mean train parts
    val_loss: float = float("nan")
    resumed_from_epoch: int = 0
    seconds: float = 0.0  # wall time of training in this process
    stopped_by: str = STOPPED_EPOCHS  # STOPPED_EPOCHS, or with until_converged STOPPED_CONVERGED / STOPPED_CAP

    @property
    def epochs_trained(self) -> int:
        return int(self.history["epoch"].max()) if len(self.history) else 0

    def total_seconds(self) -> tuple[float, str]:
        """(seconds, how) of the whole training, summed over every process that trained it
        (:func:`bench.train_time.total_train_seconds`)."""
        return total_train_seconds(self.history, self.resumed_from_epoch, self.seconds)


def lr_factor(epoch: int, milestones: list[int], factors: list[float]) -> float:
    """Product of the factors whose milestone epoch has been reached."""
    out = 1.0
    for m, f in zip(milestones, factors, strict=True):
        if epoch >= m:
            out *= f
    return out


def use_bf16_autocast(cfg: TrainConfig, model: torch.nn.Module) -> bool:
    """bf16 autocast only when asked (``train.bf16``) and only for models whose contract allows it
    (``allows_bf16``; flows keep their log-dets in fp32), on any device: on CUDA, and on a CPU,
    where it pays only with native bf16 (AVX512-BF16 / AMX; ``bench.perf`` section ``levers``)."""
    return bool(cfg.bf16 and getattr(model, "allows_bf16", False))


def shorter_runs(run_dir: Path, record: RunRecord) -> list[Path]:
    """The sibling run directories of ``run_dir`` that hold a checkpoint and whose record is a
    shorter run of ``record``'s configuration (:meth:`bench.record.RunRecord.extends`): the longest first.

    Such a checkpoint is where this run would be after that many epochs (same seed, model, data,
    schedule, RNG state), so this run can start there, unless this run would have stopped
    earlier (:func:`_why_not_a_prefix`, checked on the checkpoint).
    """
    found: list[tuple[int, str, Path]] = []
    for cfg_path in run_dir.parent.glob(f"*/{CONFIG}"):
        other = cfg_path.parent
        if other == run_dir or not ((other / CHECKPOINT).is_file() or (other / CHECKPOINT_PREV).is_file()):
            continue
        shorter = RunRecord.read(other)  # a damaged one reads as None (the runner named it once at start)
        if shorter is not None and record.extends(shorter):
            found.append((shorter.train.planned_epochs(), other.name, other))
    return [p for _, _, p in sorted(found, key=lambda t: (-t[0], t[1]))]


def shorter_run(run_dir: Path, record: RunRecord) -> Path | None:
    """The first of :func:`shorter_runs` (None if there is none)."""
    runs = shorter_runs(run_dir, record)
    return runs[0] if runs else None


def converged(history: list[dict] | pd.DataFrame) -> bool:
    """Whether the convergence rule (:func:`bench.convergence.judge`) holds on these history rows."""
    frame = history if isinstance(history, pd.DataFrame) else pd.DataFrame(history)
    return convergence.judge(frame).converged


def _why_not_a_prefix(ckpt: dict, cfg: TrainConfig) -> str:
    """Why another run's checkpoint is not this run's state after as many epochs ("" when it is):
    it lies beyond this run's last epoch, or the rule held at an epoch where this run stops."""
    epoch = int(ckpt["epoch"])
    if epoch > cfg.planned_epochs():
        return f"its epoch {epoch} lies beyond this run's {cfg.planned_epochs()}"
    if cfg.until_converged:
        frame = pd.DataFrame(ckpt["history"])
        for e in range(cfg.epochs, epoch):
            if converged(frame[frame["epoch"] <= e]):
                return f"the convergence rule held at epoch {e}, where this run stops"
    return ""


def _starting_checkpoint(run_dir: Path, record: RunRecord | None, cfg: TrainConfig, extend_shorter: bool,
                         log) -> dict | None:
    """The run's own checkpoint, else (``extend_shorter`` and a ``record``) that of the longest
    shorter run it extends."""
    ckpt = load_checkpoint(run_dir, log)
    if ckpt is not None or not extend_shorter or record is None:
        return ckpt
    for source in shorter_runs(run_dir, record):
        ckpt = load_checkpoint(source, log)
        if ckpt is None:
            continue
        why = _why_not_a_prefix(ckpt, cfg)
        if why:
            log(f"{run_dir.name}: not continuing from {source.name}: {why}")
            continue
        log(f"{run_dir.name}: continuing from {source.name} (a shorter run of the same configuration) "
            f"at epoch {ckpt['epoch']}")
        return ckpt
    return None


def _first_nonfinite(parts: dict[str, torch.Tensor]) -> str | None:
    for name, value in parts.items():
        if not torch.isfinite(value).all():
            return name
    return None


def train_model(
    model: torch.nn.Module,
    data: ImageData,
    cfg: TrainConfig,
    *,
    seed: int,
    run_dir: Path,
    record: RunRecord | None = None,
    progress: bool = False,
    log=print,
    on_epoch_end: Callable[[torch.nn.Module, int], dict[str, float]] | None = None,
    extend_shorter: bool = True,
    hook: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.train_images``; resume from ``run_dir`` if it holds a checkpoint.

    ``on_epoch_end(model, epoch)`` (epoch counted from 1) runs after each epoch's
    validation loss; the values it returns join that epoch's history row, so they are
    written to ``train_log.csv`` and checkpointed (a resumed run keeps them). It must
    leave the training RNG streams untouched and may leave the model in eval mode.
    ``record``: the run's ``config.json`` (:mod:`bench.record`), kept in its checkpoints.
    ``extend_shorter``: without a checkpoint of its own, start from that of the longest of
    :func:`shorter_runs` of ``record`` that this run extends. With ``cfg.until_converged`` the rule is judged
    on the history (so ``on_epoch_end`` must add the ``track_*`` columns: :mod:`bench.tracking`).

    ``hook(event)`` is called at each of :data:`HOOK_EVENTS` (bench.perf times the loop's
    steps and per-epoch work with it). It is given only the event's name and must leave the
    model, the optimiser and the RNG streams alone; it runs once per step, so keep it cheap.
    """
    device = data.train_images.device
    dtype = torch.float64 if cfg.float64 else torch.float32
    model.to(device=device, dtype=dtype)
    # Channels-last convolutions are faster on CPU (oneDNN) and on GPU; results move ~1e-7 per step.
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=cfg.fused_adam or None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: lr_factor(e, cfg.lr_milestones, cfg.lr_factors)
    )
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    loss_fn = torch.compile(model.loss) if cfg.compile else model.loss
    # A sync per step costs nothing on CPU; on an accelerator, check every log_every steps.
    check_every = 1 if device.type == "cpu" else max(1, cfg.log_every)
    autocast = use_bf16_autocast(cfg, model)

    images = data.train_images
    history: list[dict] = []
    start_epoch, step, resumed_from = 0, 0, 0
    ckpt = _starting_checkpoint(run_dir, record, cfg, extend_shorter, log)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], gen)
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        resumed_from = start_epoch
        log(f"resuming {run_dir.name} from epoch {start_epoch}")

    hook = hook or _no_hook
    t0 = time.perf_counter()
    steps_per_epoch = images.shape[0] // cfg.batch_size
    last = cfg.planned_epochs()
    for epoch in range(start_epoch, last):
        if cfg.until_converged and epoch >= cfg.epochs and converged(history):
            break  # judged before each further epoch: a run resumed here stops here too
        model.train()
        epoch_t0 = time.perf_counter()
        sums: torch.Tensor | None = None  # running sums of the loss parts, one tensor op per step
        names: list[str] = []
        n_batches = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"{run_dir.name} epoch {epoch + 1}/{last}",
                       leave=False)
        hook("epoch_start")
        for x in iterate_batches(images, cfg.batch_size, gen, model.preprocessing, dtype):
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                parts = loss_fn(x)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            step += 1
            n_batches += 1
            names = list(parts)
            values = torch.stack([v.detach().float() for v in parts.values()])
            if step % check_every == 0 or n_batches == steps_per_epoch:
                # One finiteness test for every part and the gradient norm; name the culprit only on failure.
                if not bool(torch.isfinite(torch.cat([values, gnorm.detach().float().view(1)])).all()):
                    bad = _first_nonfinite(dict(zip(names, values, strict=True))) or "gradient norm"
                    raise Diverged(step, bad)
            opt.step()
            sums = values if sums is None else sums + values
            if bar is not None and step % max(1, cfg.log_every) == 0:
                bar.set_postfix(loss=f"{float(values[names.index('loss')]):.4f}")
                bar.update(cfg.log_every)
            hook("step_end")
        if bar is not None:
            bar.close()
        sched.step()
        if n_batches == 0:
            raise ValueError(f"train.batch_size {cfg.batch_size} exceeds the {images.shape[0]} training images")
        row = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"]}
        row.update({f"train_{k}": float(v) / n_batches for k, v in zip(names, sums.tolist(), strict=True)})
        hook("validation_start")
        row["val_loss"] = validation_loss(model, data, cfg, dtype, seed)
        hook("validation_end")
        if on_epoch_end is not None:
            row.update(on_epoch_end(model, epoch + 1))
            model.train()
        row["seconds"] = time.perf_counter() - t0
        row["epoch_seconds"] = time.perf_counter() - epoch_t0
        history.append(row)
        log(f"{run_dir.name} epoch {epoch + 1}/{last} loss {row['train_loss']:.4f} "
            f"val {row['val_loss']:.4f}")
        log_frame = pd.DataFrame(history)
        hook("log_start")
        write_csv_atomic(run_dir / "train_log.csv", log_frame)
        hook("log_end")
        payload = {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng": _rng_state(gen), "epoch": epoch + 1,
            "step": step, "history": _plain(history), "config": _plain(record.to_dict() if record else {}),
        }
        hook("checkpoint_start")
        save_checkpoint(run_dir, payload)
        hook("checkpoint_end")
    frame = pd.DataFrame(history)
    final_row = history[-1] if history else {}
    final = {k[len("train_"):]: v for k, v in final_row.items() if k.startswith("train_")}
    stopped_by = STOPPED_EPOCHS
    if cfg.until_converged:
        stopped_by = STOPPED_CONVERGED if converged(frame) else STOPPED_CAP
    return TrainResult(frame, final, final_row.get("val_loss", float("nan")), resumed_from,
                       time.perf_counter() - t0, stopped_by)


def _no_hook(event: str) -> None:
    """The default ``hook`` of :func:`train_model`: nothing."""


@torch.inference_mode()
def validation_loss(model, data: ImageData, cfg: TrainConfig, dtype, seed: int) -> float:
    """Mean loss on the held-out validation images (fixed dequantisation noise), in batches of the
    training batch size: on one CPU thread 1.2-1.6x faster than chunks of 1 000 images. A loss
    that is a batch statistic (the WAE's MMD) is thereby measured as in training; the VAE's and
    PIE's values differ from 1 000-image chunks by float rounding only (~1e-8 relative)."""
    if data.val_images.shape[0] == 0:
        return float("nan")
    model.eval()
    gen = torch.Generator(device=data.val_images.device).manual_seed(seed + 7919)
    device = data.val_images.device
    total, n = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 7919)  # the loss may draw noise; keep training RNG untouched
        for start in range(0, data.val_images.shape[0], cfg.batch_size):
            batch = data.val_images[start:start + cfg.batch_size]
            x = preprocess(batch, model.preprocessing, gen, dtype)
            total += float(model.loss(x)["loss"]) * batch.shape[0]
            n += batch.shape[0]
    model.train()
    return total / n

