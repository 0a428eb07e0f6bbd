"""Per-epoch metrics files (JSON lines and CSV) and the plot of the training curves."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poincare._optional import optional_imports
from training.checkpoint import atomic_write_bytes, atomic_write_text

__all__ = ["METRIC_COLUMNS", "plot_curves", "write_metrics"]

METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_top1",
    "train_skipped",
    "val_loss",
    "val_top1",
    "val_top5",
    "chance_top1",
    "chance_top5",
    "val_candidates",
    "val_group_top1",
    "chance_group_top1",
    "val_skipped",
    "val_pred_spread",
    "val_pred_radius",
    "val_pred_shell",
    "curvature",
    "epoch_seconds",
    "clips_per_second",
    "processes",
    "ranks_in_sync",
)


def write_metrics(folder: str | os.PathLike[str], history: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` (one JSON object per epoch) and ``metrics.csv`` in ``folder``.

    Both files are rebuilt from the whole ``history`` and written atomically, so that after a
    resume they hold exactly one line per finished epoch.
    """
    d = Path(folder)
    atomic_write_text(d / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
    w.writeheader()
    for h in history:
        w.writerow({k: h.get(k, "") for k in METRIC_COLUMNS})
    atomic_write_text(d / "metrics.csv", buf.getvalue())


def plot_curves(path: str | os.PathLike[str], history: Sequence[dict[str, Any]]) -> None:
    """Plot the training and validation loss and the validation top-1/top-5 accuracy per
    epoch (with the chance levels dashed) into the PNG ``path`` (matplotlib, Agg backend),
    written atomically. An empty ``history`` writes nothing.
    """
    if not history:
        return
    with optional_imports("matplotlib", extra="train", purpose="the training curves' plot"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]

    def col(k: str) -> list[float]:
        return [float(h.get(k, math.nan)) for h in history]

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9.5, 3.2), dpi=90)
    ax_l.plot(epochs, col("train_loss"), "o-", label="train")
    ax_l.plot(epochs, col("val_loss"), "s-", label="validation")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("InfoNCE loss")
    ax_l.legend()
    ax_l.grid(alpha=0.3)
    ax_a.plot(epochs, [100 * v for v in col("val_top1")], "o-", label="top-1")
    ax_a.plot(epochs, [100 * v for v in col("val_top5")], "s-", label="top-5")
    ax_a.plot(epochs, [100 * v for v in col("val_group_top1")], "^-", label="top-1 in group")
    ax_a.plot(
        epochs, [100 * v for v in col("chance_group_top1")], "g-.", lw=0.8, label="chance in group"
    )
    ax_a.plot(epochs, [100 * v for v in col("chance_top1")], "k--", lw=0.8, label="chance top-1")
    ax_a.plot(epochs, [100 * v for v in col("chance_top5")], "k:", lw=0.8, label="chance top-5")
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("validation retrieval accuracy (%)")
    ax_a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax_a.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
