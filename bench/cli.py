"""What every ``python -m bench.*`` command shares: bad input is one ``error: ...`` line and exit 2.

A command parses with :class:`Parser` and wraps its ``main`` in :func:`user_errors_exit_2`;
anything that raises :class:`~bench.errors.UserError` (a flag, a config value, a missing file)
then ends the command the same way, never with a traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from bench.errors import UserError

# Exit statuses of every python -m bench.* command (docs/damage.md).
EXIT_OK = 0
EXIT_FAILED = 1  # bench.run: a run failed; bench.report: a figure could not be drawn
EXIT_BAD_INPUT = 2  # one "error: ..." line on stderr; nothing was written
EXIT_DAMAGED = 3  # done, but damaged files were found and contained: see the "warning:" lines
EXIT_STATUS_HELP = ("exit status: 0 done; 1 {failed}; 2 bad input (one 'error:' line, nothing written); "
                    "3 done, but damaged files were found in the results directory and contained (each "
                    "named in a 'warning:' line{where}; see docs/damage.md)")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UserErrors: one line, exit 2 (argparse's own prints usage too)."""

    def error(self, message):
        raise UserError(message)


def user_errors_exit_2(main: Callable[..., int]) -> Callable[..., int]:
    """``main``, with a UserError printed as ``error: ...`` on stderr and returned as exit code 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return wrapped


def comma_list(text: str) -> list[str]:
    """``"pie, vae,,wae"`` -> ``["pie", "vae", "wae"]``: a comma-separated flag's non-empty items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def unique(values: list[Any]) -> list[Any]:
    """``values`` without repeats, in order; ``1`` and ``1.0`` (or ``True``) count as different."""
    out: list[Any] = []
    for v in values:
        if not any(v == w and type(v) is type(w) for w in out):
            out.append(v)
    return out


def positive_int(text: str, flag: str) -> int:
    """``text`` as an integer >= 1, else a UserError naming ``flag``."""
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"{flag} must be a positive integer, got '{text}'") from None
    if n < 1:
        raise UserError(f"{flag} must be a positive integer, got '{text}'")
    return n
