"""The run context: what a command takes from its flags and the environment, resolved once in its ``main``.

Every ``python -m bench.*`` command builds one :class:`Context` with :func:`resolve` and passes it
down; this is the only module that reads ``os.environ``, so a library call behaves the same
whatever the environment holds, and a worker process or Ray task gets the driver's settings by
being handed the (picklable) context. Precedence everywhere: flag, then variable, then default.

==========================  ==========================================================
``--data-root``             the dataset's files (every dataset the command loads)
``$MNIST_ROOT``,            the dataset's own folder (``bench.datasets``: ``root_env``)
``$FASHION_MNIST_ROOT``
``$PIE_BENCH_CACHE``        trained feature extractors (default ``~/.cache/pie-bench``)
``$PIE_BENCH_OFFLINE=1``    never download a missing dataset
``$PIE_BENCH_THREADS``      torch CPU threads (``--threads`` where a command has it)
``$PIE_BENCH_RAY_CPUS``     CPUs per Ray run (``--ray-cpus``); parsed by the Ray executor
``$RAY_ADDRESS``            the Ray cluster (``--ray-address``)
==========================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cli import positive_int
from bench.datasets import DATASETS, get_dataset

CACHE_ENV = "PIE_BENCH_CACHE"
OFFLINE_ENV = "PIE_BENCH_OFFLINE"
THREADS_ENV = "PIE_BENCH_THREADS"
RAY_CPUS_ENV = "PIE_BENCH_RAY_CPUS"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
OMP_WAIT_POLICY_ENV = "OMP_WAIT_POLICY"  # not ours: recorded by bench.perf next to its timings
DEFAULT_CACHE_DIR = Path("~/.cache/pie-bench")  # in the home of the machine that uses it (Ray: each node)


class Memo:
    """What one process has already done and need not do again: data files verified (by path,
    size, mtime and dataset), feature extractors loaded (by cache key and device) and its evaluator.

    Owned by a :class:`Context`; it never travels: a pickled context arrives with an empty one,
    so a worker verifies and loads for itself.
    """

    def __init__(self) -> None:
        self.verified: set[tuple[str, int, int, str]] = set()
        self.extractors: dict[tuple[str, str], Any] = {}
        self.evaluator: Any = None  # bench.evaluate.Evaluator.of: the real-image statistics computed

    def __reduce__(self):
        return (Memo, ())


@dataclass(frozen=True)
class Context:
    """Settings of one command, from its flags and the environment (see the module docstring)."""

    data_root: str | None = None  # --data-root: wins for every dataset
    env_roots: tuple[tuple[str, str], ...] = ()  # (dataset, its $<ROOT_ENV>) as the command found them
    cache_dir: Path | None = None  # None: DEFAULT_CACHE_DIR
    offline: bool = False
    threads: int | None = None  # None: torch's own default
    progress: bool = True
    ray_cpus: str | None = None  # as given: only --executor ray parses it (and refuses a bad one)
    ray_address: str | None = None
    omp_wait_policy: str = "unset"
    memo: Memo = field(default_factory=Memo, init=False, repr=False, compare=False)

    @property
    def cache_folder(self) -> Path:
        """Where trained feature extractors are kept: ``$PIE_BENCH_CACHE``, else ``~/.cache/pie-bench`` here."""
        return (self.cache_dir or DEFAULT_CACHE_DIR).expanduser()

    def root(self, dataset: str = "mnist") -> Path:
        """The folder of ``dataset``'s files: ``--data-root``, else its variable, else its default folder."""
        spec = get_dataset(dataset)
        return Path(self.data_root or dict(self.env_roots).get(spec.name) or spec.default_root)


def _threads(text: str | None, where: str) -> int | None:
    """A thread count from a flag or variable; empty or absent is unset (None)."""
    if text is None or text.strip() == "":
        return None
    return positive_int(text, where)


def resolve(
    *, data_root: str | None = None, cache_dir: str | Path | None = None, offline: bool | None = None,
    threads: int | None = None, progress: bool = True, ray_cpus: float | None = None,
    ray_address: str | None = None, environ: Mapping[str, str] | None = None,
) -> Context:
    """The context of a command: each flag given (not None) wins over its variable, which wins
    over the default. ``environ`` defaults to the process's environment (tests pass their own).
    A bad value is a :class:`UserError` (one ``error:`` line, exit 2)."""
    env = os.environ if environ is None else environ
    roots = tuple((name, env[spec.root_env]) for name, spec in DATASETS.items() if env.get(spec.root_env))
    if threads is not None:
        n_threads = _threads(str(threads), "--threads")
    else:
        n_threads = _threads(env.get(THREADS_ENV), f"${THREADS_ENV}")
    return Context(
        data_root=data_root or None,
        env_roots=roots,
        cache_dir=Path(cache_dir or env.get(CACHE_ENV)) if cache_dir or env.get(CACHE_ENV) else None,
        offline=offline if offline is not None else env.get(OFFLINE_ENV) == "1",
        threads=n_threads,
        progress=progress,
        ray_cpus=str(ray_cpus) if ray_cpus is not None else env.get(RAY_CPUS_ENV) or None,
        ray_address=ray_address or env.get(RAY_ADDRESS_ENV) or None,
        omp_wait_policy=env.get(OMP_WAIT_POLICY_ENV, "unset"),
    )


def child_environ(**overrides: str) -> dict[str, str]:
    """The environment for a child command (``bench.gpu`` starts runners): this process's, with
    ``overrides``; the child resolves its own context from it."""
    return {**os.environ, **overrides}
