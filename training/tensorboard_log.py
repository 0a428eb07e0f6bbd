"""TensorBoard event files of a training run, written into ``<run folder>/tensorboard/``.

:class:`TensorBoardLog` wraps :class:`torch.utils.tensorboard.SummaryWriter`, which is imported
only when a logger is opened enabled: importing this module costs nothing and works without the
``tensorboard`` extra. A disabled logger (``--tensorboard`` off, or tensorboard not installed
when it was left to the default) accepts the same calls and does nothing, so the trainer calls
it unconditionally::

    with TensorBoardLog.open(out_dir, config.tensorboard, purge_step=step + 1) as tb:
        tb.scalars({"loss": loss, "top1": top1, "lr": lr}, step, prefix="step/")
        ...
        tb.scalars(epoch_scalars(record), step)
        tb.image_png("curves", out_dir / "curves.png", step)

:func:`epoch_scalars` maps the trainer's per-epoch record (the columns of
:data:`training.metrics.METRIC_COLUMNS` plus ``curvature``) to grouped tags: ``loss/train``,
``loss/val``, ``accuracy/val_top1``, ... ``lr``, ``speed/clips_per_second``.

Resuming: a run that resumes from a checkpoint taken at global step ``s`` logs steps ``s + 1``
onwards again into the same folder; events of the previous process after ``s`` (logged before it
stopped, but not in the checkpoint) would be shown twice. ``purge_step=s + 1`` writes a restart
marker at that step: TensorBoard then discards the older events at steps ``>= s + 1``.
"""

from __future__ import annotations

import importlib.util
import numbers
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from poincare._optional import MissingDependencyError, optional_imports

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "EXTRA",
    "SUBFOLDER",
    "TensorBoardLog",
    "epoch_scalars",
    "tensorboard_available",
]

EXTRA = "tensorboard"
"""The extra of the distribution that installs tensorboard."""

SUBFOLDER = "tensorboard"
"""The folder inside a run's output folder that holds its event files."""

_PURPOSE = "TensorBoard logging (--tensorboard)"

# The trainer's per-epoch record keys and their TensorBoard tags. TensorBoard groups the charts
# by the part of a tag before its first "/". ``step`` is the x axis, not a value.
_EPOCH_TAGS: dict[str, str] = {
    "epoch": "epoch",
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_top1": "accuracy/train_top1",
    "val_top1": "accuracy/val_top1",
    "val_top5": "accuracy/val_top5",
    "chance_top1": "accuracy/chance_top1",
    "chance_top5": "accuracy/chance_top5",
    "val_group_top1": "accuracy/val_group_top1",
    "chance_group_top1": "accuracy/chance_group_top1",
    "val_candidates": "data/val_candidates",
    "processes": "data/processes",
    "ranks_in_sync": "data/ranks_in_sync",
    "val_pred_spread": "predictions/spread",
    "val_pred_radius": "predictions/radius",
    "val_pred_shell": "predictions/shell_fraction",
    "train_skipped": "skipped/train",
    "val_skipped": "skipped/val",
    "curvature": "curvature",
    "lr": "lr",
    "epoch_seconds": "speed/epoch_seconds",
    "clips_per_second": "speed/clips_per_second",
}
_NOT_LOGGED = frozenset({"step"})


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed (found, not imported)."""
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        return False


def _as_float(value: object) -> float | None:
    """``value`` as a float if it is a real number (a Python or NumPy number, or a tensor of
    one element), else ``None``. Booleans and strings are not numbers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().reshape(()).item())
    return None


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """Map the trainer's per-epoch ``record`` to TensorBoard tags and float values.

    Known keys get grouped tags (``train_loss`` -> ``loss/train``, ``val_top5`` ->
    ``accuracy/val_top5``, ``clips_per_second`` -> ``speed/clips_per_second``, ``lr`` and
    ``curvature`` as they are); other numeric keys go under ``other/<key>``; ``step`` (the x
    axis) and non-numeric values are left out. Accuracies stay fractions in [0, 1]; NaN (an
    epoch without a finished step) is kept, TensorBoard shows it as a gap.
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _NOT_LOGGED:
            continue
        number = _as_float(value)
        if number is None:
            continue
        out[_EPOCH_TAGS.get(key, f"other/{key}")] = number
    return out


class TensorBoardLog:
    """A TensorBoard event-file writer for one run, or a disabled one that does nothing.

    Create it with :meth:`open`. Every method is a no-op when :attr:`enabled` is false and after
    :meth:`close`. Use it as a context manager (closing on exit) or call :meth:`close`.
    """

    def __init__(self, writer: SummaryWriter | None = None, log_dir: Path | None = None) -> None:
        """Wrap ``writer`` (``None``: disabled). Prefer :meth:`open`."""
        self._writer = writer
        self._log_dir = log_dir

    @classmethod
    def open(
        cls,
        folder: str | Path,
        enabled: bool | None = None,
        *,
        purge_step: int | None = None,
        flush_secs: int = 30,
    ) -> TensorBoardLog:
        """A logger writing into ``folder / "tensorboard"``.

        ``enabled``: ``True`` logs, raising :class:`~poincare._optional.MissingDependencyError`
        (naming the ``tensorboard`` extra) when tensorboard is not installed; ``None`` logs when
        it is installed; ``False`` gives a disabled logger. A disabled logger creates no folder.

        ``purge_step``: when resuming, the first global step that will be logged again (the
        checkpoint's step plus one); earlier events in the folder at steps ``>= purge_step`` are
        then hidden by TensorBoard. ``flush_secs``: how often pending events reach the disk.
        """
        if enabled is False:
            return cls()
        if not tensorboard_available():
            if enabled:
                raise MissingDependencyError("tensorboard", EXTRA, _PURPOSE)
            return cls()
        if purge_step is not None and purge_step < 0:
            raise ValueError(f"purge_step must be >= 0 or None, got {purge_step}")
        with optional_imports("tensorboard", extra=EXTRA, purpose=_PURPOSE):
            from torch.utils.tensorboard import SummaryWriter
        log_dir = Path(folder) / SUBFOLDER
        writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=flush_secs)
        return cls(writer, log_dir)

    @property
    def enabled(self) -> bool:
        """Whether this logger writes (false when disabled, and after :meth:`close`)."""
        return self._writer is not None

    @property
    def log_dir(self) -> Path | None:
        """The folder of the event files (``None`` for a disabled logger)."""
        return self._log_dir

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Log each numeric value of ``values`` as the scalar ``prefix + key`` at ``step``.

        Non-numeric values (strings, booleans, ``None``) are skipped; NaN and infinities are
        logged as they are. A one-element tensor is read with ``.item()`` (a device sync).
        """
        if self._writer is None:
            return
        for key, value in values.items():
            number = _as_float(value)
            if number is not None:
                self._writer.add_scalar(prefix + key, number, global_step=step)

    def image_png(self, tag: str, png_path: str | Path, step: int) -> None:
        """Log the PNG file ``png_path`` as the image ``tag`` at ``step`` (read with Pillow;
        RGB, or RGBA when it has transparency). A missing file is skipped silently."""
        if self._writer is None:
            return
        path = Path(png_path)
        if not path.is_file():
            return
        with optional_imports("PIL", extra=EXTRA, purpose=_PURPOSE):
            import numpy as np
            from PIL import Image

        with Image.open(path) as image:
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            pixels = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)
        self._writer.add_image(tag, pixels, global_step=step, dataformats="HWC")

    def figure(self, tag: str, figure: Figure, step: int, *, close: bool = True) -> None:
        """Log the matplotlib ``figure`` as the image ``tag`` at ``step``; close the figure
        afterwards when ``close`` (also when the logger is disabled)."""
        if self._writer is None:
            if close:
                with optional_imports("matplotlib", extra="train", purpose=_PURPOSE):
                    import matplotlib.pyplot as plt
                plt.close(figure)
            return
        self._writer.add_figure(tag, figure, global_step=step, close=close)

    def flush(self) -> None:
        """Write pending events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; later calls do nothing. Safe to call twice."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"log_dir={str(self._log_dir)!r}" if self.enabled else "disabled"
        return f"TensorBoardLog({state})"
