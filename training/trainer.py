"""The training loop of the video future-prediction model.

``run(config)`` builds the model, the optimiser (AdamW; a learnable curvature is one more
parameter of it), a warm-up + cosine learning-rate schedule, and trains on the
procedural sprite videos of :mod:`training.data`, validating after every epoch with the
top-1/top-5 accuracy of future retrieval. The run folder receives ``config.json``,
``metrics.jsonl``, ``metrics.csv``, ``checkpoint_last.pt``, ``checkpoint_best.pt`` and
``curves.png``.

Nothing is lost: ``checkpoint_last.pt`` is written atomically at the end of every epoch and
whenever SIGINT/SIGTERM (or an ``on_step`` hook) asks to stop, at the next step boundary,
with the position inside the epoch; also when loading a batch fails (a file that cannot be read,
a loader worker that dies or stalls: :mod:`training.loader`), before the run ends with
:class:`~training.loader.DataLoadingError`. A resumed run continues in the folder that holds its
checkpoint now (or ``out``), never in the folder recorded when it was made, and a checkpoint is
verified before any use (:mod:`training.checkpoint_integrity`). Because every batch is a pure
function of ``(seed, epoch, index)`` and the generators' states are saved, a resumed run
reproduces the uninterrupted one bit for bit on the CPU.

Precision: ``--fp64_hyper`` runs every forward pass (training and validation) inside
``poincare.upcast(torch.float64)``, the one precision route of :mod:`poincare`: the model and
the loss read it, they carry no flag of their own.

Compilation: ``--compile`` passes the training step's loss computation (``model.loss``: the
forward pass and the contrastive loss; AOTAutograd compiles their backward with them) through
``torch.compile`` (inductor, default mode, ``dynamic=False``: the training batches all have one
shape). The module itself is not wrapped: checkpoints hold its plain ``state_dict`` (no
``_orig_mod.`` prefixes), validation runs it eagerly, and a run resumes with or without
``--compile``. What can be told before training (a Python that Dynamo does not support, no C++
compiler for inductor on the CPU, no Triton on CUDA) raises :class:`CompileError` before the
first step; a failure of the compiler itself raises it at the step, with the full report in
the run folder's ``compile_error.log``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import poincare
from poincare._optional import optional_imports

with optional_imports("numpy", "tqdm", extra="train", purpose="training"):
    import numpy as np
    from tqdm import tqdm

from models.loss import ContrastiveOutput
from models.video import VideoFuturePredictor
from training.analysis import evaluate_run, format_summary, model_title, observed_frames
from training.checkpoint import (
    CheckpointError,
    atomic_write_text,
    check_compatible,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    validate_checkpoint,
)
from training.config import SCHEDULE_KEYS, TrainConfig
from training.data import SpriteBatch, batch_seed
from training.distributed import (
    DistContext,
    DistributedSetupError,
    broadcast_object,
    gather_with_grad,
    init_distributed,
    local_slice,
)
from training.loader import (
    ORDER_SALT,
    DataLoadingError,
    LoaderBatches,
    RealData,
    build_real_data,
    data_config,
    describe_error,
    sprite_batches,
    steps_per_epoch,
    train_loader,
    val_batches,
)
from training.metrics import plot_curves, write_metrics
from training.probe import (
    PROBE_EPOCH,
    extract_features,
    format_probe_table,
    run_probes,
    write_probes,
)
from training.run_folder import (
    RunFolderError,
    RunLock,
    default_run_folder,
    prepare_run_folder,
    remove_stale_temporaries,
)
from training.tensorboard_log import TensorBoardLog, epoch_scalars

__all__ = [
    "COLLAPSE_SHELL",
    "COLLAPSE_SPREAD",
    "CompileError",
    "RealData",
    "RunResult",
    "StepResult",
    "TrainingDivergedError",
    "WarmupCosine",
    "apply_schedule",
    "build_model",
    "build_optimizer",
    "build_real_data",
    "collapse_warning",
    "compile_problem",
    "data_config",
    "evaluate",
    "loss_function",
    "prediction_stats",
    "resolve_device",
    "run",
    "steps_per_epoch",
    "train_step",
]


class TrainingDivergedError(RuntimeError):
    """The loss stayed non-finite for ``max_nonfinite`` consecutive steps."""


class CompileError(RuntimeError):
    """``--compile`` cannot work here (found before training) or ``torch.compile`` failed."""


# The backend of ``--compile``. An internal knob, not a flag: the tests set a cheaper one
# ("aot_eager" traces forward and backward with Dynamo and AOTAutograd as inductor does,
# without generating code).
_COMPILE_BACKEND: str | Callable[..., Any] = "inductor"
_COMPILER_MODULES = ("torch._dynamo", "torch._inductor", "torch._functorch")


@dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        out_dir: the run folder.
        history: one metrics dict per finished epoch (as in ``metrics.jsonl``).
        interrupted: the run stopped early on a signal or a hook (``stop_signal`` says which
            signal, 0 for a hook); ``checkpoint_last.pt`` holds where it stopped.
        step: batches done in all.
        nonfinite_total: steps skipped because the loss or the gradient was not finite.
        final: the last epoch's metrics (empty when no epoch finished).
        model: the trained model (its state when the run ended), on the run's device.
        evaluated_only: the run was ``eval_only`` or ``probe``: it evaluated or probed a
            checkpoint and trained nothing.
        evaluation: the report written to ``eval.json`` (empty when none was made).
        is_main: this process wrote the run folder and reports (rank 0 under ``torchrun``,
            else the one process); only its ``final`` holds the validation metrics.
    """

    out_dir: Path
    history: list[dict[str, Any]]
    interrupted: bool = False
    stop_signal: int = 0
    step: int = 0
    nonfinite_total: int = 0
    final: dict[str, Any] = field(default_factory=dict)
    model: VideoFuturePredictor | None = None
    evaluated_only: bool = False
    evaluation: dict[str, Any] = field(default_factory=dict)
    is_main: bool = True


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then a cosine decay to 0
    at ``total`` steps: ``f(s) = (s+1)/warmup`` for ``s < warmup``, else
    ``0.5 (1 + cos(π (s - warmup) / (total - warmup)))``, clamped to ``[0, 1]``.
    """

    def __init__(self, warmup: int, total: int) -> None:
        if warmup < 0 or total <= 0:
            raise ValueError(f"need warmup >= 0 and total > 0, got {warmup} and {total}")
        self.warmup = min(warmup, total - 1)
        self.total = total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available) -> a device.

    Raises ``ValueError`` for another name or for ``cuda`` without a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")


def build_model(config: TrainConfig) -> VideoFuturePredictor:
    """The :class:`~models.video.VideoFuturePredictor` that ``config`` describes."""
    return VideoFuturePredictor(
        num_seq=config.num_seq,
        seq_len=config.seq_len,
        pred_step=config.pred_step,
        img_dim=config.img_dim,
        feature_dim=config.feature_dim,
        encoder_width=config.encoder_width,
        hyperbolic=config.hyperbolic,
        use_transformer=config.use_transformer,
        space_time=config.space_time,
        num_heads=config.num_heads,
        transformer_layers=config.transformer_layers,
        transformer_dropout=config.transformer_dropout,
        c=poincare.PoincareBall(config.curvature, learnable=config.learn_curvature),
        score=config.distance,
        gru_layers=config.gru_layers,
    )


def compile_problem(device: torch.device, backend: object = "inductor") -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run on ``device``, as far as can be told
    without compiling anything; ``None`` when nothing is in the way.

    Checks that Dynamo supports this Python, and for inductor that a C++ compiler exists (CPU)
    or Triton is installed (CUDA).
    """
    try:
        from torch._dynamo.eval_frame import check_if_dynamo_supported

        check_if_dynamo_supported()
    except Exception as e:
        return f"--compile: torch.compile does not work here ({describe_error(e)})"
    if backend != "inductor":
        return None
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as e:
            return (
                "--compile: torch.compile's inductor backend needs a C++ compiler on the CPU "
                f"and found none ({describe_error(e)}); install g++ or set CXX, or train "
                "without --compile"
            )
    elif device.type == "cuda":
        try:
            from torch.utils._triton import has_triton

            found = has_triton()
        except Exception:
            found = False
        if not found:
            return (
                "--compile: torch.compile's inductor backend needs Triton on CUDA and found "
                "none; install triton, or train without --compile"
            )
    return None


@contextlib.contextmanager
def _compile_errors(active: bool, log: Path, step: int) -> Iterator[None]:
    """Turn an exception raised by the compiler stack (Dynamo, AOTAutograd, inductor) into a
    one-line :class:`CompileError`, writing the full traceback to ``log``."""
    if not active:
        yield
        return
    try:
        yield
    except Exception as e:
        if not type(e).__module__.startswith(_COMPILER_MODULES):
            raise
        atomic_write_text(log, traceback.format_exc())
        raise CompileError(
            f"--compile: torch.compile failed at training step {step + 1} ({describe_error(e)}); "
            f"the full report is in {log}. Train without --compile (it changes the speed, "
            "not the model)"
        ) from e


def precision(config: TrainConfig) -> contextlib.AbstractContextManager[object]:
    """The precision policy of a run's forward passes: ``poincare.upcast(torch.float64)``
    under ``fp64_hyper``, else a no-op context."""
    if config.fp64_hyper:
        return poincare.upcast(torch.float64)
    return contextlib.nullcontext()


LossFunction = Callable[[torch.Tensor], ContrastiveOutput]


def loss_function(
    model: VideoFuturePredictor,
    config: TrainConfig,
    ctx: DistContext | None = None,
    forward: nn.Module | None = None,
) -> LossFunction:
    """What a training step calls on a video batch.

    In one process: ``model.loss``. With several processes (``ctx``), ``forward`` (the
    :class:`~torch.nn.parallel.DistributedDataParallel` wrapper of ``model``) computes
    ``(pred, target)`` and ``model.loss_of`` the loss; with ``cross_rank_negatives`` the
    targets of every rank are gathered (:func:`training.distributed.gather_with_grad`) and
    each prediction is ranked against all of them. With ``compile``, the function goes through
    ``torch.compile`` (the backend of :data:`_COMPILE_BACKEND`, inductor; default mode;
    ``dynamic=False``). The module itself is not wrapped, so its ``state_dict`` stays plain.
    Compilation happens at the first call.
    """
    fn: LossFunction
    if ctx is None or not ctx.active:
        fn = model.loss
    else:
        wrapped = model if forward is None else forward
        context = ctx

        def distributed_loss(video: torch.Tensor) -> ContrastiveOutput:
            pred, target = wrapped(video)
            if not config.cross_rank_negatives:
                return model.loss_of(pred, target)
            flat = target.reshape(-1, target.shape[-1])
            candidates = gather_with_grad(flat, context)
            return model.loss_of(
                pred, target, candidates=candidates, offset=context.rank * flat.shape[0]
            )

        fn = distributed_loss
    if not config.compile:
        return fn
    compiled: LossFunction = torch.compile(fn, backend=_COMPILE_BACKEND, dynamic=False)
    return compiled


@dataclass(frozen=True)
class StepResult:
    """What :func:`train_step` reports.

    Attributes:
        taken: the optimiser stepped (the loss and the gradient norm were finite on every
            rank).
        loss: the loss, averaged over the ranks (``nan`` when not finite somewhere).
        top1: the training top-1 retrieval accuracy, averaged over the ranks.
    """

    taken: bool
    loss: float
    top1: float


def train_step(
    model: nn.Module,
    loss_fn: LossFunction,
    optimizer: torch.optim.Optimizer,
    video: torch.Tensor,
    config: TrainConfig,
    ctx: DistContext | None = None,
) -> StepResult:
    """One optimisation step on ``video``: the loss (under the run's :func:`precision`),
    backward, the gradient clip (``grad_clip``; 0: the norm is only checked) and the
    optimiser's step. The step is skipped (no parameter changes, gradients cleared) when the
    loss or the gradient norm is not finite. With several processes (``ctx``), the ranks
    agree on that decision (one ``all_reduce`` of the finiteness and the loss before the
    backward pass, so that no rank enters DDP's gradient reduction alone; the gradients it
    averages, and so their norm, are then the same on every rank)."""
    with precision(config):
        out = loss_fn(video)
    finite = torch.isfinite(out.loss)
    summary = torch.stack(
        [
            finite.to(torch.float64),
            torch.where(finite, out.loss.detach(), 0.0).to(torch.float64),
            out.top1.detach().to(torch.float64),
        ]
    )
    world = 1
    if ctx is not None and ctx.active:
        dist.all_reduce(summary)
        world = ctx.world_size
    n_finite, loss_sum, top1_sum = summary.tolist()
    ok = n_finite == world
    if ok:
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(out.loss)
        params = [p for p in model.parameters() if p.grad is not None]
        if config.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        else:
            gnorm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
            )
        ok = bool(torch.isfinite(gnorm))
        if ok:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss = loss_sum / world if n_finite == world else math.nan
    return StepResult(taken=ok, loss=loss, top1=top1_sum / world)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW(lr, weight decay ``wd``); biases, norm weights and the (log) curvature of a
    learnable ball get no decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.wd},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def apply_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    config: TrainConfig,
    steps_per_epoch: int,
) -> float:
    """Make the optimiser and the schedule follow ``config`` from the scheduler's current step
    on, and return the learning rate they now give.

    A resumed run restores the optimiser's and the schedule's states, which hold the learning
    rate, the warm-up and the length of the run that wrote them. This replaces them with
    ``config``'s: the schedule becomes ``WarmupCosine(warmup_steps, epochs * steps_per_epoch)``
    with peak ``lr``, evaluated at the step reached (so a run extended from 2 to 12 epochs
    continues on the cosine of 12 epochs, and the warm-up counts the steps already done), and
    the decayed parameter group takes ``wd``. With unchanged settings it changes nothing."""
    schedule = WarmupCosine(config.warmup_steps, config.epochs * steps_per_epoch)
    scheduler.lr_lambdas = [schedule for _ in optimizer.param_groups]
    scheduler.base_lrs = [config.lr for _ in optimizer.param_groups]
    factor = schedule(scheduler.last_epoch)
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = config.lr
        group["lr"] = config.lr * factor
        if i == 0:
            group["weight_decay"] = config.wd
    scheduler._last_lr = [float(g["lr"]) for g in optimizer.param_groups]
    return config.lr * factor


# Collapse detection: predictions whose mean pairwise distance is below this (hyperbolic
# distance; for the Euclidean model, relative to their mean norm) are one point.
COLLAPSE_SPREAD = 1e-3
# ... and a point within this hyperbolic distance of the largest representable radius is on
# the outermost shells (each halving of 1 - sqrt(c)|x| adds ln 2 = 0.69 to the radius, so this
# covers the last two or three representable norms, where rounded points land); more than
# COLLAPSE_SHELL of the predictions there is a saturated model.
SHELL_MARGIN = 1.5
COLLAPSE_SHELL = 0.5
_SPREAD_SAMPLE = 256


def prediction_stats(
    pred: torch.Tensor, *, hyperbolic: bool, c: float | torch.Tensor
) -> dict[str, float]:
    """Statistics of a batch of predictions ``pred (..., D)`` that reveal a collapsed model.

    ``spread``: the mean pairwise distance of (up to 256, evenly strided) predictions:
    hyperbolic distance in the ball, or for the Euclidean model the Euclidean distance divided
    by the mean norm. ``radius``: the mean distance from the origin (the norm for the
    Euclidean model). ``shell``: the fraction of predictions within :data:`SHELL_MARGIN` (1.5)
    of the largest radius ``pred``'s dtype can represent (:func:`poincare.max_radius`; 0 for
    the Euclidean model).
    """
    flat = pred.detach().reshape(-1, pred.shape[-1])
    stride = max(1, flat.shape[0] // _SPREAD_SAMPLE)
    sample = flat[::stride][:_SPREAD_SAMPLE]
    m = sample.shape[0]
    if hyperbolic:
        r = poincare.dist0(flat, c=c)
        d = poincare.pairwise_dist(sample, sample, c=c)
        cap = poincare.max_radius(flat.dtype, c=float(c))
        shell = float((r >= cap - SHELL_MARGIN).float().mean())
        spread = float(d.sum() / max(m * (m - 1), 1))
        radius = float(r.mean())
    else:
        norms = torch.linalg.vector_norm(flat, dim=-1)
        d = torch.cdist(sample, sample)
        radius = float(norms.mean())
        spread = float(d.sum() / max(m * (m - 1), 1)) / max(radius, 1e-30)
        shell = 0.0
    return {"spread": spread, "radius": radius, "shell": shell}


def collapse_warning(record: dict[str, Any]) -> str | None:
    """A warning when an epoch's validation predictions have collapsed (``val_pred_spread``
    below :data:`COLLAPSE_SPREAD`) or saturated (``val_pred_shell`` above
    :data:`COLLAPSE_SHELL`); ``None`` otherwise."""
    spread = record.get("val_pred_spread", math.nan)
    shell = record.get("val_pred_shell", math.nan)
    if math.isfinite(spread) and spread < COLLAPSE_SPREAD:
        return (
            f"warning: the predictions have collapsed to one point (mean pairwise distance "
            f"{spread:.2e} < {COLLAPSE_SPREAD:g}) at epoch {record['epoch']}; try a smaller --lr"
        )
    if math.isfinite(shell) and shell > COLLAPSE_SHELL:
        return (
            f"warning: {100 * shell:.0f}% of the predictions lie on the outermost "
            f"representable shell at epoch {record['epoch']}; the model has saturated. Try a "
            "smaller --lr or --fp64_hyper"
        )
    return None


@torch.no_grad()
def evaluate(
    model: VideoFuturePredictor,
    config: TrainConfig,
    device: torch.device,
    real: RealData | None = None,
) -> dict[str, float]:
    """Validation metrics on the fixed validation set (the sprites: ``val_batches`` batches,
    epoch 0 of the ``val`` split; real video: every validation clip, in batches of
    ``batch_size``): mean loss, top-1/top-5 retrieval accuracy and their chance levels
    ``1/M`` and ``min(5, M)/M`` with ``M`` the candidates per batch, the top-1 accuracy
    within groups of sprite videos that differ only by their motion (``val_group_top1``,
    chance ``1/group_size``; ``nan`` for real video, which has no such groups), and the
    :func:`prediction_stats` means (``val_pred_spread``, ``val_pred_radius``,
    ``val_pred_shell``). Batches with a non-finite loss are counted in ``val_skipped``;
    every metric is ``nan`` when all were. Uses no global RNG.

    Raises :class:`~training.loader.DataLoadingError` when a validation clip cannot be read or
    a loader worker fails (the workers are shut down first).
    """
    was_training = model.training
    model.eval()
    losses, top1, top5, group = [], [], [], []
    stats: dict[str, list[float]] = {"spread": [], "radius": [], "shell": []}
    gs = min(config.group_size, config.batch_size)
    candidates = 0
    skipped = 0
    try:
        with LoaderBatches(val_batches(config, real)) as batches:
            for batch in batches:
                with precision(config):
                    pred, target = model(batch.video.to(device))
                    out = model.loss_of(pred, target)
                    group_hit = model.group_top1(pred, target, gs) if real is None else None
                candidates = out.num_candidates
                if not torch.isfinite(out.loss):
                    skipped += 1
                    continue
                if group_hit is not None:
                    group.append(group_hit.item())
                losses.append(out.loss.item())
                top1.append(out.top1.item())
                top5.append(out.top5.item())
                for k, v in prediction_stats(
                    pred, hyperbolic=model.hyperbolic, c=model.ball.c.detach()
                ).items():
                    stats[k].append(v)
    finally:
        model.train(was_training)
    nan = float("nan")

    def mean(xs: list[float]) -> float:
        return float(np.mean(xs)) if xs else nan

    return {
        "val_loss": mean(losses),
        "val_top1": mean(top1),
        "val_top5": mean(top5),
        "chance_top1": 1.0 / candidates if candidates else nan,
        "chance_top5": min(5, candidates) / candidates if candidates else nan,
        "val_candidates": float(candidates),
        "val_group_top1": mean(group),
        "chance_group_top1": 1.0 / gs if real is None else nan,
        "val_skipped": float(skipped),
        "val_pred_spread": mean(stats["spread"]),
        "val_pred_radius": mean(stats["radius"]),
        "val_pred_shell": mean(stats["shell"]),
    }


class _StopFlag:
    """Set by SIGINT/SIGTERM handlers (only a flag: the loop acts at the next step)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = 0

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signum = signum


@contextlib.contextmanager
def _signal_handlers(flag: _StopFlag) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, flag.handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _say(msg: str) -> None:
    """A note or warning: to stderr, beside the progress bar."""
    tqdm.write(msg, file=sys.stderr)


def _report(msg: str) -> None:
    """An epoch line: to stdout (``> train.log`` keeps them), above the progress bar."""
    tqdm.write(msg, file=sys.stdout)


def _format_epoch(h: dict[str, Any], epochs: int, learn_curvature: bool = False) -> str:
    curvature = f"  c {h['curvature']:.4f}" if learn_curvature and "curvature" in h else ""
    group = ""
    if math.isfinite(h.get("val_group_top1", math.nan)):
        group = (
            f"  group top-1 {100 * h['val_group_top1']:.1f}% "
            f"(chance {100 * h['chance_group_top1']:.0f}%)"
        )
    return (
        f"epoch {h['epoch']}/{epochs}  train loss {h['train_loss']:.4f}  "
        f"val loss {h['val_loss']:.4f}  val top-1 {100 * h['val_top1']:.2f}%  "
        f"top-5 {100 * h['val_top5']:.2f}%  (chance {100 * h['chance_top1']:.2f}% / "
        f"{100 * h['chance_top5']:.2f}%){group}  skipped {h['train_skipped']}  "
        f"{h['epoch_seconds']:.1f}s  {h['clips_per_second']:.1f} clips/s{curvature}"
    )


def _finite_weights(model: nn.Module) -> bool:
    return all(
        bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()
    )


def run_evaluation(
    model: VideoFuturePredictor,
    config: TrainConfig,
    device: torch.device,
    real: RealData | None,
    out_dir: Path,
    *,
    epoch: int,
    step: int,
    checkpoint: str | None,
    tb: TensorBoardLog | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (:mod:`training.analysis`) into ``out_dir`` and print the summary.

    Sprites: ``config.eval_batches`` batches of the ``test`` split (fresh videos that neither
    training nor validation sees), with the reveal frames; real video: the validation clips
    (radius by horizon only). Runs in the precision of ``config`` (``--fp64_hyper``). Logs the
    radii and the PNGs to ``tb`` at ``step``. Returns the report written to ``eval.json``.
    Raises :class:`~training.loader.DataLoadingError` when a clip cannot be read.
    """
    batches: Iterable[SpriteBatch]
    if real is None:
        batches = sprite_batches(config, "test", 0, config.eval_batches)
        observed: int | None = observed_frames(config.num_seq, config.seq_len, config.pred_step)
    else:
        batches = val_batches(config, real)
        observed = None
    meta = {
        "epoch": epoch,
        "step": step,
        "checkpoint": checkpoint,
        "data": "sprites test split" if real is None else f"{config.dataset} validation clips",
        "observed_frames": observed,
        "hyperbolic": config.hyperbolic,
        "use_transformer": config.use_transformer,
        "fp64_hyper": config.fp64_hyper,
        "seed": config.seed,
    }
    with precision(config), LoaderBatches(batches) as checked:
        report, _, pngs = evaluate_run(
            model, checked, out_dir, device=device, observed=observed, meta=meta
        )
    if tb is not None:
        scalars = {f"radius/step{e['step']}": e["mean"] for e in report["horizon"]}
        for e in report.get("ambiguity", []):
            scalars[f"radius/hidden_minus_revealed_step{e['step']}"] = e["hidden_minus_revealed"][
                "mean"
            ]
        tb.scalars(scalars, step, prefix="eval/")
        for name in pngs:
            tb.image_png("eval/" + name.removesuffix(".png"), out_dir / name, step)
        tb.flush()
    _report(format_summary(report))
    return report


def run_probe_task(
    model: VideoFuturePredictor,
    config: TrainConfig,
    device: torch.device,
    out_dir: Path,
    *,
    step: int,
    tb: TensorBoardLog | None = None,
) -> dict[str, Any]:
    """Train and score the early-action probes (:mod:`training.probe`) of the frozen
    ``model``: ``config.probe_batches`` batches of the sprite ``train`` split at
    :data:`~training.probe.PROBE_EPOCH` train them, ``config.eval_batches`` batches of the
    ``test`` split score them. Writes ``probe.json`` and ``probe.png`` into ``out_dir``,
    logs the image to ``tb``, prints the table, and returns it."""
    with precision(config):
        train = extract_features(
            model,
            sprite_batches(config, "train", PROBE_EPOCH, config.probe_batches),
            device=device,
        )
        test = extract_features(
            model, sprite_batches(config, "test", 0, config.eval_batches), device=device
        )
    table = {
        "checkpoint_step": step,
        "hyperbolic": config.hyperbolic,
        "use_transformer": config.use_transformer,
        "space_time": config.space_time,
        **run_probes(train, test, seed=config.seed),
    }
    names = write_probes(table, out_dir, model_title(model))
    if tb is not None:
        for name in names:
            tb.image_png("eval/" + name.removesuffix(".png"), out_dir / name, step)
        tb.flush()
    _report(format_probe_table(table))
    return table


def _eval_only(
    config: TrainConfig, ctx: DistContext, ckpt: dict[str, Any], real: RealData | None
) -> RunResult:
    """``--eval_only`` and ``--probe``: load the checkpoint's weights and evaluate or probe
    into the run folder."""
    if ctx.active:
        raise DistributedSetupError(
            "--eval_only and --probe run in one process, not under torchrun"
        )
    out_dir = _run_folder(config, ckpt)
    model = build_model(config).to(ctx.device)
    steps_epoch = steps_per_epoch(config, real)
    validate_checkpoint(ckpt, model, build_optimizer(model, config), steps_per_epoch=steps_epoch)
    model.load_state_dict(ckpt["model"])
    history = list(ckpt["history"])
    report: dict[str, Any] = {}
    with RunLock(out_dir), TensorBoardLog.open(out_dir, config.tensorboard) as tb:
        if config.eval_only:
            report = run_evaluation(
                model,
                config,
                ctx.device,
                real,
                out_dir,
                epoch=int(ckpt["epoch"]),
                step=int(ckpt["step"]),
                checkpoint=str(ckpt["path"]),
                tb=tb,
            )
        if config.probe:
            run_probe_task(model, config, ctx.device, out_dir, step=int(ckpt["step"]), tb=tb)
    return RunResult(
        out_dir=out_dir,
        history=history,
        step=int(ckpt["step"]),
        final=history[-1] if history else {},
        model=model,
        evaluated_only=True,
        evaluation=report,
    )


def run(config: TrainConfig, *, on_step: Callable[[int], bool] | None = None) -> RunResult:
    """Train (or resume) as ``config`` says; see the module docstring.

    Args:
        config: the run's settings (validated here).
        on_step: called after every batch with the number of batches done in all; returning
            ``True`` stops the run at that step boundary exactly as SIGINT/SIGTERM would
            (checkpoint with the position inside the epoch, then return).

    Resuming (``config.resume``): the model, the optimiser, the schedule, the generators and
    the position inside the epoch are restored, so an unchanged run continues bit for bit.
    Architecture and data settings must match the checkpoint's (else
    :class:`~training.checkpoint.CheckpointError` names each difference). The optimisation
    settings ``epochs``, ``lr``, ``warmup_steps``, ``wd`` and ``grad_clip`` may differ: the
    new values apply from the step reached (:func:`apply_schedule`), a note on stderr says
    which and what the learning rate now is, and ``config.json`` records them. The run writes
    ``config.out``, or without it the folder that holds the checkpoint now; the settings it
    records (``config.json``, the checkpoints) name that folder and the checkpoint it resumed.

    Several processes (``torchrun``): see :mod:`training.distributed`. Rank 0 alone writes the
    run folder, the checkpoints, the metrics, the plots and the TensorBoard events, and prints.

    Returns:
        a :class:`RunResult`.

    Raises:
        ValueError: an invalid ``config`` (the message names the setting).
        training.checkpoint.CheckpointError: ``resume`` names a missing or corrupt checkpoint,
            one made with other architecture/data settings, or one whose contents do not fit
            the model; or a checkpoint could not be written (the previous one stays intact).
        training.run_folder.RunFolderError: the run folder cannot be used (a file, unwritable,
            in use by another run, or holding a run that this one does not continue).
        training.video_data.VideoDataError: a missing or unreadable real-video input.
        training.loader.DataLoadingError: a batch could not be loaded in the middle of the run
            (a file that cannot be read: ``status`` 2; a loader worker that died or stalled:
            ``status`` 1); ``checkpoint_last.pt`` then holds the state reached.
        TrainingDivergedError: ``max_nonfinite`` consecutive non-finite steps, weights that
            became non-finite (``checkpoint_last.pt`` then keeps the last finite state), or a
            run in which no step succeeded.
        CompileError: ``compile`` cannot work here (before training, see
            :func:`compile_problem`), or ``torch.compile`` failed at a step (the traceback goes
            to ``compile_error.log`` in the run folder).
    """
    config.validate()
    flag = _StopFlag()
    device = resolve_device(config.device)
    ctx = init_distributed(device)
    try:
        with _signal_handlers(flag):
            return _run(config, on_step, flag, ctx)
    finally:
        ctx.close()


def _gather_rng(ctx: DistContext) -> list[dict[str, Any]]:
    state = get_rng_state()
    if not ctx.active:
        return [state]
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, state)
    return states


def _ranks_in_sync(model: nn.Module, ctx: DistContext) -> bool:
    """Whether every rank holds the same weights: a float64 checksum of each rank's
    parameters (the sums of their values and of their squares), gathered and compared
    exactly (DDP keeps them bit for bit equal)."""
    with torch.no_grad():
        parts = [p.detach().to(torch.float64) for p in model.parameters()]
        local = torch.stack(
            [
                sum((q.sum() for q in parts), torch.zeros((), dtype=torch.float64)),
                sum(((q * q).sum() for q in parts), torch.zeros((), dtype=torch.float64)),
            ]
        ).to(ctx.device)
    gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _run_folder(config: TrainConfig, ckpt: dict[str, Any] | None) -> Path:
    """Create and return the folder a run writes: ``config.out``; else, resuming, the folder
    that holds the checkpoint now (wherever the run that wrote it was, so a copied or moved
    folder continues in place); else a new ``runs/<UTC time>``. Raises
    :class:`~training.run_folder.RunFolderError` for a folder that cannot be used."""
    if config.out is not None:
        return prepare_run_folder(Path(config.out))
    if ckpt is not None:
        return prepare_run_folder(Path(ckpt["path"]).parent)
    return default_run_folder()


def _refuse_another_run(out_dir: Path, ckpt: dict[str, Any] | None) -> None:
    """Raise :class:`~training.run_folder.RunFolderError` when ``out_dir`` holds a run
    (``checkpoint_last.pt``) that this one does not continue: a new run, or a run resumed from
    a checkpoint in another folder, would overwrite it."""
    last = out_dir / "checkpoint_last.pt"
    if not last.exists():
        return
    if ckpt is not None and Path(ckpt["path"]).resolve().parent == out_dir.resolve():
        return
    raise RunFolderError(
        f"run folder {str(out_dir)!r} already holds a run (checkpoint_last.pt); "
        f"continue it with --resume {out_dir}, or choose another --out"
    )


def _shared_failure(failure: DataLoadingError | None, ctx: DistContext) -> DataLoadingError | None:
    """A loading failure of any rank, known to every rank: ``failure`` itself in one process
    or where this rank failed, else the first failing rank's (its message prefixed with the
    rank). One ``all_reduce`` per call; the messages are gathered only when a rank failed."""
    if not ctx.active or not _agree(failure is not None, ctx):
        return failure
    found: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(found, None if failure is None else (str(failure), failure.status))
    if failure is not None:
        return failure
    rank, (message, status) = next((r, f) for r, f in enumerate(found) if f is not None)
    return DataLoadingError(f"process {rank}: {message}", status=status)


def _agree(flag: bool, ctx: DistContext) -> bool:
    """``flag`` on any rank (one ``all_reduce``); ``flag`` itself in one process."""
    if not ctx.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _run(
    config: TrainConfig,
    on_step: Callable[[int], bool] | None,
    flag: _StopFlag,
    ctx: DistContext,
) -> RunResult:
    device = ctx.device
    main = ctx.is_main
    say = _say if main else (lambda msg: None)
    if config.compile:
        problem = compile_problem(device, _COMPILE_BACKEND)
        if problem is not None:
            raise CompileError(problem)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if ctx.active:
        local_slice(config.batch_size, ctx)  # raises when the global batch does not split
    ckpt: dict[str, Any] | None = None
    if config.resume is not None:
        ckpt = load_checkpoint(config.resume)
        notes = check_compatible(ckpt["config"], config.to_dict(), ckpt["path"])
        for note in notes:
            if note.split(":")[0] not in SCHEDULE_KEYS:  # those get their own note below
                say(f"note: resuming with a changed setting ({note})")
    real = build_real_data(config)
    steps_epoch = steps_per_epoch(config, real)
    if real is not None and real.skipped:
        say(
            f"note: skipped {len(real.skipped)} videos too short for one clip of "
            f"{config.num_seq * config.seq_len * config.ds} frames: "
            + ", ".join(real.skipped[:5])
            + (" ..." if len(real.skipped) > 5 else "")
        )

    if config.eval_only or config.probe:
        assert ckpt is not None  # config.problems() requires resume
        return _eval_only(config, ctx, ckpt, real)

    lock: RunLock | None = None
    out_dir = Path(".")
    if main:
        out_dir = _run_folder(config, ckpt)
        lock = RunLock(out_dir)
        lock.acquire()
    try:
        if main:
            _refuse_another_run(out_dir, ckpt)
            for stale in remove_stale_temporaries(out_dir):
                say(f"note: removed {stale}, left by a run that was killed while writing")
        out_dir = Path(broadcast_object(str(out_dir), ctx))
        # what the run records is what it uses: its folder and the checkpoint it resumed
        config = dataclasses.replace(
            config, out=str(out_dir), resume=None if ckpt is None else str(ckpt["path"])
        )
        return _train(config, on_step, flag, ctx, ckpt, real, steps_epoch, out_dir, say)
    finally:
        if lock is not None:
            lock.release()


def _train(
    config: TrainConfig,
    on_step: Callable[[int], bool] | None,
    flag: _StopFlag,
    ctx: DistContext,
    ckpt: dict[str, Any] | None,
    real: RealData | None,
    steps_epoch: int,
    out_dir: Path,
    say: Callable[[str], None],
) -> RunResult:
    device = ctx.device
    main = ctx.is_main
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    model = build_model(config).to(device)
    if ctx.rank > 0:
        # Every rank builds the same initial model (DDP broadcasts rank 0's anyway); from here
        # on the ranks draw different dropout masks. Rank 0 draws what one process draws.
        torch.manual_seed(batch_seed(config.seed, "train", 0, ctx.rank) ^ ORDER_SALT)
    optimizer = build_optimizer(model, config)
    total_steps = config.epochs * steps_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(config.warmup_steps, total_steps)
    )
    epoch, batch_pos, step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best_top1 = -math.inf
    nonfinite_total = 0
    streak = 0
    taken_here = 0
    steps_here = 0
    acc: dict[str, float] = {"loss": 0.0, "top1": 0.0, "n": 0.0, "skipped": 0.0, "seconds": 0.0}
    if ckpt is not None:
        validate_checkpoint(ckpt, model, optimizer, steps_per_epoch=steps_epoch)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        by_rank = ckpt.get("rng_by_rank") or [ckpt["rng"]]
        if ctx.active and len(by_rank) != ctx.world_size:
            say(
                f"note: the checkpoint was written by {len(by_rank)} processes and this run has "
                f"{ctx.world_size}; the data order is the same, dropout draws differ"
            )
        set_rng_state(by_rank[ctx.rank % len(by_rank)], path=ckpt["path"])
        epoch, batch_pos, step = int(ckpt["epoch"]), int(ckpt["batch"]), int(ckpt["step"])
        history = list(ckpt["history"])
        best_top1 = float(ckpt.get("best_top1", -math.inf))
        nonfinite_total = int(ckpt.get("nonfinite_total", 0))
        streak = int(ckpt.get("nonfinite_streak", 0))
        acc = {k: float(v) for k, v in ckpt.get("epoch_accumulators", acc).items()}
        if epoch > config.epochs or (epoch == config.epochs and batch_pos > 0):
            # the same numbering as the stop message: the epoch under way, counted from 1
            where = (
                f"stopped at epoch {epoch + 1}, batch {batch_pos}"
                if batch_pos > 0
                else f"{epoch} epochs finished"
            )
            raise CheckpointError(
                f"--epochs {config.epochs} is fewer than the checkpoint's progress ({where}); "
                f"pass --epochs {max(epoch, 1) + (batch_pos > 0)} or more to continue it"
            )
        if epoch == config.epochs:
            say(
                f"note: the run has already finished its {epoch} epochs; nothing to train "
                "(pass a larger --epochs to train longer)"
            )
        saved = ckpt["config"]
        changed = [k for k in SCHEDULE_KEYS if saved.get(k) != getattr(config, k)]
        lr_now = apply_schedule(optimizer, scheduler, config, steps_epoch)
        if changed:
            say(
                "note: the schedule follows this run's "
                + ", ".join(f"--{k} {getattr(config, k)}" for k in changed)
                + f" from step {step} of {total_steps}: learning rate {lr_now:.3g}"
            )
        say(f"resumed from {ckpt['path']} at epoch {epoch + 1}, batch {batch_pos}, step {step}")
    if main:
        atomic_write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    forward: nn.Module = model
    if ctx.active:
        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # The module stays plain (its state_dict has no ``_orig_mod.`` prefixes); only the
    # training step's loss computation is compiled.
    loss_fn = loss_function(model, config, ctx, forward)
    last_good = {"epoch": epoch, "step": step}

    def payload() -> dict[str, Any]:
        states = _gather_rng(ctx)
        return {
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": states[0],
            "rng_by_rank": states if ctx.active else [],
            "epoch": epoch,
            "batch": batch_pos,
            "step": step,
            "history": history,
            "best_top1": best_top1,
            "nonfinite_total": nonfinite_total,
            "nonfinite_streak": streak,
            "epoch_accumulators": dict(acc),
        }

    def save(name: str) -> None:
        """Write a checkpoint (every rank takes part: the generators are gathered); refuse to
        write non-finite weights as a state to resume from."""
        data = payload()
        if not _finite_weights(model):
            # an epoch's end is saved after the epoch counter moved on
            where = f"epoch {epoch + 1}" if batch_pos else f"the end of epoch {epoch}"
            raise TrainingDivergedError(
                f"the weights became non-finite at step {step} ({where}); they were "
                f"not saved. {out_dir / 'checkpoint_last.pt'} keeps the last finite state "
                f"(step {last_good['step']}). Try a smaller --lr or --grad_clip, or "
                "--fp64_hyper"
            )
        if main:
            save_checkpoint(out_dir / name, data)
        last_good["step"] = step
        ctx.barrier()

    def stop_for(failure: DataLoadingError) -> NoReturn:
        """Save the state reached (the batches done) and end the run with ``failure``."""
        save("checkpoint_last.pt")
        fix = "fix the data, then " if failure.status == 2 else ""
        raise DataLoadingError(
            f"{failure}; the state at epoch {epoch + 1}, batch {batch_pos} (step {step}) is "
            f"saved in {out_dir / 'checkpoint_last.pt'}: {fix}continue with --resume {out_dir}",
            status=failure.status,
        ) from failure

    result = RunResult(out_dir=out_dir, history=history, is_main=main)
    tb: TensorBoardLog = TensorBoardLog.open(
        out_dir,
        config.tensorboard if main else False,
        purge_step=step + 1 if ckpt is not None else None,
    )
    with tb:
        while epoch < config.epochs:
            loader = train_loader(config, ctx, epoch, batch_pos, steps_epoch, real)
            model.train()
            bar = tqdm(
                total=steps_epoch,
                initial=batch_pos,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="batch",
                disable=not (config.progress and main),
                dynamic_ncols=True,
                leave=False,
            )
            t_last = time.perf_counter()
            stop = _agree(flag.requested, ctx)
            failure: DataLoadingError | None = None
            with LoaderBatches(loader if not stop else ()) as batches:
                while not stop:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except DataLoadingError as e:
                        if flag.requested:  # a worker died of the same signal: stop and save
                            stop = True
                            break
                        failure = e
                    failure = _shared_failure(failure, ctx)
                    if failure is not None:
                        break
                    video = batch.video.to(device, non_blocking=True)
                    with _compile_errors(config.compile, out_dir / "compile_error.log", step):
                        res = train_step(forward, loss_fn, optimizer, video, config, ctx)
                    with warnings.catch_warnings():
                        # a skipped step still advances the schedule, which follows the
                        # batch position
                        warnings.filterwarnings(
                            "ignore", "Detected call of `lr_scheduler", UserWarning
                        )
                        scheduler.step()
                    batch_pos += 1
                    step += 1
                    steps_here += 1
                    now = time.perf_counter()
                    acc["seconds"] += now - t_last
                    t_last = now
                    if res.taken:
                        streak = 0
                        taken_here += 1
                        acc["loss"] += res.loss
                        acc["top1"] += res.top1
                        acc["n"] += 1
                        tb.scalars(
                            {"loss": res.loss, "top1": res.top1, "lr": scheduler.get_last_lr()[0]},
                            step,
                            prefix="step/",
                        )
                    else:
                        streak += 1
                        nonfinite_total += 1
                        acc["skipped"] += 1
                        say(
                            f"warning: non-finite loss or gradient at epoch {epoch + 1}, "
                            f"batch {batch_pos}: step skipped ({streak} in a row, "
                            f"{nonfinite_total} in all)"
                        )
                        if streak >= config.max_nonfinite:
                            bar.close()
                            save("checkpoint_last.pt")
                            raise TrainingDivergedError(
                                f"the loss or gradient was non-finite for {streak} consecutive "
                                f"steps (epoch {epoch + 1}, step {step}); stopping. The state "
                                f"before is in {out_dir / 'checkpoint_last.pt'}. Try --fp64_hyper, "
                                "a smaller --lr or a smaller --grad_clip."
                            )
                    if config.progress and main:
                        bar.update(1)
                        n = max(acc["n"], 1.0)
                        speed = config.batch_size * (acc["n"] + acc["skipped"]) / acc["seconds"]
                        bar.set_postfix(
                            loss=f"{acc['loss'] / n:.3f}",
                            top1=f"{100 * acc['top1'] / n:.1f}%",
                            clips_s=f"{speed:.1f}",
                        )
                    if on_step is not None and on_step(step):
                        flag.requested = True
                    stop = _agree(flag.requested, ctx)
            bar.close()
            if failure is not None:
                stop_for(failure)
            if stop:
                save("checkpoint_last.pt")
                say(
                    f"stopped at epoch {epoch + 1}, batch {batch_pos} (step {step}); "
                    f"checkpoint saved to {out_dir / 'checkpoint_last.pt'}"
                )
                result.interrupted = True
                result.stop_signal = flag.signum
                break
            val: dict[str, float] = {}
            if main:
                try:
                    val = evaluate(model, config, device, real)
                except DataLoadingError as e:
                    failure = e
            failure = _shared_failure(failure, ctx)
            if failure is not None:
                stop_for(failure)
            n = max(acc["n"], 1.0)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": acc["loss"] / n if acc["n"] else float("nan"),
                "train_top1": acc["top1"] / n if acc["n"] else float("nan"),
                "train_skipped": int(acc["skipped"]),
                **val,
                "curvature": float(model.ball.c.detach()),
                "epoch_seconds": acc["seconds"],
                "clips_per_second": config.batch_size
                * (acc["n"] + acc["skipped"])
                / max(acc["seconds"], 1e-9),
                "processes": ctx.world_size,
            }
            if ctx.active:
                record["ranks_in_sync"] = float(_ranks_in_sync(model, ctx))
                if not record["ranks_in_sync"]:
                    say("warning: the processes' weights differ after this epoch")
            history.append(record)
            epoch += 1
            batch_pos = 0
            acc = {k: 0.0 for k in acc}
            improved = (
                math.isfinite(record.get("val_top1", math.nan)) and record["val_top1"] > best_top1
            )
            if improved:
                best_top1 = record["val_top1"]
            improved = bool(broadcast_object(improved, ctx))
            save("checkpoint_last.pt")
            if improved:
                save("checkpoint_best.pt")
            if main:
                write_metrics(out_dir, history)
                plot_curves(out_dir / "curves.png", history)
                tb.scalars(epoch_scalars(record), step)
                tb.image_png("curves", out_dir / "curves.png", step)
                tb.flush()
                _report(_format_epoch(record, config.epochs, config.learn_curvature))
                warning = collapse_warning(record)
                if warning is not None:
                    say(warning)
            if _agree(flag.requested, ctx):
                result.interrupted = True
                result.stop_signal = flag.signum
                say(f"stopped after epoch {epoch}; checkpoint saved")
                break
        trained = not (steps_here > 0 and taken_here == 0)
        if main and trained and not result.interrupted and config.eval_batches > 0 and history:
            result.evaluation = run_evaluation(
                model,
                config,
                device,
                real,
                out_dir,
                epoch=epoch,
                step=step,
                checkpoint=str(out_dir / "checkpoint_last.pt"),
                tb=tb,
            )
    result.step = step
    result.nonfinite_total = nonfinite_total
    result.model = model
    result.final = history[-1] if history else {}
    if steps_here > 0 and taken_here == 0:
        raise TrainingDivergedError(
            f"no training step succeeded: all {steps_here} steps had a non-finite loss or gradient "
            "and were skipped, so the model is untrained. Try --fp64_hyper, a smaller --lr or "
            "a smaller --grad_clip"
        )
    return result
