"""Checkpoint files: written atomically, read safely.

Every checkpoint is written to a temporary file in the same folder, flushed to disk, and then
renamed over the target, so a crash leaves either the old file or the new one, never half a file.
Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(..., weights_only=True)``.

Wherever a checkpoint is expected, a run directory is accepted too: its best checkpoint
(``best.pt``), else its last one (``last.pt``), is used.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cacl.errors import CaclError
from cacl.files import chmod_like_new_file

BEST, LAST = "best.pt", "last.pt"


class CheckpointError(CaclError):
    """A checkpoint is missing or cannot be read."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        chmod_like_new_file(tmp)
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resolve_checkpoint(path: str | os.PathLike, prefer: str = BEST) -> Path:
    """A checkpoint file, or the ``prefer`` (then the other) checkpoint of a run directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in (prefer, LAST if prefer == BEST else BEST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no {BEST} or {LAST} in run directory {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | os.PathLike, prefer: str = BEST) -> dict[str, Any]:
    """Load a checkpoint (file or run directory) on the CPU with ``weights_only=True``."""
    file = resolve_checkpoint(path, prefer)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {file}: the file is damaged or is not a cacl checkpoint "
            f"({type(exc).__name__})"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} is not a cacl checkpoint")
    state["_path"] = str(file)
    return state


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch global RNG states, in weights_only-safe types."""
    np_state = np.random.get_state()
    state = {
        "python": _tuple_to_list(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_list_to_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuple_to_list(value: Any) -> Any:
    return [_tuple_to_list(v) for v in value] if isinstance(value, tuple | list) else value


def _list_to_tuple(value: Any) -> Any:
    return tuple(_list_to_tuple(v) for v in value) if isinstance(value, list) else value
