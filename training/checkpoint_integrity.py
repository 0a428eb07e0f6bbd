"""Is a checkpoint file the one the trainer wrote? Checks that run before any use of it.

:func:`training.checkpoint.load_checkpoint` runs both, so that a damaged file is refused with
one line before ``--resume``, ``--eval_only`` or ``--probe`` trains on it or reports from it:

- :func:`archive_problem`: ``torch.save`` writes a zip archive that stores a CRC-32 of every
  member; reading every member and comparing (``zipfile.ZipFile.testzip``) finds any flipped,
  overwritten or truncated byte. ``torch.load`` itself does not compare them, so a flipped byte
  in a tensor's data loads silently as a wrong value.
- :func:`value_problems`: a file whose archive is intact can still hold values the trainer
  never writes: non-finite weights (the trainer refuses to save them), non-finite optimiser
  state, a negative second moment or step count of the optimiser.

Both read every byte once; for the checkpoints of this project that is milliseconds.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["NON_NEGATIVE_STATE", "archive_problem", "value_problems"]

#: Optimiser state entries that are never negative: the second moments of Adam and AdamW
#: (``exp_avg_sq``, with amsgrad ``max_exp_avg_sq``), RMSprop's ``square_avg``, Adagrad's
#: ``sum``, and the step count.
NON_NEGATIVE_STATE = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "step"})


def archive_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the zip archive of the checkpoint at ``path``, or ``None``.

    Reads every member and compares its CRC-32 with the one stored when it was written.
    Returns a phrase such as ``its archive member 'r/data/35' fails its CRC check`` or
    ``it is not a zip archive (BadZipFile: ...)`` (a truncated file, another format);
    ``OSError`` (a missing or unreadable file) propagates.
    """
    try:
        with zipfile.ZipFile(Path(path)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        detail = str(e).strip().splitlines()
        return f"it is not a zip archive ({type(e).__name__}: {detail[0] if detail else '?'})"
    if bad is not None:
        return f"its archive member {bad!r} fails its CRC check"
    return None


def _count(t: torch.Tensor, bad: torch.Tensor) -> str:
    """``3 of 432``: how many of ``t``'s values ``bad`` marks."""
    return f"{int(bad.sum())} of {t.numel()}"


def _tensor_problem(where: str, t: object, non_negative: bool = False) -> str | None:
    """Why the tensor ``t`` (named ``where``) cannot be a state the trainer wrote, if it
    cannot: non-finite values in a floating-point tensor, or negative values where
    ``non_negative``. Non-tensors and integer tensors pass (their types are checked
    elsewhere)."""
    if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()):
        return None
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        return f"{where} has {_count(t, ~finite)} non-finite values"
    if non_negative and not t.is_complex():
        negative = t < 0
        if bool(negative.any()):
            return f"{where} has {_count(t, negative)} negative values, which it never has"
    return None


def value_problems(ckpt: Mapping[str, object]) -> list[str]:
    """What in a loaded checkpoint no training run writes (empty: nothing).

    Checks every floating-point tensor of ``ckpt["model"]`` and of the optimiser's
    per-parameter ``state`` for NaN and infinities, and the entries of
    :data:`NON_NEGATIVE_STATE` for negative values. Entries that are not dicts or tensors are
    skipped: :func:`training.checkpoint.validate_checkpoint` reports them.
    """
    problems: list[str] = []
    model = ckpt.get("model")
    if isinstance(model, Mapping):
        for key, t in model.items():
            problem = _tensor_problem(f"model tensor {key!r}", t)
            if problem is not None:
                problems.append(problem)
    optimizer = ckpt.get("optimizer")
    state = optimizer.get("state") if isinstance(optimizer, Mapping) else None
    if isinstance(state, Mapping):
        for param, entry in state.items():
            if not isinstance(entry, Mapping):
                continue
            for name, t in entry.items():
                where = f"optimizer state {name!r} of parameter {param}"
                problem = _tensor_problem(where, t, non_negative=name in NON_NEGATIVE_STATE)
                if problem is not None:
                    problems.append(problem)
    return problems
