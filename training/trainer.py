"""The training loop of the video future-prediction model.

``run(config)`` builds the model, the optimiser (AdamW; a learnable curvature is one more
parameter of it), a warm-up + cosine learning-rate schedule, and trains on the
procedural sprite videos of :mod:`training.data`, validating after every epoch with the
top-1/top-5 accuracy of future retrieval. The run folder receives ``config.json``,
``metrics.jsonl``, ``metrics.csv``, ``checkpoint_last.pt``, ``checkpoint_best.pt`` and
``curves.png``.

Nothing is lost: ``checkpoint_last.pt`` is written atomically at the end of every epoch and
whenever SIGINT/SIGTERM (or an ``on_step`` hook) asks to stop, at the next step boundary,
with the position inside the epoch. Because every batch is a pure function of
``(seed, epoch, index)`` and the generators' states are saved, a resumed run reproduces the
uninterrupted one bit for bit on the CPU.

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
import json
import math
import random
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import poincare
from poincare._optional import optional_imports

with optional_imports("numpy", "tqdm", extra="train", purpose="training"):
    import numpy as np
    from tqdm import tqdm

from models.loss import ContrastiveOutput
from models.video import VideoFuturePredictor
from training.checkpoint import (
    atomic_write_text,
    check_compatible,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from training.config import TrainConfig
from training.data import SpriteBatch, SpriteVideoConfig, SpriteVideos
from training.metrics import plot_curves, write_metrics

__all__ = [
    "CompileError",
    "RunResult",
    "TrainingDivergedError",
    "WarmupCosine",
    "build_model",
    "build_optimizer",
    "compile_problem",
    "data_config",
    "evaluate",
    "loss_function",
    "resolve_device",
    "run",
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
    """

    out_dir: Path
    history: list[dict[str, Any]]
    interrupted: bool = False
    stop_signal: int = 0
    step: int = 0
    nonfinite_total: int = 0
    final: dict[str, Any] = field(default_factory=dict)


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
        num_heads=config.num_heads,
        transformer_layers=config.transformer_layers,
        transformer_dropout=config.transformer_dropout,
        c=poincare.PoincareBall(config.curvature, learnable=config.learn_curvature),
        score=config.distance,
        gru_layers=config.gru_layers,
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


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
        return f"--compile: torch.compile does not work here ({_first_line(e)})"
    if backend != "inductor":
        return None
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as e:
            return (
                "--compile: torch.compile's inductor backend needs a C++ compiler on the CPU "
                f"and found none ({_first_line(e)}); install g++ or set CXX, or train "
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
            f"--compile: torch.compile failed at training step {step + 1} ({_first_line(e)}); "
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


def loss_function(model: VideoFuturePredictor, config: TrainConfig) -> LossFunction:
    """What a training step calls on a video batch: ``model.loss``, or with ``compile`` its
    ``torch.compile`` (the backend of :data:`_COMPILE_BACKEND`, inductor; default mode;
    ``dynamic=False``). The module itself is not wrapped, so its ``state_dict`` stays plain.
    Compilation happens at the first call."""
    if not config.compile:
        return model.loss
    compiled: LossFunction = torch.compile(model.loss, backend=_COMPILE_BACKEND, dynamic=False)
    return compiled


def train_step(
    model: nn.Module,
    loss_fn: LossFunction,
    optimizer: torch.optim.Optimizer,
    video: torch.Tensor,
    config: TrainConfig,
) -> tuple[ContrastiveOutput, bool]:
    """One optimisation step on ``video``: the loss (under the run's :func:`precision`),
    backward, the gradient clip (``grad_clip``; 0: the norm is only checked) and the
    optimiser's step. Returns the loss output and whether the step was taken: it is skipped
    (no parameter changes, gradients cleared) when the loss or the gradient norm is not
    finite."""
    with precision(config):
        out = loss_fn(video)
    ok = bool(torch.isfinite(out.loss))
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
    return out, ok


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


@torch.no_grad()
def evaluate(
    model: VideoFuturePredictor, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Validation metrics on the fixed validation set (``val_batches`` batches, epoch 0 of the
    ``val`` split): mean loss, top-1/top-5 retrieval accuracy and their chance levels
    ``1/M`` and ``min(5, M)/M`` with ``M`` the candidates per batch, and the top-1 accuracy
    within groups of videos that differ only by their motion (``val_group_top1``, chance
    ``1/group_size``): a model that ignores the past cannot beat chance there. Uses no
    global RNG.
    """
    was_training = model.training
    model.eval()
    data = SpriteVideos(
        data_config(config),
        seed=config.seed,
        split="val",
        epoch=0,
        batch_size=config.batch_size,
        num_batches=config.val_batches,
    )
    losses, top1, top5, group = [], [], [], []
    gs = min(config.group_size, config.batch_size)
    candidates = 1
    skipped = 0
    try:
        for i in range(len(data)):
            with precision(config):
                pred, target = model(data[i].video.to(device))
                out = model.loss_of(pred, target)
                group_hit = model.group_top1(pred, target, gs)
            if not torch.isfinite(out.loss):
                skipped += 1
                continue
            group.append(group_hit.item())
            losses.append(out.loss.item())
            top1.append(out.top1.item())
            top5.append(out.top5.item())
            candidates = out.num_candidates
    finally:
        model.train(was_training)
    nan = float("nan")
    return {
        "val_loss": float(np.mean(losses)) if losses else nan,
        "val_top1": float(np.mean(top1)) if top1 else nan,
        "val_top5": float(np.mean(top5)) if top5 else nan,
        "chance_top1": 1.0 / candidates,
        "chance_top5": min(5, candidates) / candidates,
        "val_candidates": float(candidates),
        "val_group_top1": float(np.mean(group)) if group else nan,
        "chance_group_top1": 1.0 / gs,
        "val_skipped": float(skipped),
    }


def data_config(config: TrainConfig) -> SpriteVideoConfig:
    """The :class:`~training.data.SpriteVideoConfig` of ``config``'s videos."""
    return SpriteVideoConfig(
        num_seq=config.num_seq,
        seq_len=config.seq_len,
        img_dim=config.img_dim,
        num_distractors=config.num_distractors,
        group_size=config.group_size,
        anchor_frame=(config.num_seq - config.pred_step) * config.seq_len - 1,
    )


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
    tqdm.write(msg, file=sys.stderr)


def _default_out_dir() -> Path:
    return Path("runs") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _format_epoch(h: dict[str, Any], epochs: int, learn_curvature: bool = False) -> str:
    curvature = f"  c {h['curvature']:.4f}" if learn_curvature and "curvature" in h else ""
    return (
        f"epoch {h['epoch']}/{epochs}  train loss {h['train_loss']:.4f}  "
        f"val loss {h['val_loss']:.4f}  val top-1 {100 * h['val_top1']:.2f}%  "
        f"top-5 {100 * h['val_top5']:.2f}%  (chance {100 * h['chance_top1']:.2f}% / "
        f"{100 * h['chance_top5']:.2f}%)  group top-1 {100 * h['val_group_top1']:.1f}% "
        f"(chance {100 * h['chance_group_top1']:.0f}%)  skipped {h['train_skipped']}  "
        f"{h['epoch_seconds']:.1f}s  {h['clips_per_second']:.1f} clips/s{curvature}"
    )


def run(config: TrainConfig, *, on_step: Callable[[int], bool] | None = None) -> RunResult:
    """Train (or resume) as ``config`` says; see the module docstring.

    Args:
        config: the run's settings (validated here).
        on_step: called after every batch with the number of batches done in all; returning
            ``True`` stops the run at that step boundary exactly as SIGINT/SIGTERM would
            (checkpoint with the position inside the epoch, then return).

    Returns:
        a :class:`RunResult`.

    Raises:
        ValueError: an invalid ``config`` (the message names the setting).
        training.checkpoint.CheckpointError: ``resume`` names a missing or corrupt checkpoint,
            or one made with other architecture/data settings.
        TrainingDivergedError: ``max_nonfinite`` consecutive non-finite steps (a checkpoint of the
            state before them is written first).
        CompileError: ``compile`` cannot work here (before training, see
            :func:`compile_problem`), or ``torch.compile`` failed at a step (the traceback goes
            to ``compile_error.log`` in the run folder).
    """
    config.validate()
    flag = _StopFlag()
    with _signal_handlers(flag):
        return _run(config, on_step, flag)


def _run(config: TrainConfig, on_step: Callable[[int], bool] | None, flag: _StopFlag) -> RunResult:
    device = resolve_device(config.device)
    if config.compile:
        problem = compile_problem(device, _COMPILE_BACKEND)
        if problem is not None:
            raise CompileError(problem)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    ckpt: dict[str, Any] | None = None
    if config.resume is not None:
        ckpt = load_checkpoint(config.resume)
        notes = check_compatible(ckpt["config"], config.to_dict(), ckpt["path"])
        for note in notes:
            _say(f"note: resuming with a changed setting ({note})")
    if config.out is not None:
        out_dir = Path(config.out)
    elif ckpt is not None:
        out_dir = Path(ckpt["path"]).parent
    else:
        out_dir = _default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    model = build_model(config).to(device)
    optimizer = build_optimizer(model, config)
    steps_per_epoch = config.train_batches
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(config.warmup_steps, total_steps)
    )
    epoch, batch_pos, step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best_top1 = -math.inf
    nonfinite_total = 0
    streak = 0
    acc: dict[str, float] = {"loss": 0.0, "top1": 0.0, "n": 0.0, "skipped": 0.0, "seconds": 0.0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        epoch, batch_pos, step = int(ckpt["epoch"]), int(ckpt["batch"]), int(ckpt["step"])
        history = list(ckpt["history"])
        best_top1 = float(ckpt.get("best_top1", -math.inf))
        nonfinite_total = int(ckpt.get("nonfinite_total", 0))
        streak = int(ckpt.get("nonfinite_streak", 0))
        acc = {k: float(v) for k, v in ckpt.get("epoch_accumulators", acc).items()}
        _say(f"resumed from {ckpt['path']} at epoch {epoch + 1}, batch {batch_pos}, step {step}")
    atomic_write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    # The module stays plain (its state_dict has no ``_orig_mod.`` prefixes); only the
    # training step's loss computation is compiled.
    loss_fn = loss_function(model, config)

    def payload() -> dict[str, Any]:
        return {
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": get_rng_state(),
            "epoch": epoch,
            "batch": batch_pos,
            "step": step,
            "history": history,
            "best_top1": best_top1,
            "nonfinite_total": nonfinite_total,
            "nonfinite_streak": streak,
            "epoch_accumulators": dict(acc),
        }

    result = RunResult(out_dir=out_dir, history=history)

    while epoch < config.epochs:
        data = SpriteVideos(
            data_config(config),
            seed=config.seed,
            split="train",
            epoch=epoch,
            batch_size=config.batch_size,
            num_batches=steps_per_epoch,
        )
        loader: DataLoader[SpriteBatch] = DataLoader(
            data,
            batch_size=None,
            sampler=list(range(batch_pos, steps_per_epoch)),
            num_workers=config.num_workers,
            generator=torch.Generator(),
        )
        model.train()
        bar = tqdm(
            total=steps_per_epoch,
            initial=batch_pos,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not config.progress,
            dynamic_ncols=True,
            leave=False,
        )
        t_last = time.perf_counter()
        stop = flag.requested
        for batch in [] if stop else loader:
            video = batch.video.to(device, non_blocking=True)
            with _compile_errors(config.compile, out_dir / "compile_error.log", step):
                out, ok = train_step(model, loss_fn, optimizer, video, config)
            with warnings.catch_warnings():
                # a skipped step still advances the schedule, which follows the batch position
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
                scheduler.step()
            batch_pos += 1
            step += 1
            now = time.perf_counter()
            acc["seconds"] += now - t_last
            t_last = now
            if ok:
                streak = 0
                acc["loss"] += out.loss.item()
                acc["top1"] += out.top1.item()
                acc["n"] += 1
            else:
                streak += 1
                nonfinite_total += 1
                acc["skipped"] += 1
                _say(
                    f"warning: non-finite loss or gradient at epoch {epoch + 1}, batch "
                    f"{batch_pos}: step skipped ({streak} in a row, {nonfinite_total} in all)"
                )
                if streak >= config.max_nonfinite:
                    save_checkpoint(out_dir / "checkpoint_last.pt", payload())
                    bar.close()
                    raise TrainingDivergedError(
                        f"the loss or gradient was non-finite for {streak} consecutive "
                        f"steps (epoch {epoch + 1}, step {step}); stopping. The state "
                        f"before is in {out_dir / 'checkpoint_last.pt'}. Try --fp64_hyper, "
                        "a smaller --lr or a smaller --grad_clip."
                    )
            if config.progress:
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
            if flag.requested:
                stop = True
                break
        bar.close()
        if stop:
            save_checkpoint(out_dir / "checkpoint_last.pt", payload())
            _say(
                f"stopped at epoch {epoch + 1}, batch {batch_pos} (step {step}); "
                f"checkpoint saved to {out_dir / 'checkpoint_last.pt'}"
            )
            result.interrupted = True
            result.stop_signal = flag.signum
            break
        val = evaluate(model, config, device)
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
        }
        history.append(record)
        epoch += 1
        batch_pos = 0
        acc = {k: 0.0 for k in acc}
        improved = math.isfinite(record["val_top1"]) and record["val_top1"] > best_top1
        if improved:
            best_top1 = record["val_top1"]
        save_checkpoint(out_dir / "checkpoint_last.pt", payload())
        if improved:
            save_checkpoint(out_dir / "checkpoint_best.pt", payload())
        write_metrics(out_dir, history)
        plot_curves(out_dir / "curves.png", history)
        _say(_format_epoch(record, config.epochs, config.learn_curvature))
        if flag.requested:
            result.interrupted = True
            result.stop_signal = flag.signum
            _say(f"stopped after epoch {epoch}; checkpoint saved")
            break
    result.step = step
    result.nonfinite_total = nonfinite_total
    result.final = history[-1] if history else {}
    return result
