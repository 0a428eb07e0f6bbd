"""Atomic checkpoints of a training run, and their checks on loading."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from poincare._optional import optional_imports
from training.config import ARCHITECTURE_KEYS, DATA_KEYS

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_compatible",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "hyperbolic-video-future-prediction"
CHECKPOINT_VERSION = 1
_REQUIRED = (
    "format",
    "version",
    "config",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "epoch",
    "batch",
    "step",
    "history",
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, or made with other settings."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a temporary file in the same folder, which is flushed, fsynced and then
    renamed over ``path`` with ``os.replace``; a reader sees the old file or the new one, never
    a partial one.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def get_rng_state() -> dict[str, Any]:
    """The states of torch's (CPU and CUDA), Python's and numpy's global generators.

    Stored with tensors and plain Python values only, so that ``torch.load(weights_only=True)``
    can read it back.
    """
    with optional_imports("numpy", extra="train", purpose="a checkpoint's generator states"):
        import numpy as np

    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {
            "version": py_state[0],
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss": py_state[2],
        },
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`get_rng_state`."""
    with optional_imports("numpy", extra="train", purpose="a checkpoint's generator states"):
        import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Save ``payload`` (see :func:`load_checkpoint` for its keys) atomically to ``path``.

    ``format`` and ``version`` are added. Raises ``ValueError`` if a required key is missing.
    """
    missing = [k for k in _REQUIRED if k not in payload and k not in ("format", "version")]
    if missing:
        raise ValueError(f"payload lacks the keys {missing}")

    full = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    buf = io.BytesIO()
    torch.save(full, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on the CPU).

    It holds ``config`` (the run's settings), ``model``, ``optimizer`` and ``scheduler`` state
    dicts, ``rng`` (:func:`get_rng_state`), ``epoch`` (the epoch in progress), ``batch``
    (batches of it already done), ``step`` (batches done in all), ``history`` (one metrics dict
    per finished epoch) and the loop's counters.

    Raises:
        CheckpointError: the file does not exist, cannot be unpickled (truncated, corrupt, not
            a checkpoint), or lacks a required entry; the message names the file and the cause.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint_last.pt"
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to unpickle means an unusable file
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or not a checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'})"
        ) from e
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a checkpoint of this training loop")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has version {obj.get('version')}, expected {CHECKPOINT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {str(p)!r} is incomplete: it lacks {missing}")
    obj["path"] = str(p)
    return obj


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path: str) -> list[str]:
    """Compare a checkpoint's config with the current one.

    Raises :class:`CheckpointError` naming every architecture or data setting that differs
    (e.g. ``use_transformer: checkpoint True, this run False``); returns human-readable notes
    for other settings that differ (which a resumed run takes from the current config).
    """
    bad = [
        f"{k}: checkpoint {json.dumps(saved.get(k))}, this run {json.dumps(current.get(k))}"
        for k in (*ARCHITECTURE_KEYS, *DATA_KEYS)
        if saved.get(k) != current.get(k)
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {path!r} was made with other settings: " + "; ".join(bad)
        )
    skip = {"resume", "out", "progress", "num_workers", "device", "threads", "compile"}
    return [
        f"{k}: checkpoint {json.dumps(saved.get(k))}, this run {json.dumps(current.get(k))}"
        for k in sorted(set(saved) | set(current))
        if k not in skip and k not in ARCHITECTURE_KEYS and saved.get(k) != current.get(k)
    ]
