"""The checkpoint directory of a :func:`kerasprune.trim` run: files written atomically.

A directory holds ``trim_state.json`` (what the run is, its history, which round is kept) and
one ``round_NNN.keras`` per accepted round. Every file is written to a temporary file in the
same directory, flushed to disk, and renamed over its final name (``os.replace``, atomic on
POSIX and Windows): a run killed at any instant leaves every final file either as it was or
complete, never half-written. A model file is written before the state that names it, so the
state never names a missing model. Temporary files a killed run left behind (``.tmp-*``) are
ignored and removed by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

__all__ = ["FORMAT", "STATE", "load_model", "model_digest", "model_file", "prepare",
           "read_state", "save_atomically", "save_model", "write_state"]

STATE = "trim_state.json"
"""The state file's name."""
FORMAT = "kerasprune.trim/1"
"""The state file's format tag (a state of another format is refused)."""
_TMP = ".tmp-"


def model_file(r: int) -> str:
    """The file name of round ``r``'s model."""
    return f"round_{r:03d}.keras"


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory; os.replace is durable there
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_path(directory: Path, name: str) -> Path:
    return directory / f"{_TMP}{os.getpid()}-{name}"


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def prepare(directory: str | os.PathLike[str]) -> Path:
    """Create the directory if needed, remove temporary files left by a killed run, and
    refuse a directory that holds other files but no trim state."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir {str(path)!r} is a file, not a directory")
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob(f"{_TMP}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
    if not (path / STATE).exists():
        others = sorted(p.name for p in path.iterdir())
        if others:
            raise ValueError(
                f"checkpoint_dir {str(path)!r} holds files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}) but no {STATE}: it is not a trim "
                "checkpoint; pass an empty or a new directory")
    return path


def write_state(directory: Path, state: Mapping[str, Any]) -> None:
    """Write the state file atomically."""
    tmp = _tmp_path(directory, STATE)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, **state}, f, indent=1, sort_keys=True)
    _replace(tmp, directory / STATE)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The state file's content, or ``None`` if there is none."""
    path = directory / STATE
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the trim state {str(path)!r}: {err}; delete the "
                         "directory to start over") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise ValueError(f"{str(path)!r} is not a trim state of format {FORMAT!r} (found "
                         f"{found!r}); pass another checkpoint_dir")
    return state


def save_model(model: keras.Model, directory: Path, r: int) -> str:
    """Save round ``r``'s model atomically; its file name."""
    name = model_file(r)
    save_atomically(model, directory / name)
    return name


def save_atomically(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """``model.save(path)`` through a temporary file in the same directory and a rename: the
    file at ``path`` is never half-written."""
    final = Path(path)
    tmp = _tmp_path(final.parent, final.name)  # ends in .keras, as model.save requires
    model.save(tmp)
    _replace(tmp, final)


def load_model(directory: Path, name: str) -> keras.Model:
    """Load a model the run saved (uncompiled: the caller compiles it)."""
    path = directory / name
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise ValueError(f"cannot load the checkpoint model {str(path)!r}: "
                         f"{type(err).__name__}: {err} (a custom layer must be registered, "
                         "e.g. with @keras.saving.register_keras_serializable())") from err


def model_digest(model: keras.Model) -> str:
    """SHA-256 of a model's class, config and every weight (name, shape, dtype, bytes)."""
    digest = hashlib.sha256()
    digest.update(type(model).__name__.encode())
    digest.update(json.dumps(model.get_config(), sort_keys=True, default=repr).encode())
    for w in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(w.value))
        digest.update(f"{w.path}:{array.shape}:{array.dtype}".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()
