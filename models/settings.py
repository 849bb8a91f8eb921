"""A setting's range, declared next to its field: ``epochs: int = setting(10, ge=1)``.

Every field of a config dataclass (the harness's sections and each registered model's) is
declared with :func:`setting`, which stores a :class:`Range` in the field's metadata. The config
loader checks each value against it and names the key in one line; :func:`check_declared`
refuses a dataclass with a field that has none, so a new setting cannot be added without saying
which values make sense. Metadata does not enter run identities (``bench.identity`` hashes values).

Plain data, no harness imports: models and baselines declare their own ranges here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

RANGE_KEY = "range"  # the metadata key under which a field's Range is stored


@dataclass(frozen=True)
class Range:
    """The values a setting may take. Bounds apply to a number, or to every item of a list;
    ``length`` bounds a list's length; ``unbounded`` says on purpose that any finite number is fine.
    Booleans, ``Literal`` choices and strings need no bounds: their type lists their values."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    length: tuple[int, int | None] | None = None  # (fewest, most or None) items of a list
    unbounded: bool = False

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.ge, self.gt, self.le, self.lt)) or self.unbounded

    def describe(self) -> str:
        """``>= 1``, ``> 0 and < 0.5``, ... (empty when unbounded)."""
        parts = [f"{op} {_num(b)}" for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if b is not None]
        return " and ".join(parts)

    def problem(self, value: Any) -> str:
        """Why ``value`` (already of the field's type) is out of range; "" when it is in range.
        Lists report their first bad item as ``[i] ...``."""
        if isinstance(value, list):
            lo, hi = self.length or (0, None)
            if len(value) < lo or (hi is not None and len(value) > hi):
                want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
                return f"must hold {want} item(s), got {len(value)}"
            for i, item in enumerate(value):
                why = self.problem(item)
                if why:
                    return f"[{i}] {why}"
            return ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return ""
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        bad = ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
               or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))
        return f"must be {self.describe()}, got {value}" if bad else ""


def _num(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
            length: tuple[int, int | None] | None = None, unbounded: bool = False) -> Any:
    """A dataclass field with a default and its :class:`Range` (see the module docstring)."""
    rng = Range(ge=ge, gt=gt, le=le, lt=lt, length=length, unbounded=unbounded)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={RANGE_KEY: rng})


# The default [C, H, W] of a model config's ``image_shape`` (MNIST's and Fashion-MNIST's). The harness
# sets every model's from its dataset's row of the dataset table, so this serves models built by hand.
DEFAULT_IMAGE_SHAPE = (1, 28, 28)


def image_shape_setting() -> Any:
    """The ``image_shape: list[int]`` field of a model config: the per-sample shape [C, H, W] of its
    images. The harness fills it from the dataset (``data.dataset``), never from the model section."""
    return setting(default_factory=lambda: list(DEFAULT_IMAGE_SHAPE), ge=1, le=4096, length=(3, 3))


def field_range(f: dataclasses.Field) -> Range | None:
    """The range declared for field ``f`` (None if it has none)."""
    rng = f.metadata.get(RANGE_KEY)
    return rng if isinstance(rng, Range) else None


def _is_numeric(tp: Any) -> bool:
    """Whether values of type ``tp`` are numbers (or lists of them) that need bounds."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return False
    if origin in (typing.Union, types.UnionType, list):
        return any(_is_numeric(a) for a in typing.get_args(tp) if a is not type(None))
    return tp in (int, float)


def check_declared(cls: type) -> None:
    """TypeError naming the first field of dataclass ``cls`` declared without a range (or, for a
    number, without any bound or ``unbounded=True``). Called when a section or model is registered."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        rng = field_range(f)
        if rng is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no declared range: declare it with "
                            f"models.settings.setting(default, ge=..., ...)")
        if _is_numeric(hints[f.name]) and not rng.bounded:
            raise TypeError(f"{cls.__name__}.{f.name} is a number without bounds: give ge/gt/le/lt, "
                            f"or unbounded=True if any finite value is fine")
