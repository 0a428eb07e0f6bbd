"""Atomic checkpoints of a training run, and their checks on loading.

Writing: :func:`atomic_write_bytes` writes a temporary file ``.<name>.tmp-<pid>`` beside the
target and renames it over the target; a failure (a full disk, an I/O error) leaves the previous
file intact, removes the temporary and raises :class:`CheckpointWriteError`. A process killed
mid-write can leave only the temporary, which :func:`training.run_folder.remove_stale_temporaries`
deletes (its name matches :data:`TEMPORARY_NAME`).

Reading: :func:`load_checkpoint` checks that a file is a checkpoint of this loop,
:func:`check_compatible` that it was made with the same architecture and data settings, and
:func:`validate_checkpoint` that its contents fit the model and optimiser about to receive them
(keys, shapes and dtypes of every tensor, the optimiser's groups, the counters, the generator
states), so that a wrong file gives a one-line :class:`CheckpointError` instead of a traceback
from deep inside ``load_state_dict``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from poincare._optional import optional_imports
from training.checkpoint_integrity import archive_problem, value_problems
from training.config import ARCHITECTURE_KEYS, DATA_KEYS, INVOCATION_KEYS, TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "TEMPORARY_NAME",
    "CheckpointError",
    "CheckpointWriteError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_compatible",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "temporary_path",
    "validate_checkpoint",
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


#: The name of the temporary file that :func:`atomic_write_bytes` writes before its rename:
#: ``.<target name>.tmp-<pid>`` (groups: the target's name and the writer's pid).
TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, or made with other settings."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint (or another run file) could not be written; the previous file is intact."""


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


def temporary_path(target: str | os.PathLike[str], pid: int | None = None) -> Path:
    """The temporary file of :func:`atomic_write_bytes` for ``target`` in process ``pid``
    (default: this one): ``<folder>/.<name>.tmp-<pid>``, matched by :data:`TEMPORARY_NAME`."""
    t = Path(target)
    return t.with_name(f".{t.name}.tmp-{os.getpid() if pid is None else pid}")


def _write_file(path: Path, data: bytes) -> None:
    """Create (or truncate) ``path`` and write ``data`` to it, flushed and fsynced."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _os_error_text(e: OSError) -> str:
    """``No space left on device (errno 28)``: the reason of ``e``, and its errno if any."""
    reason = e.strerror or (os.strerror(e.errno) if e.errno else "") or str(e) or type(e).__name__
    return f"{reason} (errno {e.errno})" if e.errno else reason


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, what: str | None = None
) -> None:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a temporary file in the same folder (:func:`temporary_path`), which is
    flushed, fsynced and then renamed over ``path`` with ``os.replace``; a reader sees the old
    file or the new one, never a partial one.

    Args:
        path: the file to (re)place.
        data: its new contents.
        what: what the file is, for the error message; default ``checkpoint`` for a ``.pt``
            file, else ``file``.

    Raises:
        CheckpointWriteError: an ``OSError`` while writing or renaming (a full disk: ``No space
            left on device (errno 28)``, an I/O error, a read-only folder). ``path`` keeps its
            previous contents (or stays absent) and the temporary file is removed; the one-line
            message names ``path`` and the cause.
    """
    target = Path(path)
    if what is None:
        what = "checkpoint" if target.suffix == ".pt" else "file"
    tmp = temporary_path(target)
    existed = target.exists()
    try:
        _write_file(tmp, data)
        os.replace(tmp, target)
    except OSError as e:
        kept = f"the previous {what} is intact" if existed else "no partial file was left"
        raise CheckpointWriteError(
            f"could not write {what} {str(target)!r}: {_os_error_text(e)}; {kept}"
        ) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, what: str | None = None) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8 (``what`` names it in errors)."""
    atomic_write_bytes(path, text.encode("utf-8"), what=what)


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


def _is_int(x: object) -> TypeGuard[int]:
    """An ``int`` that is not a ``bool``."""
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> TypeGuard[int | float]:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _describe(x: object) -> str:
    """``str '3'``: the type and (abridged) repr of ``x``, for a message."""
    text = repr(x)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(x).__name__} {text}"


def _shape(t: torch.Tensor | torch.Size) -> str:
    """``(4, 3)``: a shape as a tuple of ints."""
    return str(tuple(t.shape if isinstance(t, torch.Tensor) else t))


def _int_vector_problem(t: object, length: int, low: int, high: int) -> str | None:
    """Why ``t`` is not a 1-D integer tensor of ``length`` values in ``[low, high)``."""
    if not isinstance(t, torch.Tensor):
        return f"it is {_describe(t)}, not a tensor"
    if t.dtype != torch.int64 or t.dim() != 1 or t.numel() != length:
        return f"a {t.dtype} tensor of shape {_shape(t)}, expected torch.int64 of ({length},)"
    if int(t.min()) < low or int(t.max()) >= high:
        return f"values outside [{low}, {high})"
    return None


def _rng_problems(rng: object) -> list[str]:
    """What is wrong with a generator state of :func:`get_rng_state` (empty: nothing)."""
    if not isinstance(rng, Mapping):
        return [f"'rng' is {_describe(rng)}, not a dict of generator states"]
    if not rng:
        return ["the generator states 'rng' are empty (expected 'torch', 'python', 'numpy')"]
    problems: list[str] = []
    for name in ("torch", "python", "numpy"):
        if name not in rng:
            problems.append(f"the generator state 'rng.{name}' is missing")
        elif rng[name] is None or (isinstance(rng[name], (Mapping, list, tuple)) and not rng[name]):
            problems.append(f"the generator state 'rng.{name}' is empty")
    if problems:
        return problems

    t = rng["torch"]
    size = torch.get_rng_state().numel()
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.shape != (size,):
        got = f"{t.dtype} of shape {_shape(t)}" if isinstance(t, torch.Tensor) else _describe(t)
        problems.append(
            f"the generator state 'rng.torch' is malformed (expected a torch.uint8 tensor of "
            f"shape ({size},), got {got})"
        )
    cuda = rng.get("cuda", [])
    if not isinstance(cuda, (list, tuple)) or not all(
        isinstance(c, torch.Tensor) and c.dtype == torch.uint8 and c.dim() == 1 for c in cuda
    ):
        problems.append(
            "the generator state 'rng.cuda' is malformed (expected a list of torch.uint8 tensors)"
        )

    py = rng["python"]
    why: str | None = None
    if not isinstance(py, Mapping):
        why = f"it is {_describe(py)}, not a dict"
    elif missing := [k for k in ("version", "state", "gauss") if k not in py]:
        why = f"it lacks {missing}"
    elif not _is_int(py["version"]) or py["version"] != 3:
        why = f"version {_describe(py['version'])}, expected 3"
    elif py["gauss"] is not None and not _is_real(py["gauss"]):
        why = f"gauss is {_describe(py['gauss'])}, expected a float or None"
    else:
        why = _int_vector_problem(py["state"], 625, 0, 2**32)
    if why is not None:
        problems.append(f"the generator state 'rng.python' is malformed ({why})")

    n = rng["numpy"]
    why = None
    if not isinstance(n, Mapping):
        why = f"it is {_describe(n)}, not a dict"
    elif missing := [k for k in ("keys", "pos", "has_gauss", "cached_gaussian") if k not in n]:
        why = f"it lacks {missing}"
    elif not _is_int(n["pos"]) or not 0 <= n["pos"] <= 624:
        why = f"pos is {_describe(n['pos'])}, expected an int in [0, 624]"
    elif not _is_int(n["has_gauss"]) or n["has_gauss"] not in (0, 1):
        why = f"has_gauss is {_describe(n['has_gauss'])}, expected 0 or 1"
    elif not _is_real(n["cached_gaussian"]):
        why = f"cached_gaussian is {_describe(n['cached_gaussian'])}, expected a float"
    else:
        why = _int_vector_problem(n["keys"], 624, 0, 2**32)
    if why is not None:
        problems.append(f"the generator state 'rng.numpy' is malformed ({why})")
    return problems


def set_rng_state(state: dict[str, Any], *, path: str | None = None) -> None:
    """Restore the generators saved by :func:`get_rng_state`.

    The whole state is checked before any generator changes (an entry ``cuda`` may be absent).

    Raises:
        CheckpointError: ``state`` is malformed (not a dict, an entry missing, empty or of the
            wrong type or size). One line, naming ``path`` (the checkpoint) when given.
    """
    with optional_imports("numpy", extra="train", purpose="a checkpoint's generator states"):
        import numpy as np

    def fail(what: str) -> CheckpointError:
        if path is None:
            return CheckpointError(f"cannot restore the generators: {what}")
        return CheckpointError(f"checkpoint {path!r} does not fit this run: {what}")

    problems = _rng_problems(state)
    if problems:
        raise fail("; ".join(problems))
    try:
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda", [])
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
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
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        text = str(e).strip().splitlines()
        raise fail(
            f"the generator states are malformed ({type(e).__name__}: "
            f"{text[0] if text else 'no detail'})"
        ) from e


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

    The file is verified before it is unpickled, and its values after
    (:mod:`training.checkpoint_integrity`): every archive member must match the CRC-32 stored
    when it was written, and the model's and the optimiser's tensors must hold values a
    training run writes (finite; second moments and step counts not negative). The container
    is checked too (and that ``config`` is a dict of settings); check its contents against the
    model and optimiser with :func:`validate_checkpoint`.

    Raises:
        CheckpointError: the file does not exist or cannot be read, is damaged (a member fails
            its CRC check, non-finite weights or optimiser state, a negative second moment),
            cannot be unpickled (truncated, not a checkpoint), lacks a required entry or holds a
            ``config`` that is not a dict; the one-line message names the file and the cause.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint_last.pt"
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        damage = archive_problem(p)
    except OSError as e:
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read: {_os_error_text(e)}") from e
    if damage is not None:
        what = "corrupt or not a checkpoint" if damage.startswith("it is not") else "corrupt"
        raise CheckpointError(
            f"checkpoint {str(p)!r} is {what}: {damage}; it is not the file the trainer wrote"
        )
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
    config = obj["config"]
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt: its 'config' is {_describe(config)}, "
            "not a dict of settings"
        )
    problems = value_problems(obj)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt: " + "; ".join(problems[:3]) + more
        )
    obj["path"] = str(p)
    return obj


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path: str) -> list[str]:
    """Compare a checkpoint's config with the current one.

    Raises :class:`CheckpointError` naming every architecture or data setting that differs
    (e.g. ``use_transformer: checkpoint True, this run False``); returns human-readable notes
    for other settings that differ (which a resumed run takes from the current config). A
    setting that the checkpoint's config lacks (added to :class:`TrainConfig` later) counts as
    its default.
    """
    # a setting newer than the checkpoint was made with its default value
    saved = {**TrainConfig().to_dict(), **saved}
    bad = [
        f"{k}: checkpoint {json.dumps(saved.get(k))}, this run {json.dumps(current.get(k))}"
        for k in (*ARCHITECTURE_KEYS, *DATA_KEYS)
        if saved.get(k) != current.get(k)
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {path!r} was made with other settings: " + "; ".join(bad)
        )
    skip = {
        *INVOCATION_KEYS,
        "progress",
        "num_workers",
        "device",
        "threads",
        "compile",
        "eval_batches",
        "probe_batches",
    }
    return [
        f"{k}: checkpoint {json.dumps(saved.get(k))}, this run {json.dumps(current.get(k))}"
        for k in sorted(set(saved) | set(current))
        if k not in skip and k not in ARCHITECTURE_KEYS and saved.get(k) != current.get(k)
    ]


def _names(keys: list[str], limit: int = 3) -> str:
    """``'a', 'b', 'c' and 2 more``: the first ``limit`` of ``keys``, quoted."""
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _model_problems(saved: object, model: nn.Module) -> list[str]:
    """What keeps ``saved`` from loading into ``model`` with ``load_state_dict`` (strict)."""
    if not isinstance(saved, Mapping):
        return [f"'model' is {_describe(saved)}, not a state dict"]
    current = model.state_dict()
    problems: list[str] = []
    missing = [k for k in current if k not in saved]
    if missing:
        problems.append(f"the model's state lacks {len(missing)} tensor(s) ({_names(missing)})")
    unexpected = [str(k) for k in saved if k not in current]
    if unexpected:
        problems.append(
            f"the model's state has {len(unexpected)} unexpected tensor(s) ({_names(unexpected)})"
        )
    for key, want in current.items():
        if key not in saved or not isinstance(want, torch.Tensor):
            continue
        got = saved[key]
        if not isinstance(got, torch.Tensor):
            problems.append(f"model entry {key!r} is {_describe(got)}, not a tensor")
        elif got.shape != want.shape:
            problems.append(
                f"tensor {key!r} has another shape (checkpoint {_shape(got)}, "
                f"this model {_shape(want)})"
            )
        elif got.dtype != want.dtype:
            problems.append(
                f"tensor {key!r} has another dtype (checkpoint {got.dtype}, "
                f"this model {want.dtype})"
            )
    return problems


def _optimizer_problems(saved: object, optimizer: torch.optim.Optimizer) -> list[str]:
    """What keeps ``saved`` from loading into ``optimizer``.

    The parameter groups must match in number and size, and every per-parameter state tensor
    except the scalar counter ``step`` must have its parameter's shape (true of the
    element-wise optimisers: AdamW, Adam, SGD, RMSprop, ...).
    """
    if not isinstance(saved, Mapping):
        return [f"'optimizer' is {_describe(saved)}, not a state dict"]
    groups = saved.get("param_groups")
    state = saved.get("state")
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in groups):
        return [f"the optimizer's 'param_groups' is {_describe(groups)}, not a list of dicts"]
    if not isinstance(state, Mapping):
        return [f"the optimizer's 'state' is {_describe(state)}, not a dict"]
    current = optimizer.param_groups
    if len(groups) != len(current):
        return [
            f"the optimizer has another number of parameter groups (checkpoint {len(groups)}, "
            f"this run {len(current)})"
        ]
    problems: list[str] = []
    params: dict[object, tuple[int, torch.Tensor]] = {}
    for i, (g, c) in enumerate(zip(groups, current, strict=True)):
        ids = g.get("params")
        if not isinstance(ids, (list, tuple)) or not all(_is_int(k) for k in ids):
            problems.append(f"optimizer group {i}'s 'params' is {_describe(ids)}, not a list")
            continue
        if len(ids) != len(c["params"]):
            problems.append(
                f"optimizer group {i} has another number of parameters (checkpoint {len(ids)}, "
                f"this run {len(c['params'])})"
            )
            continue
        for k, param in zip(ids, c["params"], strict=True):
            if k in params:
                problems.append(f"optimizer parameter {k} appears in more than one place")
            params[k] = (i, param)
    if problems:
        return problems
    for k, entry in state.items():
        if k not in params:
            problems.append(f"the optimizer has state for parameter {k!r}, which no group holds")
            continue
        i, param = params[k]
        if not isinstance(entry, Mapping):
            problems.append(f"optimizer state of parameter {k} is {_describe(entry)}, not a dict")
            continue
        for name, value in entry.items():
            if name == "step":
                if not (
                    _is_real(value) or (isinstance(value, torch.Tensor) and value.numel() == 1)
                ):
                    problems.append(
                        f"optimizer state 'step' of parameter {k} is {_describe(value)}, "
                        "not a number"
                    )
            elif isinstance(value, torch.Tensor) and value.shape != param.shape:
                problems.append(
                    f"optimizer state {name!r} of parameter {k} (group {i}) has another shape "
                    f"(checkpoint {_shape(value)}, this parameter {_shape(param)})"
                )
    return problems


def _scheduler_problems(saved: object, num_groups: int) -> list[str]:
    """What keeps ``saved`` from loading into a scheduler of ``num_groups`` parameter groups."""
    if not isinstance(saved, Mapping):
        return [f"'scheduler' is {_describe(saved)}, not a state dict"]
    problems: list[str] = []
    last = saved.get("last_epoch")
    if not _is_int(last) or last < -1:
        problems.append(f"the scheduler's 'last_epoch' is {_describe(last)}, not an int >= -1")
    for key in ("base_lrs", "lr_lambdas", "_last_lr"):
        if key not in saved:
            continue
        value = saved[key]
        if not isinstance(value, (list, tuple)) or len(value) != num_groups:
            problems.append(
                f"the scheduler's {key!r} is {_describe(value)}, not a list of {num_groups} "
                "(one per parameter group)"
            )
    return problems


def _counter_problems(ckpt: Mapping[str, Any], steps_per_epoch: int | None) -> list[str]:
    """Problems of the loop's position (``epoch``, ``batch``, ``step``) and its counters."""
    problems: list[str] = []
    for key in ("epoch", "batch", "step"):
        value = ckpt.get(key)
        if not _is_int(value):
            problems.append(f"{key!r} is {_describe(value)}, not an int")
        elif value < 0:
            problems.append(f"{key!r} is {value}, not >= 0")
    if problems:
        return problems
    epoch, batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
    if steps_per_epoch is not None:
        if batch > steps_per_epoch:
            problems.append(f"'batch' is {batch}, more than the {steps_per_epoch} of an epoch")
        elif step != epoch * steps_per_epoch + batch:
            problems.append(
                f"'step' is {step}, not epoch * steps per epoch + batch = "
                f"{epoch} * {steps_per_epoch} + {batch}"
            )
    history = ckpt.get("history")
    if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
        problems.append(f"'history' is {_describe(history)}, not a list of dicts")
    if "best_top1" in ckpt and not _is_real(ckpt["best_top1"]):
        problems.append(f"'best_top1' is {_describe(ckpt['best_top1'])}, not a number")
    for key in ("nonfinite_total", "nonfinite_streak"):
        if key in ckpt and (not _is_int(ckpt[key]) or ckpt[key] < 0):
            problems.append(f"{key!r} is {_describe(ckpt[key])}, not an int >= 0")
    acc = ckpt.get("epoch_accumulators", {})
    if not isinstance(acc, Mapping) or not all(_is_real(v) for v in acc.values()):
        problems.append(f"'epoch_accumulators' is {_describe(acc)}, not a dict of numbers")
    return problems


def validate_checkpoint(
    ckpt: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int | None = None,
    path: str | None = None,
) -> None:
    """Check that a loaded checkpoint's contents fit ``model`` and ``optimizer``.

    Call it after :func:`load_checkpoint` and :func:`check_compatible`, before any
    ``load_state_dict``: a file that passes loads without an error. Checks

    - ``model``: the same keys as ``model.state_dict()`` (none missing, none unexpected), each
      tensor of the same shape and dtype;
    - ``optimizer``: as many parameter groups, as many parameters in each, and every
      per-parameter state tensor (but the counter ``step``) of its parameter's shape;
    - ``scheduler``: a dict with an int ``last_epoch`` and, where present, one ``base_lrs`` /
      ``lr_lambdas`` entry per parameter group;
    - ``epoch``, ``batch``, ``step``: ints (not bools or strings), ``>= 0``; with
      ``steps_per_epoch``, ``batch <= steps_per_epoch`` and
      ``step == epoch * steps_per_epoch + batch``;
    - ``history``: a list of dicts; ``best_top1``, ``nonfinite_total``, ``nonfinite_streak``,
      ``epoch_accumulators`` (optional) numbers of the right kind;
    - ``rng``: the entries ``torch``, ``python``, ``numpy`` (``cuda`` optional) of
      :func:`get_rng_state`, with their types and sizes;
    - ``config``: a dict.

    Only shapes, dtypes and Python values are read (no tensor values but the generator states,
    which live on the CPU).

    Args:
        ckpt: the dict from :func:`load_checkpoint`.
        model: the model that will receive ``ckpt["model"]`` (on any device).
        optimizer: the optimiser (built over ``model``) that will receive ``ckpt["optimizer"]``.
        steps_per_epoch: the batches of an epoch in this run, to check the position.
        path: the checkpoint's name in the message (default ``ckpt["path"]``).

    Raises:
        CheckpointError: one line, ``checkpoint 'PATH' does not fit this run: <what> (...)``,
            naming up to three problems (e.g. the key and both shapes of a tensor) and how many
            more there are.
    """
    name = path if path is not None else str(ckpt.get("path", "<checkpoint>"))
    missing = [k for k in _REQUIRED if k not in ckpt and k not in ("format", "version")]
    if missing:
        raise CheckpointError(f"checkpoint {name!r} is incomplete: it lacks {missing}")
    problems: list[str] = []
    if not isinstance(ckpt["config"], Mapping):
        problems.append(f"'config' is {_describe(ckpt['config'])}, not a dict")
    problems += _model_problems(ckpt["model"], model)
    problems += _optimizer_problems(ckpt["optimizer"], optimizer)
    problems += _scheduler_problems(ckpt["scheduler"], len(optimizer.param_groups))
    problems += _counter_problems(ckpt, steps_per_epoch)
    problems += _rng_problems(ckpt["rng"])
    if problems:
        more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
        text = "; ".join(problems[:3]) + more
        raise CheckpointError(
            f"checkpoint {name!r} does not fit this run: {' '.join(text.split())}"
        )
