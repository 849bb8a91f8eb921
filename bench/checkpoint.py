"""Checkpoints of the training loop: atomic saves with a fall-back, safe loading, RNG states.

A checkpoint holds the model, optimiser and scheduler states, every RNG stream, the epoch and
step, and the history rows (``train_log.csv``) so far. It is written at the end of every epoch
(:func:`save_checkpoint`; the previous one is kept) and read with ``weights_only=True``
(:func:`load_checkpoint`): tensors and plain data only, so loading can never run code.
"""

from __future__ import annotations

import io
import os
import pickletools
import random
from pathlib import Path

import numpy as np
import torch

from bench.errors import UserError
from bench.results import open_temp

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREV = "checkpoint.prev.pt"


def _numpy_state() -> dict:
    """NumPy's global RNG state as tensors and plain numbers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: dict) -> None:
    np.random.set_state((state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached_gaussian"]))


def _plain(obj):
    """``obj`` with NumPy scalars and str/int/float subclasses (e.g. torch's TorchVersion) turned into
    plain Python types, so that a checkpoint holding it loads with ``weights_only=True``."""
    if isinstance(obj, dict):
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj] if isinstance(obj, list) else tuple(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    return obj


def _rng_state(gen: torch.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(), "numpy": _numpy_state(),
        "python": random.getstate(), "batches": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    _set_numpy_state(state["numpy"])
    random.setstate(state["python"])
    gen.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, payload: dict) -> None:
    """Atomic save keeping the previous good checkpoint as a fall-back.

    The new checkpoint is written whole to a temporary file of its own first; then the
    current one becomes the previous one and the new one takes its name, each by one
    ``os.replace``. Safe against a concurrent writer: temporary names never collide, and
    a current checkpoint that vanished in between (rotated by the other writer) is fine.
    """
    buf = io.BytesIO()
    torch.save(payload, buf)
    fd, tmp = open_temp(run_dir / CHECKPOINT)  # mode as the umask says; locked while written
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
            try:
                os.replace(run_dir / CHECKPOINT, run_dir / CHECKPOINT_PREV)
            except FileNotFoundError:  # the first checkpoint, or another writer just rotated it
                pass
            os.replace(tmp, run_dir / CHECKPOINT)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's current format is a zip archive
PICKLE_SNIFF_BYTES = 1 << 20  # how much of a file is parsed as pickle opcodes (never executed)


def _is_pickle(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) begins with a complete pickle: a legacy
    (pre-zip) ``torch.save`` file starts with one, a raw ``pickle.dump`` is one. The opcodes
    are only walked (:func:`pickletools.genops`), never run."""
    if len(head) >= 2 and head[0] == 0x80 and 1 <= head[1] <= 5:  # PROTO opcode: a pickle, whatever follows
        return True
    try:
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(io.BytesIO(head)))
    except Exception:  # not a sequence of pickle opcodes: corrupt bytes
        return False


def _refuse_if_unsafe(path: Path) -> None:
    """UserError if the checkpoint is not in the current safe format (a legacy ``torch.save`` file
    or a raw pickle), or names objects other than tensors and plain data (read from its pickle
    without building anything). A file that is neither (truncated, corrupt) passes: the caller
    falls back to the previous checkpoint. The refused file is left as it is, never overwritten."""
    with open(path, "rb") as fh:
        head = fh.read(PICKLE_SNIFF_BYTES)
    restart = (f"move it away (or delete {CHECKPOINT} and {CHECKPOINT_PREV} in '{path.parent}') to restart "
               "that run")
    if not head.startswith(ZIP_MAGIC):
        if _is_pickle(head):
            raise UserError(f"checkpoint '{path}' is a pickle (a legacy torch.save file or a raw pickle), not the "
                            f"current zip format; refusing to load it (it could run code) and leaving it as it is: "
                            f"{restart}")
        return  # corrupt bytes: not crafted
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a readable torch.save zip: corrupt, not crafted
        return
    if unsafe:
        raise UserError(f"checkpoint '{path}' holds objects other than tensors and plain data "
                        f"({', '.join(unsafe[:3])}); refusing to load it (loading could run code): {restart}")


def check_checkpoints(run_dir: Path) -> None:
    """UserError if a checkpoint of ``run_dir`` would be refused by :func:`load_checkpoint`
    (the runner asks before it starts anything); corrupt files pass (they fall back)."""
    for name in (CHECKPOINT, CHECKPOINT_PREV):
        path = run_dir / name
        if path.is_file():
            _refuse_if_unsafe(path)


def load_checkpoint(run_dir: Path, log=print) -> dict | None:
    """Newest readable checkpoint, falling back to the previous one; None if neither.

    Loaded with ``weights_only=True``: tensors and plain Python data only, so unpickling can
    never run code. A checkpoint that is not in the current format (a legacy ``torch.save``
    file, a raw pickle) or names anything else (a crafted file: a pickled callable, or a
    foreign object) is refused with a :class:`UserError` instead of being skipped, since
    silently restarting would hide it and overwrite it; a truncated or corrupt one is reported
    and the previous checkpoint (else a fresh start) is used.
    """
    for name in (CHECKPOINT, CHECKPOINT_PREV):
        path = run_dir / name
        if not path.exists():
            continue
        _refuse_if_unsafe(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated / corrupt file: report and fall back
            log(f"warning: checkpoint '{path}' is unreadable ({type(e).__name__}); falling back")
    return None
