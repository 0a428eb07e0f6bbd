"""Command-line interface of the training loop (``train_cli.py`` calls :func:`main`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from poincare.nn.functional import SCORES, canonical_score
from training.checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint
from training.config import DATASETS, INVOCATION_KEYS, TrainConfig

__all__ = ["build_parser", "config_from_args", "explicit_settings", "main"]

_D = TrainConfig()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...``) and exit status 2,
    and which takes no abbreviated flags (so that :func:`explicit_settings` can tell which
    settings the command line gave)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, except where there is none (``None``: the help says what
    happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``train_cli.py``; every flag is documented in ``--help``."""
    p = _Parser(
        prog="train_cli.py",
        description=(
            "Train the self-supervised video future-prediction model (Euclidean or hyperbolic; "
            "ConvGRU or hyperbolic transformer aggregator) on the embedded procedural sprite "
            "videos, on folders of frames or on video files, with per-epoch validation of "
            "future-retrieval accuracy. The plain command trains the hyperbolic transformer. "
            "Several processes: torchrun --nproc_per_node N train_cli.py ..."
        ),
        formatter_class=_HelpFormatter,
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
    m.add_argument(
        "--space_time",
        action=bo,
        default=_D.space_time,
        help="factorised space-time attention: every transformer layer also attends across the "
        "feature map's locations within each time step, before its causal attention over time",
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
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        choices=DATASETS,
        default=_D.dataset,
        help="sprites: the embedded procedural videos; frames: folders of JPEG/PNG frames "
        "listed in --split_csv; video: video files (mp4, avi, webm, mkv, mov) under --data_root, "
        "decoded with PyAV",
    )
    d.add_argument(
        "--data_root",
        default=_D.data_root,
        help="folder of the frame folders (relative paths of the CSV start here) or of the "
        "video files",
    )
    d.add_argument(
        "--split_csv",
        default=_D.split_csv,
        help="CSV of the videos, one row per video, no header: video_folder, num_frames"
        "[, labels...]; without --val_csv, --val_share of them are held out for validation",
    )
    d.add_argument("--val_csv", default=_D.val_csv, help="a separate CSV of the validation videos")
    d.add_argument(
        "--ds", type=int, default=_D.ds, help="frame step of real video (take every ds-th frame)"
    )
    d.add_argument(
        "--val_share",
        type=float,
        default=_D.val_share,
        help="share held out for validation when there is no --val_csv",
    )
    d.add_argument(
        "--holdout",
        choices=("video", "time"),
        default=_D.holdout,
        help="what --val_share holds out: whole videos, or the last part of every video's "
        "frames (for a few long videos)",
    )
    d.add_argument(
        "--clips_per_video",
        type=int,
        default=_D.clips_per_video,
        help="clips drawn from every real video per epoch",
    )
    d.add_argument(
        "--cache_dir",
        default=_D.cache_dir,
        help="--dataset video: decode every video once into frame folders here, then read "
        "those (faster epochs); not given: decode the files every time",
    )
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
    o.add_argument(
        "--batch_size",
        type=int,
        default=_D.batch_size,
        help="videos per batch (the global batch: with N processes each takes 1/N of it)",
    )
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
        "--num_workers",
        type=int,
        default=_D.num_workers,
        help="data-loading worker processes (a worker that cannot read a file, dies or stalls "
        "stops the run with one line, after saving the state reached)",
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
        help="run folder; not given: a new runs/<UTC time> (with a -2, -3 ... suffix when "
        "taken), or with --resume the folder that holds the checkpoint now (a copied or moved "
        "run folder continues in place). One run at a time may use a folder",
    )
    r.add_argument(
        "--resume",
        default=_D.resume,
        metavar="PATH",
        help="continue from this checkpoint (or run folder: its checkpoint_last.pt) with the "
        "checkpoint's settings; a flag given with it overrides that setting: architecture and "
        "data flags must match, --epochs, --lr, --warmup_steps, --wd and --grad_clip apply "
        "from the step reached. The file is verified first (archive checksums, finite "
        "weights and optimiser state); a damaged one is refused",
    )
    r.add_argument(
        "--tensorboard",
        action=bo,
        default=_D.tensorboard,
        help="write TensorBoard event files into the run folder's tensorboard/ (not given: "
        "when the tensorboard package is installed)",
    )
    r.add_argument(
        "--cross_rank_negatives",
        action=bo,
        default=_D.cross_rank_negatives,
        help="with several processes (torchrun), score every rank's predictions against the "
        "targets of all ranks (more negatives, the one-process loss of the global batch)",
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
    e = p.add_argument_group("evaluation (radius by horizon and ambiguity, the Poincaré disk)")
    e.add_argument(
        "--eval_batches",
        type=int,
        default=_D.eval_batches,
        help="batches of held-out test videos evaluated at the end of training (real video: "
        "the validation clips); writes eval.json and the radius and disk PNGs into the run "
        "folder. 0: no evaluation",
    )
    e.add_argument(
        "--eval_only",
        action="store_true",
        default=_D.eval_only,
        help="evaluate the --resume checkpoint into its run folder (or --out) and train nothing",
    )
    e.add_argument(
        "--probe",
        action="store_true",
        default=_D.probe,
        help="early action recognition: freeze the --resume checkpoint's model and train probes "
        "(HyperbolicMLR, or linear for the Euclidean model) for the coarse and fine actions on "
        "its context and prediction representations after each number of observed blocks; "
        "writes probe.json and probe.png into its run folder (or --out) and trains nothing else",
    )
    e.add_argument(
        "--probe_batches",
        type=int,
        default=_D.probe_batches,
        help="batches of videos that train the probes (the test videos: --eval_batches)",
    )
    return p


def explicit_settings(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The settings (``TrainConfig`` field names) that ``argv`` gives explicitly.

    The parser takes no abbreviations, so a setting is explicit when one of its flags
    (``--name``, ``--name=value`` or ``--no-name``) appears in ``argv``."""
    found: set[str] = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                found.add(action.dest)
    return found


def config_from_args(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str] | None = None,
) -> TrainConfig:
    """Turn parsed flags into a :class:`TrainConfig`; an impossible combination calls
    ``parser.error`` (exit status 2, one line naming the reason).

    With ``--resume`` and ``argv`` (the command line), the settings that ``argv`` does not
    give are the checkpoint's, so that ``--resume`` alone continues the run exactly as it was
    configured; the ones it gives override them (and are checked by the trainer). The
    settings of one command (:data:`~training.config.INVOCATION_KEYS`: ``--out``,
    ``--resume``, ``--eval_only``, ``--probe``) always come from ``argv``: without ``--out``
    the run folder is the one that holds the checkpoint now. A checkpoint that cannot be read
    or is damaged ends the program with one line and exit status 2.
    """
    values = vars(args)
    if argv is not None and args.resume is not None:
        try:
            saved = load_checkpoint(args.resume)["config"]
        except CheckpointError as e:  # a file problem, not a flag problem: no "see --help"
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        own = explicit_settings(parser, argv) | set(INVOCATION_KEYS)
        names = set(TrainConfig().to_dict())
        values = {
            k: (v if k in own or k not in saved or k not in names else saved[k])
            for k, v in values.items()
        }
    config = TrainConfig.from_dict(values)
    problems = config.problems()
    if problems:
        parser.error(problems[0])
    config.distance = canonical_score(config.distance)
    return config


def _require_extras(config: TrainConfig) -> None:
    """Raise :class:`~poincare._optional.MissingDependencyError` (naming the extra) for the
    first optional module that this run needs and cannot import: the data set's (Pillow for
    ``--dataset frames``; PyAV and Pillow for ``--dataset video``: the ``video`` extra), then
    tensorboard when ``--tensorboard`` asks for it. The data set's come first: matplotlib (of
    the ``train`` extra, checked next) needs Pillow too."""
    from poincare._optional import require

    if config.dataset in ("frames", "video"):
        modules = ("av", "PIL") if config.dataset == "video" else ("PIL",)
        for module in modules:
            require(module, extra="video", purpose=f"--dataset {config.dataset}")
    if config.tensorboard:
        require("tensorboard", extra="tensorboard", purpose="--tensorboard")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train, and return the exit status.

    0: finished; 130 / 143: stopped by SIGINT / SIGTERM after saving a checkpoint (0 when a
    hook stopped it); 1: the run diverged (non-finite steps, non-finite weights, or no step
    that succeeded) or a checkpoint could not be written (a full disk: the previous one stays
    intact), or a data-loading worker died or stalled (after saving the state reached);
    2: bad flags, an unusable or damaged ``--resume`` checkpoint, an unusable ``--out``,
    missing or unreadable data (a file that cannot be read in the middle of a run: after
    saving the state reached), a missing optional dependency (one line naming the extra that
    brings it, before training)
    or a ``--compile`` that cannot work (one line: before training when it can be told up
    front, else at the step where ``torch.compile`` failed, with the full report in the run
    folder's ``compile_error.log``). Every error is one line on stderr.
    """
    from poincare._optional import MissingDependencyError, require

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    config = config_from_args(parser, args, argv)
    try:
        _require_extras(config)
        from training.distributed import DistributedSetupError
        from training.loader import DataLoadingError
        from training.run_folder import RunFolderError
        from training.trainer import CompileError, TrainingDivergedError, collapse_warning, run
        from training.video_data import VideoDataError

        require("matplotlib", extra="train", purpose="the training curves' plot")
    except MissingDependencyError as e:
        print(f"train_cli.py: error: {e}", file=sys.stderr)
        return 2

    def fail(message: object, status: int) -> int:
        print(f"train_cli.py: error: {message}", file=sys.stderr)
        return status

    try:
        result = run(config)
    except CheckpointWriteError as e:
        return fail(e, 1)
    except (CheckpointError, RunFolderError, VideoDataError, DistributedSetupError) as e:
        return fail(e, 2)
    except TrainingDivergedError as e:
        return fail(e, 1)
    except (CompileError, MissingDependencyError) as e:
        return fail(e, 2)
    except DataLoadingError as e:
        return fail(e, e.status)
    if result.interrupted:
        return 128 + result.stop_signal if result.stop_signal else 0
    if result.evaluated_only:
        written = [
            n for n, on in (("eval.json", config.eval_only), ("probe.json", config.probe)) if on
        ]
        print(f"written to {result.out_dir}: " + ", ".join(written))
        return 0
    final = result.final
    if final and result.is_main:  # under torchrun, rank 0 alone reports
        epochs = len(result.history)
        print(
            f"finished {epochs} epoch{'s' if epochs != 1 else ''} in {result.out_dir}: "
            f"val top-1 {100 * final['val_top1']:.2f}% top-5 {100 * final['val_top5']:.2f}% "
            f"(chance {100 * final['chance_top1']:.2f}% / {100 * final['chance_top5']:.2f}%), "
            f"non-finite steps skipped: {result.nonfinite_total}"
            + (
                "; the predictions collapsed (see the warning above)"
                if collapse_warning(final)
                else ""
            )
        )
    return 0
