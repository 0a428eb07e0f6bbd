"""The configuration of a training run, and its validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from poincare._checks import check_curvature
from poincare.nn.functional import SCORES, canonical_score

__all__ = [
    "ARCHITECTURE_KEYS",
    "DATASETS",
    "DATA_KEYS",
    "INVOCATION_KEYS",
    "MAX_CURVATURE",
    "MAX_LR",
    "MAX_SEED",
    "MIN_CURVATURE",
    "SCHEDULE_KEYS",
    "TrainConfig",
]

DATASETS: tuple[str, ...] = ("sprites", "frames", "video")
# The curvatures the numerical contract is verified for (DESIGN.md): a ball of curvature
# 1e300 has a radius of 1e-150 and one of 1e-300 a radius of 1e150, so every step is NaN.
MIN_CURVATURE = 1e-4
MAX_CURVATURE = 100.0
# torch.manual_seed and the data's SplitMix64 chain take a 64-bit seed; numpy takes it mod 2**32.
MAX_SEED = 2**63 - 1
# AdamW moves every weight by about lr per step; past this no run is meaningful (and from
# about 1e38 the optimiser's float32 step size itself overflows).
MAX_LR = 10.0

# Keys whose change makes a checkpoint unusable: they fix the model's parameters or the
# computation it performs.
ARCHITECTURE_KEYS: tuple[str, ...] = (
    "hyperbolic",
    "use_transformer",
    "space_time",
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
    "dataset",
    "data_root",
    "split_csv",
    "val_csv",
    "ds",
    "val_share",
    "holdout",
    "clips_per_video",
)
# Keys of the optimisation schedule. A resumed run may change them: the new values apply from
# the step it resumes at (see :func:`training.trainer.run`).
SCHEDULE_KEYS: tuple[str, ...] = ("epochs", "lr", "warmup_steps", "wd", "grad_clip")
# Keys of one command, not of the run: a resumed run takes them from its own command line, never
# from the checkpoint. In particular the run folder is the one that holds the checkpoint now
# (or --out), not the one recorded when the run was made there: a copied or moved folder
# continues in place.
INVOCATION_KEYS: tuple[str, ...] = ("out", "resume", "eval_only", "probe")


@dataclass
class TrainConfig:
    """Every setting of a training run (the flags of ``train_cli.py``, one field each).

    Model: ``hyperbolic``, ``use_transformer``, ``space_time`` (the transformer also attends
    across the feature map's locations), ``num_heads``, ``transformer_layers``,
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
    ``None``: ``runs/<time>``, or on resume the folder that holds the checkpoint now),
    ``resume`` (checkpoint path), ``progress`` (show the tqdm bar), ``compile`` (run the
    training step's forward pass and loss through ``torch.compile``; see
    :func:`training.trainer.run`),
    ``tensorboard`` (event files in the run folder; ``None``: when tensorboard is installed).
    Real video: ``dataset`` (``sprites``: the embedded procedural videos; ``frames``: folders
    of frames listed in ``split_csv``; ``video``: video files under ``data_root``),
    ``data_root``, ``split_csv``, ``val_csv`` (a separate validation list), ``ds`` (frame
    step), ``val_share`` and ``holdout`` (``video``: hold out that share of the videos;
    ``time``: the last share of every video's frames), ``clips_per_video`` (items per video
    and epoch), ``cache_dir`` (decoded frames of ``video`` files). Several processes:
    ``cross_rank_negatives`` (score each rank's predictions against every rank's targets).
    Evaluation (:mod:`training.analysis`): ``eval_batches`` (batches of the sprite ``test``
    split evaluated at the end of training; 0: no evaluation), ``eval_only`` (evaluate the
    ``resume`` checkpoint and train nothing), ``probe`` (train the early-action probes of
    :mod:`training.probe` on the ``resume`` checkpoint and train nothing else),
    ``probe_batches`` (batches of videos that train the probes).
    """

    hyperbolic: bool = True
    use_transformer: bool = True
    space_time: bool = False
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
    dataset: str = "sprites"
    data_root: str | None = None
    split_csv: str | None = None
    val_csv: str | None = None
    ds: int = 1
    val_share: float = 0.2
    holdout: str = "video"
    clips_per_video: int = 1
    cache_dir: str | None = None
    cross_rank_negatives: bool = False
    tensorboard: bool | None = None
    eval_batches: int = 32
    eval_only: bool = False
    probe: bool = False
    probe_batches: int = 64

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
        if not 0.0 < self.lr <= MAX_LR:
            p.append(f"--lr must be a finite positive number up to {MAX_LR:g}, got {self.lr}")
        try:
            check_curvature(self.curvature)
        except (TypeError, ValueError) as e:
            p.append(f"--curvature: {e}")
        else:
            if not MIN_CURVATURE <= self.curvature <= MAX_CURVATURE:
                p.append(
                    f"--curvature must be in [{MIN_CURVATURE:g}, {MAX_CURVATURE:g}] (the range "
                    f"the library is verified for), got {self.curvature:g}"
                )
        if not 0 <= self.seed <= MAX_SEED:
            p.append(f"--seed must be in [0, 2**63 - 1], got {self.seed}")
        for name in ("wd", "grad_clip"):
            if not 0.0 <= getattr(self, name) < math.inf:
                p.append(f"--{name} must be finite and >= 0, got {getattr(self, name)}")
        if self.dataset not in DATASETS:
            p.append(f"--dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset in ("frames", "video") and not self.data_root:
            p.append(f"--dataset {self.dataset} needs --data_root")
        if self.dataset == "frames" and not self.split_csv:
            p.append("--dataset frames needs --split_csv (the CSV listing the videos)")
        if self.ds <= 0:
            p.append(f"--ds must be positive, got {self.ds}")
        if self.clips_per_video <= 0:
            p.append(f"--clips_per_video must be positive, got {self.clips_per_video}")
        if not 0.0 < self.val_share < 1.0:
            p.append(f"--val_share must be in (0, 1), got {self.val_share}")
        if self.holdout not in ("video", "time"):
            p.append(f"--holdout must be video or time, got {self.holdout!r}")
        if self.eval_only and self.resume is None:
            p.append("--eval_only needs --resume (the checkpoint to evaluate)")
        if self.eval_only and self.eval_batches == 0:
            p.append("--eval_only needs --eval_batches of at least 1")
        if self.probe and self.resume is None:
            p.append("--probe needs --resume (the checkpoint whose representations it probes)")
        if self.probe and self.dataset != "sprites":
            p.append("--probe needs --dataset sprites (the videos with action labels)")
        if self.probe and (self.probe_batches < 1 or self.eval_batches < 1):
            p.append("--probe needs --probe_batches and --eval_batches of at least 1")
        for name in ("warmup_steps", "num_workers", "num_distractors", "threads", "eval_batches"):
            if getattr(self, name) < 0:
                p.append(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.transformer_dropout < 1.0:
            p.append(f"--transformer_dropout must be in [0, 1), got {self.transformer_dropout}")
        if self.use_transformer and not self.hyperbolic:
            p.append("--use_transformer needs --hyperbolic (the transformer is hyperbolic)")
        if self.space_time and not self.use_transformer:
            p.append("--space_time needs --use_transformer (it is an attention across locations)")
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
        elif self.device == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build"
            p.append(
                f"--device cuda: no CUDA device is available (torch {torch.__version__} is "
                f"{build}); use --device cpu or --device auto"
            )
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
