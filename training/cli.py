"""Command-line interface of the training loop (``train_cli.py`` calls :func:`main`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from poincare.nn.functional import SCORES, canonical_score
from training.checkpoint import CheckpointError
from training.config import TrainConfig

__all__ = ["build_parser", "config_from_args", "main"]

_D = TrainConfig()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``train_cli.py``; every flag is documented in ``--help``."""
    p = _Parser(
        prog="train_cli.py",
        description=(
            "Train the self-supervised video future-prediction model (Euclidean or hyperbolic; "
            "ConvGRU or hyperbolic transformer aggregator) on procedural sprite videos, with "
            "per-epoch validation of future-retrieval accuracy. The plain command trains the "
            "hyperbolic transformer."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bo = argparse.BooleanOptionalAction
    m = p.add_argument_group("model")
    m.add_argument(
        "--hyperbolic",
        action=bo,
        default=_D.hyperbolic,
        help="map predictions and targets into the Poincaré ball and score them by hyperbolic "
        "distance (--no-hyperbolic: Euclidean dot product)",
    )
    m.add_argument(
        "--use_transformer",
        action=bo,
        default=_D.use_transformer,
        help="aggregate past blocks with the causal hyperbolic transformer (needs --hyperbolic); "
        "--no-use_transformer uses the ConvGRU",
    )
    m.add_argument("--num_heads", type=int, default=_D.num_heads, help="attention heads")
    m.add_argument(
        "--transformer_layers", type=int, default=_D.transformer_layers, help="transformer layers"
    )
    m.add_argument(
        "--transformer_dropout",
        type=float,
        default=_D.transformer_dropout,
        help="dropout probability inside the transformer",
    )
    m.add_argument(
        "--fp64_hyper",
        action=bo,
        default=_D.fp64_hyper,
        help="compute every hyperbolic operation (map into the ball, the transformer's "
        "hyperbolic parts, the loss's distances) in float64",
    )
    m.add_argument(
        "--distance",
        choices=("regular", *SCORES),
        default=_D.distance,
        help="hyperbolic score of a prediction against a target, the same function as the "
        "attention's: -d (distance, also called regular), -d^2 (squared) or "
        "-(cosh(sqrt(c) d) - 1) (cosh); ignored by the Euclidean model",
    )
    m.add_argument(
        "--curvature",
        type=float,
        default=_D.curvature,
        help="c: the ball has curvature -c (the initial value with --learn_curvature)",
    )
    m.add_argument(
        "--learn_curvature",
        action=bo,
        default=_D.learn_curvature,
        help="train the curvature with the model (one learnable ball shared by the "
        "transformer, the map into the ball and the loss; its value is logged every epoch)",
    )
    m.add_argument(
        "--feature_dim",
        type=int,
        default=_D.feature_dim,
        help="width of the features (the ball's dimension); divisible by --num_heads",
    )
    m.add_argument(
        "--encoder_width", type=int, default=_D.encoder_width, help="channels of the encoder"
    )
    m.add_argument("--gru_layers", type=int, default=_D.gru_layers, help="ConvGRU layers")
    d = p.add_argument_group("data (procedural sprite videos)")
    d.add_argument("--img_dim", type=int, default=_D.img_dim, help="frame side in pixels (x8)")
    d.add_argument("--seq_len", type=int, default=_D.seq_len, help="frames per block")
    d.add_argument("--num_seq", type=int, default=_D.num_seq, help="blocks per video")
    d.add_argument(
        "--pred_step", type=int, default=_D.pred_step, help="future blocks to predict (< num_seq)"
    )
    d.add_argument(
        "--num_distractors",
        type=int,
        default=_D.num_distractors,
        help="distractor sprites per video",
    )
    d.add_argument(
        "--group_size",
        type=int,
        default=_D.group_size,
        help="videos of a batch per group: a group shares appearance, distractors and the "
        "actor's position at the last context frame, and differs only by the actor's motion",
    )
    d.add_argument(
        "--train_batches",
        type=int,
        default=_D.train_batches,
        help="training batches per epoch (fresh videos every epoch)",
    )
    d.add_argument(
        "--val_batches",
        type=int,
        default=_D.val_batches,
        help="batches of the fixed validation set",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch_size", type=int, default=_D.batch_size, help="videos per batch")
    o.add_argument("--lr", type=float, default=_D.lr, help="peak learning rate (AdamW)")
    o.add_argument("--wd", type=float, default=_D.wd, help="weight decay")
    o.add_argument("--warmup_steps", type=int, default=_D.warmup_steps, help="linear warm-up steps")
    o.add_argument(
        "--grad_clip", type=float, default=_D.grad_clip, help="gradient-norm clip (0: off)"
    )
    o.add_argument("--epochs", type=int, default=_D.epochs, help="epochs")
    o.add_argument("--seed", type=int, default=_D.seed, help="seed of the model and the data")
    o.add_argument(
        "--max_nonfinite",
        type=int,
        default=_D.max_nonfinite,
        help="stop after this many consecutive steps with a non-finite loss",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--num_workers", type=int, default=_D.num_workers, help="data-loading worker processes"
    )
    r.add_argument(
        "--threads",
        type=int,
        default=_D.threads,
        help="torch intra-op CPU threads (0: torch's default). The model's tensors are small, "
        "so one thread is usually fastest on a few shared cores",
    )
    r.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default=_D.device,
        help="where to train (auto: CUDA when available)",
    )
    r.add_argument(
        "--out",
        default=_D.out,
        help="run folder (default: runs/<UTC time>, or the checkpoint's folder with --resume)",
    )
    r.add_argument(
        "--resume",
        default=_D.resume,
        metavar="PATH",
        help="continue exactly from this checkpoint (or run folder: its checkpoint_last.pt)",
    )
    r.add_argument("--progress", action=bo, default=_D.progress, help="show the progress bar")
    r.add_argument(
        "--compile",
        action=bo,
        default=_D.compile,
        help="run the training step's forward pass and loss (and, through AOTAutograd, their "
        "backward) through torch.compile: inductor backend, default mode (max-autotune's "
        "kernel search costs much compile time for little gain at these small sizes; "
        "reduce-overhead's CUDA graphs help only on a GPU), fullgraph=False (a graph break "
        "costs speed, not the run), dynamic=False (every training batch has the same shape, so "
        "one static-shape graph serves the whole run). The first step pays for the "
        "compilation (minutes on a few CPU cores; it counts in epoch 1's clips/s). "
        "Validation runs eagerly and checkpoints hold the plain module's weights, so a run "
        "resumes with or without --compile. Needs a C++ compiler on the CPU, Triton on CUDA",
    )
    return p


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainConfig:
    """Turn parsed flags into a :class:`TrainConfig`; an impossible combination calls
    ``parser.error`` (exit status 2, one line naming the reason).
    """
    config = TrainConfig.from_dict(vars(args))
    problems = config.problems()
    if problems:
        parser.error(problems[0])
    config.distance = canonical_score(config.distance)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train, and return the exit status.

    0: finished; 130 / 143: stopped by SIGINT / SIGTERM after saving a checkpoint (0 when a
    hook stopped it); 1: the run diverged; 2: bad flags, an unusable ``--resume``, a
    missing optional dependency (one line naming the extra that brings it, before training)
    or a ``--compile`` that cannot work (one line: before training when it can be told up
    front, else at the step where ``torch.compile`` failed, with the full report in the run
    folder's ``compile_error.log``).
    """
    from poincare._optional import MissingDependencyError, require

    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(parser, args)
    try:
        from training.trainer import CompileError, TrainingDivergedError, run

        require("matplotlib", extra="train", purpose="the training curves' plot")
    except MissingDependencyError as e:
        print(f"train_cli.py: error: {e}", file=sys.stderr)
        return 2
    try:
        result = run(config)
    except CheckpointError as e:
        parser.error(str(e))
    except TrainingDivergedError as e:
        print(f"train_cli.py: error: {e}", file=sys.stderr)
        return 1
    except CompileError as e:
        print(f"train_cli.py: error: {e}", file=sys.stderr)
        return 2
    except MissingDependencyError as e:
        print(f"train_cli.py: error: {e}", file=sys.stderr)
        return 2
    if result.interrupted:
        return 128 + result.stop_signal if result.stop_signal else 0
    final = result.final
    if final:
        print(
            f"finished {len(result.history)} epochs in {result.out_dir}: "
            f"val top-1 {100 * final['val_top1']:.2f}% top-5 {100 * final['val_top5']:.2f}% "
            f"(chance {100 * final['chance_top1']:.2f}% / {100 * final['chance_top5']:.2f}%), "
            f"non-finite steps skipped: {result.nonfinite_total}"
        )
    return 0
