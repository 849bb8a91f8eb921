"""Section ``machine``: cores and load average (on a shared CPU the timings mean little)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from bench.perf.common import Row


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux), else the platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_columns(device: torch.device) -> dict[str, object]:
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


def machine_rows(preset: str, load_start: float, load_end: float, omp_wait_policy: str = "unset") -> list[Row]:
    """How busy the machine was: on a shared CPU, timings mean little (and more threads can be far slower).
    ``omp_wait_policy``: ``$OMP_WAIT_POLICY`` as the command's context found it."""
    base = {"section": "machine", "model": "-", "preset": preset, "width": "-"}
    env = omp_wait_policy
    return [
        Row(**base, metric="cpu_count", value=float(os.cpu_count() or 1), unit="cores"),
        Row(**base, metric="load_avg_start", value=load_start, unit="runnable",
            note=f"1-minute load average when the benchmark started; OMP_WAIT_POLICY={env}"),
        Row(**base, metric="load_avg_end", value=load_end, unit="runnable",
            note="1-minute load average when it ended"),
    ]
