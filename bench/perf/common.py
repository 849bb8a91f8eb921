"""What every section shares: the CSV schema (:class:`Row`, :data:`COLUMNS`), the targets,
the measurement budgets and the helpers that build models, batches and bare training steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from bench.config import Config
from bench.data import ImageData, preprocess
from bench.perf.timing import autocast
from bench.registry import build_model
from bench.results import write_csv_atomic

DEFAULT_CONFIG = "configs/default.yaml"
PAPER_CONFIG = "configs/paper.yaml"
SMOKE_CONFIG = "configs/smoke.yaml"
SECTIONS = ("machine", "model", "harness", "data", "metrics", "evalshare", "householder", "levers", "peer",
            "pie_profile", "pie_speed", "targets")
COLUMNS = ("section", "model", "preset", "width", "metric", "value", "unit", "batch", "note",
           "device", "device_name", "threads", "torch_version")

# Targets of the project (issue "Fast on one machine").
TARGET_DATA_RATIO = 20.0
TARGET_HARNESS_RATIO = 0.9
TARGET_EVAL_FRACTION = 0.2
TARGET_RUN_ALL_SECONDS = 30 * 60
TARGET_PEER_RATIO = 1.5  # training throughput vs Pythae's BaseTrainer on the same nets and batch
TARGET_PIE_GFLOPS_RATIO = 0.7  # PIE's GFLOP/s over the VAE's, same process and thread count
TARGET_PIE_INFERENCE_SPEEDUP = 2.0  # encoding and sampling over the eager reference
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
    peer_val_images: int = 0  # validation images of our peer epoch (0 = the whole validation split)
    peer_reps: int = 3  # interleaved (ours fp32, Pythae, ours bf16) epochs per model; the ratio takes medians
    batch: int | None = None


FULL = Budget()
# A device call of a few minutes (bench.gpu): enough steps for a median, no 10-s windows.
SHORT = Budget(warmup=3, min_steps=5, max_steps=40, seconds=2.0, big_max_steps=40, harness_steps=20,
               val_images=1000, lever_reps=3, lever_steps=4, peer_images=11000, peer_reps=3, metric_images=2000,
               bpd_images=200)
QUICK = Budget(warmup=1, min_steps=2, max_steps=2, seconds=0.0, big_max_steps=2, harness_steps=3,
               data_batches=20, loader_batches=10, metric_images=300, bpd_images=40, householder_reps=3,
               val_images=40, batch=4, lever_reps=2, lever_steps=2, peer_images=40, peer_val_images=40, peer_reps=1)


@dataclass
class Row:
    """One measurement: the CSV's columns but the machine's (added by :func:`write_table`)."""

    section: str
    model: str
    preset: str
    width: str
    metric: str
    value: float
    unit: str
    batch: int | None = None
    note: str = ""



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
        with autocast(bf16, x.device):
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


def rows_frame(rows: list[Row]) -> pd.DataFrame:
    """The rows as a table with :class:`Row`'s columns (also when there are none)."""
    return pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=list(Row.__dataclass_fields__))


def write_table(path: Path, rows: list[Row], machine: dict[str, object],
                keep: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write the benchmark's CSV (atomically): ``keep`` (rows of an earlier run, in section order) and
    ``rows`` plus the ``machine`` columns, in :data:`COLUMNS` order."""
    frame = rows_frame(rows)
    for key, value in machine.items():
        frame[key] = value
    if keep is not None and len(keep):
        frame = pd.concat([keep[list(COLUMNS)], frame[list(COLUMNS)]], ignore_index=True)
        order = {s: i for i, s in enumerate(SECTIONS)}
        frame = frame.sort_values("section", key=lambda s: s.map(order).fillna(len(order)), kind="stable")
    frame["batch"] = frame["batch"].astype("Int64")
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    write_csv_atomic(path, frame)
    return frame
