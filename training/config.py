"""The configuration of a training run, and its validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from poincare._checks import check_curvature
from poincare.nn.functional import SCORES, canonical_score

__all__ = ["ARCHITECTURE_KEYS", "DATA_KEYS", "TrainConfig"]

# Keys whose change makes a checkpoint unusable: they fix the model's parameters or the
# computation it performs.
ARCHITECTURE_KEYS: tuple[str, ...] = (
    "hyperbolic",
    "use_transformer",
    "num_heads",
    "transformer_layers",
    "transformer_dropout",
    "fp64_hyper",
    "distance",
    "curvature",
    "learn_curvature",
    "feature_dim",
    "encoder_width",
    "gru_layers",
    "img_dim",
    "seq_len",
    "num_seq",
    "pred_step",
    "num_distractors",
)
# Keys that fix the data and its order: a resumed run continues exactly only if they match.
DATA_KEYS: tuple[str, ...] = (
    "seed",
    "batch_size",
    "train_batches",
    "val_batches",
    "group_size",
)


@dataclass
class TrainConfig:
    """Every setting of a training run (the flags of ``train_cli.py``, one field each).

    Model: ``hyperbolic``, ``use_transformer``, ``num_heads``, ``transformer_layers``,
    ``transformer_dropout``, ``fp64_hyper``, ``distance`` (the score: ``distance``, alias
    ``regular``, ``squared`` or ``cosh``; stored canonical), ``curvature`` (its initial value
    with ``learn_curvature``), ``learn_curvature``, ``feature_dim`` (the
    width of the features and of the ball), ``encoder_width``, ``gru_layers``.
    Data: ``img_dim``, ``seq_len``, ``num_seq``, ``pred_step``, ``num_distractors``,
    ``group_size`` (videos per group sharing everything but the actor's motion),
    ``train_batches`` (fresh batches per epoch), ``val_batches`` (fixed validation set).
    Optimisation: ``batch_size``, ``lr``, ``wd``, ``warmup_steps``, ``grad_clip`` (0 = off),
    ``epochs``, ``seed``, ``max_nonfinite`` (consecutive non-finite steps before stopping).
    Run: ``num_workers``, ``threads`` (torch's intra-op threads; 0 keeps torch's default),
    ``device`` (``cpu``, ``cuda`` or ``auto``), ``out`` (run folder;
    ``None``: ``runs/<time>``, or the checkpoint's folder on resume), ``resume`` (checkpoint
    path), ``progress`` (show the tqdm bar), ``compile`` (run the training step's forward
    pass and loss through ``torch.compile``; see :func:`training.trainer.run`).
    """

    hyperbolic: bool = True
    use_transformer: bool = True
    num_heads: int = 8
    transformer_layers: int = 4
    transformer_dropout: float = 0.1
    fp64_hyper: bool = False
    distance: str = "squared"
    curvature: float = 1.0
    learn_curvature: bool = False
    feature_dim: int = 32
    encoder_width: int = 16
    gru_layers: int = 1
    img_dim: int = 32
    seq_len: int = 4
    num_seq: int = 5
    pred_step: int = 2
    num_distractors: int = 1
    group_size: int = 4
    train_batches: int = 40
    val_batches: int = 4
    batch_size: int = 16
    lr: float = 2e-3
    wd: float = 1e-5
    warmup_steps: int = 20
    grad_clip: float = 5.0
    epochs: int = 12
    seed: int = 0
    max_nonfinite: int = 20
    num_workers: int = 0
    threads: int = 1
    device: str = "auto"
    out: str | None = None
    resume: str | None = None
    progress: bool = True
    compile: bool = False

    def problems(self) -> list[str]:
        """Reasons why this configuration cannot run (empty when it can)."""
        p: list[str] = []
        positive = (
            "num_heads",
            "transformer_layers",
            "feature_dim",
            "encoder_width",
            "gru_layers",
            "img_dim",
            "seq_len",
            "num_seq",
            "pred_step",
            "train_batches",
            "val_batches",
            "batch_size",
            "epochs",
            "max_nonfinite",
            "group_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                p.append(f"--{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0.0:
            p.append(f"--lr must be positive, got {self.lr}")
        try:
            check_curvature(self.curvature)
        except (TypeError, ValueError) as e:
            p.append(f"--curvature: {e}")
        for name in ("wd", "grad_clip"):
            if not getattr(self, name) >= 0.0:
                p.append(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "num_workers", "num_distractors", "threads"):
            if getattr(self, name) < 0:
                p.append(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.transformer_dropout < 1.0:
            p.append(f"--transformer_dropout must be in [0, 1), got {self.transformer_dropout}")
        if self.use_transformer and not self.hyperbolic:
            p.append("--use_transformer needs --hyperbolic (the transformer is hyperbolic)")
        if self.pred_step > 0 and self.num_seq > 0 and self.pred_step >= self.num_seq:
            p.append(
                f"--pred_step ({self.pred_step}) must be smaller than --num_seq ({self.num_seq})"
            )
        if self.use_transformer and self.num_heads > 0 and self.feature_dim % self.num_heads:
            p.append(
                f"--num_heads ({self.num_heads}) must divide --feature_dim ({self.feature_dim})"
            )
        if self.img_dim > 0 and self.img_dim % 8:
            p.append(f"--img_dim must be a multiple of 8, got {self.img_dim}")
        try:
            canonical_score(self.distance)
        except ValueError:
            p.append(
                f"--distance must be one of {(*SCORES, 'regular')} ('regular' is 'distance'), "
                f"got {self.distance!r}"
            )
        if self.device not in ("cpu", "cuda", "auto"):
            p.append(f"--device must be cpu, cuda or auto, got {self.device!r}")
        return p

    def validate(self) -> None:
        """Raise ``ValueError`` with the first of :meth:`problems`, if any."""
        p = self.problems()
        if p:
            raise ValueError(p[0])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict`'s output; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}")
        return cls(**d)
