"""The tiny training configuration that the training tests share (a helper, not a test)."""

from __future__ import annotations

from typing import Any

# A few seconds per run on one CPU thread: 16 px frames, 3 blocks of 2, 8 features.
TINY: dict[str, Any] = {
    "img_dim": 16,
    "seq_len": 2,
    "num_seq": 3,
    "pred_step": 1,
    "feature_dim": 8,
    "encoder_width": 4,
    "num_heads": 2,
    "transformer_layers": 1,
    "batch_size": 4,
    "train_batches": 3,
    "val_batches": 1,
    "eval_batches": 2,
    "epochs": 2,
    "warmup_steps": 2,
    "progress": False,
    "device": "cpu",
}


def cli_args(**overrides: Any) -> list[str]:
    """:data:`TINY` (with ``overrides``) as ``train_cli.py`` flags."""
    settings = {**TINY, **overrides}
    flags = [x for k, v in settings.items() if k != "progress" for x in (f"--{k}", str(v))]
    return [*flags, "--progress" if settings["progress"] else "--no-progress"]
