"""The whole benchmark suite: every table of the README's performance section, from one run.

``python -m benchmarks`` prints, after the machine and the versions:

1. the core ops against geoopt, forward+backward, float32 and float64 (``benchmarks.core``);
2. ``pairwise_dist`` against geoopt's distance of broadcast pairs (``benchmarks.pairwise``);
3. the attention's targets against the Euclidean ``scaled_dot_product_attention`` module
   (``python -m benchmarks.attention --targets``): time at 1 and 2 threads at N in {256, 1024,
   4096} for (B=4, E=128, heads=8) and (B=32, E=256, heads=8), peak memory at N = 8192,
   ``torch.compile`` against eager, each ratio beside its target, and how many are met;
4. the video model's training throughput, transformer against ConvGRU, and the cost of
   ``--fp64_hyper`` (``benchmarks.model``).

``--compile`` adds the ``torch.compile`` columns (much longer: every op and module compiles
first; the attention's targets compile whether or not it is given). On a machine with CUDA, the
core tables and the attention's time table are repeated on the GPU.
``--write-readme`` replaces the README's block between ``<!-- benchmarks:begin -->`` and
``<!-- benchmarks:end -->`` with this run's tables. ``--quick`` shrinks every size (a check that
the suite runs, not a measurement). The optional dependencies of every table (geoopt and
numpy: the ``dev`` extra; numpy and tqdm: the ``train`` extra) are checked before anything runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks import attention, core, model, pairwise
from benchmarks._common import Requirement, exit_if_missing, versions
from poincare._optional import MissingDependencyError

BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
PROG = "python -m benchmarks"
NEEDS: tuple[Requirement, ...] = (*core.NEEDS, *pairwise.NEEDS, *attention.NEEDS, *model.NEEDS)
"""The optional modules of every table of the suite."""


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def run_suite(*, quick: bool, compiled: bool) -> str:
    """Run every table; return them as Markdown (each table printed as soon as it is done)."""
    parts: list[str] = []

    def emit(title: str, body: str) -> None:
        text = f"**{title}**\n\n{body}\n"
        print(text, flush=True)
        parts.append(text)

    n32, n64, reps = (4096, 4096, 2) if quick else (262144, 65536, 3)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    for device in devices:
        for dtype, n in ((torch.float32, n32), (torch.float64, n64)):
            rows = core.run(n, 64, dtype, reps, compiled=compiled, device=device)
            name = str(dtype).removeprefix("torch.")
            emit(
                f"Core ops against geoopt, forward+backward, {name}, {n} x 64, {device}",
                core.format_rows(rows),
            )
    sizes = (128, 256) if quick else (256, 512, 1024)
    emit(
        "pairwise_dist against geoopt's broadcast dist, forward+backward, float32, D = 64",
        pairwise.format_rows(pairwise.run(sizes, 64, torch.float32, reps)),
    )
    for title, body in attention_tables(quick=quick, compiled=compiled, devices=devices):
        emit(title, body)
    rows_m = model.run(rounds=3 if quick else 8, compile=compiled)
    emit("Video model, training throughput on the default run's sizes", model.format_rows(rows_m))
    return "\n".join(parts)


def attention_tables(
    *, quick: bool, compiled: bool, devices: list[str]
) -> Iterator[tuple[str, str]]:
    """The attention's tables as (title, Markdown), each as soon as it is done: on the CPU, the
    project's targets (``attention.TARGETS``, or ``attention.TARGETS_QUICK`` with ``quick``;
    they include ``torch.compile`` against eager) and their count; on CUDA, the time table of
    ``attention.time_rows`` (and its compiled twin with ``compiled``)."""
    tables: list[attention.TargetTable] = []
    for table in attention.run_targets(attention.TARGETS_QUICK if quick else attention.TARGETS):
        tables.append(table)
        yield table.title, table.markdown()
    yield "Attention targets, all together", attention.targets_summary(tables)
    lengths = [16, 64] if quick else [64, 256, 1024]
    configs = ((2, 32, 4), (4, 64, 8)) if quick else ((4, 128, 8), (32, 256, 8))
    reps = 2 if quick else 3
    for device in (d for d in devices if d != "cpu"):
        for flag in (False, True) if compiled else (False,):
            rows = []
            for batch, embed, heads in configs:
                rounds = reps if batch * embed <= 1024 else max(1, reps - 1)
                rows += attention.time_rows(
                    batch, embed, heads, lengths, rounds, compiled=flag, device=device
                )
            mode = "torch.compile" if flag else "eager"
            yield (
                f"Attention, forward+backward time against the SDPA module, float32, {device}, "
                f"{mode} (ratios: medians of per-round ratios)",
                attention.format_time_rows(rows),
            )


def write_readme(path: Path, text: str) -> None:
    """Replace the block between the markers of ``path`` with ``text``."""
    readme = path.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{PROG}: error: {path} has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the suite, optionally write the README's tables."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile columns")
    parser.add_argument(
        "--write-readme", action="store_true", help="write the tables into README.md"
    )
    args = parser.parse_args(argv)
    exit_if_missing(PROG, NEEDS)
    start = time.perf_counter()
    header = f"{versions()}; commit {_commit()}"
    print(header, flush=True)
    try:
        body = run_suite(quick=args.quick, compiled=args.compile)
    except MissingDependencyError as err:
        raise SystemExit(f"{PROG}: error: {err}") from err
    minutes = (time.perf_counter() - start) / 60
    footer = f"`python -m benchmarks` took {minutes:.1f} min."
    print(footer)
    if args.write_readme:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        write_readme(readme, f"Measured on: {header}.\n\n{body}\n{footer}")
        print(f"wrote the tables into {readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
