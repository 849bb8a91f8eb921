"""Text helpers of the report pages: number formats, markdown tables, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.results import atomic_write_bytes


def fmt_num(x: float, digits: int = 4) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def fmt_mean_std(mean: float, std: float, n: int) -> str:
    """``mean ± std`` (4 and 2 significant digits); just the mean for a single run; n/a for none."""
    if n == 0 or mean is None or not np.isfinite(mean):
        return "n/a"
    if n < 2 or std is None or not np.isfinite(std):
        return fmt_num(mean)
    return f"{fmt_num(mean)} ± {fmt_num(std, 2)}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def eps_label(eps2: float) -> str:
    return repr(float(eps2))


def list_text(values) -> str:
    vals = [str(v) for v in values]
    return ", ".join(vals) if vals else "none"


def and_list(words: list[str]) -> str:
    """``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
