"""Training throughput of the video model: the hyperbolic transformer against the ConvGRU, and
what ``--fp64_hyper`` costs, eager and (``--compile``) through ``torch.compile``.

Every model is the one ``python train_cli.py`` trains (:class:`training.config.TrainConfig`'s
defaults, on the CPU, with its thread count), built, fed and stepped by the trainer's own
functions (:func:`training.trainer.build_model`, :func:`~training.trainer.build_optimizer`,
:func:`~training.trainer.data_config`, :func:`~training.trainer.loss_function`,
:func:`~training.trainer.train_step`): one step is forward, contrastive loss, backward, gradient
clip and the AdamW step on one batch of the default batch size (the batch is made once, so
data generation is not timed). The variants:

* ``transformer``: the default model, the causal hyperbolic transformer aggregator;
* ``transformer-fp64``: the same with ``--fp64_hyper``;
* ``convgru``: ``--no-use_transformer``, the ConvGRU aggregator (still hyperbolic: its
  predictions and targets are mapped into the ball and scored there);
* ``convgru-fp64``: the same with ``--fp64_hyper``.

All variants (and with ``--compile`` their compiled twins, warmed up first so that compilation
is not timed; its time is reported apart) run in one process, interleaved round by round, the
order rotating (:func:`benchmarks._common.interleaved`). Each
figure is a median over rounds: the step time, clips per second (batch size / step time), and
the medians of the per-round ratios: ``transformer`` clips/s over ``convgru`` clips/s (the target
is at least 1), each ``-fp64`` step time over its float32 twin's (at most 1.2), and a
compiled step's speed-up over the eager one. Absolute times on a shared CPU mean little; the
ratios of interleaved runs are what is reported.

The trainer needs the ``train`` extra (numpy, tqdm): :func:`main` checks it before any work
starts, and the trainer is imported only where a model is built.

Run: ``python -m benchmarks.model [--rounds 10] [--steps 3] [--warmup 2] [--compile]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from benchmarks._common import (
    Requirement,
    exit_if_missing,
    interleaved,
    median_ratio,
    versions,
)
from training.config import TrainConfig
from training.data import SpriteVideos

__all__ = ["NEEDS", "VARIANTS", "Row", "format_rows", "main", "run"]

Row = dict[str, object]
PROG = "python -m benchmarks.model"
NEEDS: tuple[Requirement, ...] = (
    Requirement(("numpy", "tqdm"), "train", "the video model's benchmark"),
)
"""The optional modules this benchmark imports (through :mod:`training.trainer`)."""

# name -> the settings it changes from TrainConfig's defaults
VARIANTS: dict[str, dict[str, object]] = {
    "transformer": {},
    "transformer-fp64": {"fp64_hyper": True},
    "convgru": {"use_transformer": False},
    "convgru-fp64": {"use_transformer": False, "fp64_hyper": True},
}
# The ratios: (the peer, what the ratio is, the target). An "-fp64" variant's peer is
# its float32 twin.
_CLIPS_RATIO = ("convgru", "clips/s vs convgru", ">= 1")
_FP64_RATIO = ("step time vs float32", "<= 1.2")


@dataclass
class _Bench:
    """One model, its optimiser and a fixed batch: ``train_step()`` runs the trainer's
    ``train_step`` on them and returns whether the step was taken."""

    name: str
    mode: str
    train_step: Callable[[], bool]
    times: list[float] = field(default_factory=list)
    skipped: int = 0
    compile_s: float | None = None
    error: str | None = None

    def step(self) -> None:
        self.skipped += not self.train_step()

    def steps(self, n: int) -> Callable[[], None]:
        def go() -> None:
            for _ in range(n):
                self.step()

        return go


def _make(name: str, mode: str, base: TrainConfig) -> _Bench:
    from training.trainer import (
        build_model,
        build_optimizer,
        data_config,
        loss_function,
        train_step,
    )

    config = TrainConfig.from_dict(
        {**base.to_dict(), **VARIANTS[name], "compile": mode == "compiled"}
    )
    config.validate()
    torch.manual_seed(config.seed)
    model = build_model(config)
    data = SpriteVideos(
        data_config(config),
        seed=config.seed,
        split="train",
        epoch=0,
        batch_size=config.batch_size,
        num_batches=1,
    )
    optimizer = build_optimizer(model, config)
    loss_fn = loss_function(model, config)
    video = data[0].video

    def step() -> bool:
        return train_step(model, loss_fn, optimizer, video, config).taken

    return _Bench(name=name, mode=mode, train_step=step)


def _first_line(e: BaseException) -> str:
    """``Type: first line`` of an exception, with the first ``error:`` line of a compiler's
    output (which names the cause) when its message carries one."""
    lines = str(e).strip().splitlines()
    head = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    cause = next((ln.strip() for ln in lines[1:] if " error: " in ln), None)
    return head if cause is None else f"{head}; {cause.split(' error: ', 1)[1]}"


def run(
    *,
    rounds: int = 10,
    steps: int = 3,
    warmup: int = 2,
    compile: bool = False,
    threads: int | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
) -> list[Row]:
    """Time the variants interleaved and return one row per (mode, variant).

    Args:
        rounds: timed rounds; every figure is a median over them.
        steps: training steps of each variant per round (the round's time is their mean).
        warmup: untimed rounds first (with ``compile``: after the compiling step, which is
            timed apart as ``compile_s``).
        compile: also time every variant through ``torch.compile`` (the trainer's
            ``--compile``: inductor, default mode, ``dynamic=False``).
        threads: torch's intra-op threads (``None``: the default config's, as the trainer
            sets them; 0 keeps torch's default).
        variants: names from :data:`VARIANTS`.

    Returns:
        rows with the keys ``mode`` (``eager``/``compiled``), ``model``, ``step_ms``,
        ``clips_per_s``, ``ratio`` and ``ratio_of`` (what the ratio is, with its target;
        ``None`` for a reference), ``vs_eager`` (a compiled step's speed-up over the eager
        one), ``compile_s`` (the first, compiling step, or the time until compilation
        failed), ``skipped`` (steps with a non-finite loss: they skip backward, so they are
        not like the others) and ``error`` (why a compiled variant has no figures; then the
        figures are ``None``).
    """
    from training.trainer import compile_problem

    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    if rounds <= 0 or steps <= 0 or warmup < 0:
        raise ValueError(
            f"need rounds > 0, steps > 0 and warmup >= 0, got {rounds}, {steps}, {warmup}"
        )
    base = TrainConfig(device="cpu", progress=False)
    n_threads = base.threads if threads is None else threads
    if n_threads > 0:
        torch.set_num_threads(n_threads)
    modes = ("eager", "compiled") if compile else ("eager",)
    benches = [_make(name, mode, base) for mode in modes for name in variants]
    problem = compile_problem(torch.device("cpu")) if compile else None
    for b in benches:
        if b.mode == "compiled":
            if problem is not None:
                b.error = problem
                continue
            start = time.perf_counter()
            try:
                b.step()
            except Exception as e:  # a compiler failure costs this variant, not the run
                b.error = f"torch.compile failed: {_first_line(e)}"
                continue
            finally:
                b.compile_s = time.perf_counter() - start
    live = {f"{b.mode} {b.name}": b for b in benches if b.error is None}
    times = interleaved({k: b.steps(steps) for k, b in live.items()}, rounds, warmup=warmup)
    for k, b in live.items():
        b.times = [t / steps for t in times[k]]
    return _rows(benches, base.batch_size)


def _rows(benches: list[_Bench], batch_size: int) -> list[Row]:
    by = {(b.mode, b.name): b for b in benches}
    rows: list[Row] = []
    for b in benches:
        row: Row = {
            "mode": b.mode,
            "model": b.name,
            "step_ms": None,
            "clips_per_s": None,
            "ratio": None,
            "ratio_of": None,
            "vs_eager": None,
            "compile_s": b.compile_s,
            "skipped": b.skipped,
            "error": b.error,
        }
        rows.append(row)
        if b.error is not None:
            continue
        step = statistics.median(b.times)
        row["step_ms"] = 1e3 * step
        row["clips_per_s"] = batch_size / step
        peer: _Bench | None = None
        if b.name.endswith("-fp64"):
            peer = by.get((b.mode, b.name.removesuffix("-fp64")))
            if peer is not None and peer.error is None:
                row["ratio"] = median_ratio(b.times, peer.times)
                row["ratio_of"] = f"{_FP64_RATIO[0]} ({_FP64_RATIO[1]})"
        elif b.name == "transformer":
            peer = by.get((b.mode, _CLIPS_RATIO[0]))
            if peer is not None and peer.error is None:
                row["ratio"] = median_ratio(peer.times, b.times)  # clips/s: inverse time
                row["ratio_of"] = f"{_CLIPS_RATIO[1]} ({_CLIPS_RATIO[2]})"
        if b.mode == "compiled":
            eager = by.get(("eager", b.name))
            if eager is not None:
                row["vs_eager"] = median_ratio(eager.times, b.times)
    return rows


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_rows(rows: list[Row]) -> str:
    """The rows of :func:`run` as a Markdown table."""
    lines = [
        "| mode | model | ms/step | clips/s | ratio | of | compiled vs eager | compile s |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        note = str(r["error"] if r["error"] is not None else (r["ratio_of"] or ""))
        if r["skipped"]:
            note += f" ({r['skipped']} non-finite steps skipped)"
        cells = [
            str(r["mode"]),
            f"`{r['model']}`",
            _fmt(r["step_ms"], ".1f"),
            _fmt(r["clips_per_s"], ".1f"),
            _fmt(r["ratio"], ".2f"),
            note.replace("|", "/"),
            _fmt(r["vs_eager"], ".2f"),
            _fmt(r["compile_s"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(*, rounds: int, steps: int, compile: bool) -> str:
    """Two lines: the machine and versions (torch's, its thread count), then what is timed."""
    c = TrainConfig()
    return (
        f"{versions()}\n"
        f"training step of the default model (batch {c.batch_size}, {c.num_seq} blocks x "
        f"{c.seq_len} frames of {c.img_dim}px, feature_dim {c.feature_dim}, "
        f"{c.transformer_layers} layers x {c.num_heads} heads), CPU, {rounds} interleaved "
        f"rounds x {steps} steps, " + ("eager and compiled" if compile else "eager")
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the interleaved timings, print the table."""
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--steps", type=int, default=3, help="steps per round (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the models through torch.compile (compilation not timed; minutes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: the trainer's default, "
        f"{TrainConfig().threads}; 0: torch's default)",
    )
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=tuple(VARIANTS))
    args = parser.parse_args(argv)
    exit_if_missing(PROG, NEEDS)
    threads = TrainConfig().threads if args.threads is None else args.threads
    if threads > 0:
        torch.set_num_threads(threads)
    print(header(rounds=args.rounds, steps=args.steps, compile=args.compile), flush=True)
    try:
        rows = run(
            rounds=args.rounds,
            steps=args.steps,
            warmup=args.warmup,
            compile=args.compile,
            threads=args.threads,
            variants=args.variants,
        )
    except ValueError as e:
        parser.error(str(e))
    print(format_rows(rows))


if __name__ == "__main__":
    main()
