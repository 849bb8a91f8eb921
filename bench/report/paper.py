"""The paper's numbers as data: ``paper_mnist.yaml`` next to this file, read by :func:`paper_numbers` on
its first call (importing the report reads no file).

Each value there carries ``cite`` (the table, figure or section of the PIE paper that states
it); loading fails on a value without one, so a number cannot enter the report unsourced.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PAPER_FILE = Path(__file__).with_name("paper_mnist.yaml")


@dataclass(frozen=True)
class Paper:
    title: str
    dataset: str  # the only dataset the paper reports; its column and markers appear for it alone
    table1_latent: int  # Table 1's latent dimension
    table1_n_samples: int  # generated images per model behind Table 1's sharpness
    sharpness: dict[str, float]  # Table 1, row (registry model name or "real") -> sharpness, paper's row order
    sharpness_notes: tuple[str, ...]  # how a printed value was read, where it needed reading
    fig7_latent: int
    fig7_eps2: tuple[float, ...]  # Fig. 7's columns
    fig7_second_temperature: float  # Fig. 7c's N(0, 0.5), a variance


def _value(entry: Any, where: str) -> Any:
    if not isinstance(entry, dict) or "value" not in entry or not entry.get("cite"):
        raise ValueError(f"{PAPER_FILE.name}: {where} needs a value and a cite, got {entry!r}")
    return entry["value"]


def load_paper(path: Path = PAPER_FILE) -> Paper:
    raw = yaml.safe_load(path.read_text())
    t1, f7 = raw["table1"], raw["fig7"]
    rows = t1["sharpness"]
    return Paper(
        title=raw["paper"],
        dataset=raw["dataset"],
        table1_latent=int(_value(t1["latent_dim"], "table1.latent_dim")),
        table1_n_samples=int(_value(t1["n_samples"], "table1.n_samples")),
        sharpness={row: float(_value(e, f"table1.sharpness.{row}")) for row, e in rows.items()},
        sharpness_notes=tuple(e["note"] for e in rows.values() if e.get("note")),
        fig7_latent=int(_value(f7["latent_dim"], "fig7.latent_dim")),
        fig7_eps2=tuple(float(v) for v in _value(f7["eps2"], "fig7.eps2")),
        fig7_second_temperature=float(_value(f7["second_temperature"], "fig7.second_temperature")),
    )



@functools.cache  # the file ships with the package and does not change while a process runs
def paper_numbers() -> Paper:
    """The paper's numbers (:data:`PAPER_FILE`), read on the first call."""
    return load_paper()
