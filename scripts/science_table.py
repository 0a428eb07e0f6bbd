"""Reproduce the README's science table: radius by horizon and ambiguity, early-action probes,
and the space-time comparison, over several seeds.

    python scripts/science_table.py [--seeds 0 1 2] [--jobs 2] [--models ...] [--reuse]
                                    [--write-readme]

For every model and seed it runs ``python train_cli.py <model flags> --seed S`` (which trains
12 epochs on the sprite videos and evaluates at the end: ``eval.json``), then
``python train_cli.py --resume <run> --probe`` (``probe.json``), each run in
``runs/science/<model>-s<seed>`` (replaced). Models:

* ``htr``: the hyperbolic transformer (``--fp64_hyper``, the main job);
* ``st``: the same with factorised space-time attention (``--space_time``);
* ``hgru``: the hyperbolic ConvGRU; ``egru``: the Euclidean ConvGRU (the control, whose
  "radius" is the norm of its predictions);
* ``htr-p3``: the hyperbolic transformer predicting 3 blocks from 2 (``--pred_step 3``): a
  shorter observed past, in which most videos' fine action is still hidden, so that the
  radius-by-ambiguity comparison has enough hidden videos;
* for the first seed only, ``long-htr`` and ``long-egru``: the transformer and the Euclidean
  ConvGRU trained 48 epochs instead of 12.

Each run folder gets ``science.json`` (the commit it was made on, its training time, its
flags); ``--reuse`` reads finished run folders instead of rerunning them.

It prints every run's figures and the tables (mean ± standard deviation over the seeds), and
with ``--write-readme`` writes the tables between ``<!-- figures:science:begin -->`` and
``<!-- figures:science:end -->`` in README.md and copies the first seed's plots of the main
model to ``docs/``. With 2 jobs on 2 CPU cores the whole set takes about 25 minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_figures import commit, write_readme

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path("runs") / "science"

# Run for the first seed only: the two ends of the first table trained four times longer.
LONG_MODELS: list[tuple[str, list[str], str]] = [
    ("long-htr", ["--fp64_hyper", "--epochs", "48"], "hyperbolic transformer, 48 epochs"),
    (
        "long-egru",
        ["--no-hyperbolic", "--no-use_transformer", "--epochs", "48"],
        "Euclidean ConvGRU, 48 epochs",
    ),
]

MODELS: list[tuple[str, list[str], str]] = [
    ("htr", ["--fp64_hyper"], "hyperbolic transformer"),
    ("st", ["--fp64_hyper", "--space_time"], "hyperbolic space-time transformer"),
    ("hgru", ["--fp64_hyper", "--no-use_transformer"], "hyperbolic ConvGRU"),
    ("egru", ["--no-hyperbolic", "--no-use_transformer"], "Euclidean ConvGRU"),
    (
        "htr-p3",
        ["--fp64_hyper", "--pred_step", "3"],
        "hyperbolic transformer, 3 of 5 blocks predicted",
    ),
]


def _call(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"science_table.py: error: {' '.join(cmd[1:])} failed:\n{proc.stderr[-2000:]}"
        )
    return proc.stdout


def run_one(name: str, flags: list[str], seed: int, reuse: bool = False) -> dict[str, Any]:
    """Train, evaluate and probe one model and seed; returns its figures. With ``reuse``, a
    finished run folder (with its reports and ``science.json``) is read instead."""
    out = RUNS / f"{name}-s{seed}"
    done = all((ROOT / out / f).is_file() for f in ("eval.json", "probe.json", "science.json"))
    if not (reuse and done):
        if (ROOT / out).exists():
            shutil.rmtree(ROOT / out)
        train = [sys.executable, "train_cli.py", *flags, "--seed", str(seed), "--no-progress"]
        t0 = time.perf_counter()
        _call([*train, "--out", str(out)])
        seconds = time.perf_counter() - t0
        _call([sys.executable, "train_cli.py", "--resume", str(out), "--probe"])
        made = {"commit": commit(), "seconds": seconds, "flags": flags}
        (ROOT / out / "science.json").write_text(json.dumps(made) + "\n")
    made = json.loads((ROOT / out / "science.json").read_text())
    seconds = float(made["seconds"])
    metrics = [json.loads(x) for x in (ROOT / out / "metrics.jsonl").read_text().splitlines()]
    ev = json.loads((ROOT / out / "eval.json").read_text())
    probe = json.loads((ROOT / out / "probe.json").read_text())
    print(f"done {out} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {
        "name": name,
        "seed": seed,
        "seconds": seconds,
        "final": metrics[-1],
        "eval": ev,
        "probe": probe,
        "commit": made["commit"],
    }


def _ms(xs: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` (population std over the seeds)."""
    m = statistics.fmean(xs) * scale
    s = statistics.pstdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _ci(e: dict[str, Any]) -> str:
    lo, hi = e["ci95"]
    return f"{e['mean']:.2f} [{lo:.2f}, {hi:.2f}]"


def tables(runs: list[dict[str, Any]], rev: str, seeds: list[int]) -> str:
    """The README section's text: the main table, the early-action table, the intervals."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["name"], []).append(r)
    made = sorted({r["commit"] for r in runs})
    lines = [
        f"Runs made on commit {', '.join(f'`{m}`' for m in made)} (tables written on `{rev}`), "
        f"`python scripts/science_table.py --seeds {' '.join(map(str, seeds))}`: "
        f"mean ± standard deviation over {len(seeds)} seeds; every run trains 12 epochs on the "
        "sprite videos, is evaluated on 512 held-out test videos and probed with 1024 others.",
        "",
        "| model | val top-1 | radius, step 1 | radius, last step | step 1 − last | hidden "
        "videos | hidden − revealed, step 1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, _, what in MODELS:
        rs = by.get(name, [])
        if not rs:
            continue
        h0 = [r["eval"]["horizon"][0]["mean"] for r in rs]
        hl = [r["eval"]["horizon"][-1]["mean"] for r in rs]
        drop = [r["eval"]["horizon_drop"]["mean"] for r in rs]
        share = [r["eval"]["hidden_share"] for r in rs]
        amb = [r["eval"]["ambiguity"][0]["hidden_minus_revealed"]["mean"] for r in rs]
        measure = rs[0]["eval"]["measure"]
        lines.append(
            f"| {what} ({measure}) | {_ms([r['final']['val_top1'] for r in rs], 100, 1)} % "
            f"| {_ms(h0)} | {_ms(hl)} | {_ms(drop)} | {_ms(share, 100, 0)} % | {_ms(amb)} |"
        )
    lines += [
        "",
        "Early action recognition: probe accuracy (%) on the test videos from the context "
        "representation after k observed blocks (HyperbolicMLR for the hyperbolic models, "
        "linear for the Euclidean one); chance 33.3 % coarse, 11.1 % fine, 22.2 % hierarchical.",
        "",
        "| model | k | coarse | fine | hierarchical | coarse from the prediction |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, _, what in MODELS:
        rs = by.get(name, [])
        if not rs or name == "htr-p3":
            continue
        ctx = [[e for e in r["probe"]["results"] if e["representation"] == "context"] for r in rs]
        pred = [
            [e for e in r["probe"]["results"] if e["representation"] == "prediction"] for r in rs
        ]
        for k in range(len(ctx[0])):
            lines.append(
                f"| {what if k == 0 else ''} | {k + 1} "
                f"| {_ms([c[k]['coarse'] for c in ctx], 100, 1)} "
                f"| {_ms([c[k]['fine'] for c in ctx], 100, 1)} "
                f"| {_ms([c[k]['hierarchical'] for c in ctx], 100, 1)} "
                f"| {_ms([p[k]['coarse'] for p in pred], 100, 1)} |"
            )
    long_runs = [r for r in runs if r["name"].startswith("long-")]
    if long_runs:
        lines += [
            "",
            f"Trained four times longer (48 epochs, seed {seeds[0]}; intervals: bootstrap over "
            "the test videos, 95 %):",
            "",
            "| model | val top-1 | radius by step | hidden − revealed by step | coarse probe, "
            "k = 1, 2, 3 | fine probe, k = 1, 2, 3 |",
            "|---|---:|---|---|---|---|",
        ]
        titles = {n: w for n, _, w in LONG_MODELS}
        for r in long_runs:
            ev = r["eval"]
            rows = [e for e in r["probe"]["results"] if e["representation"] == "context"]
            cells = [
                f"{titles[r['name']]} ({ev['measure']})",
                f"{100 * r['final']['val_top1']:.1f} %",
                "; ".join(f"{e['step']}: {_ci(e)}" for e in ev["horizon"]),
                "; ".join(
                    f"{e['step']}: {_ci(e['hidden_minus_revealed'])}" for e in ev["ambiguity"]
                ),
                ", ".join(f"{100 * e['coarse']:.1f}" for e in rows),
                ", ".join(f"{100 * e['fine']:.1f}" for e in rows),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Intervals of seed {seeds[0]} (bootstrap over the test videos, 95 %):",
        "",
        "| model | radius by step | hidden − revealed by step |",
        "|---|---|---|",
    ]
    for name, _, what in MODELS:
        rs = [r for r in by.get(name, []) if r["seed"] == seeds[0]]
        if not rs:
            continue
        ev = rs[0]["eval"]
        steps = "; ".join(f"{e['step']}: {_ci(e)}" for e in ev["horizon"])
        gaps = "; ".join(f"{e['step']}: {_ci(e['hidden_minus_revealed'])}" for e in ev["ambiguity"])
        lines.append(f"| {what} | {steps} | {gaps} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument(
        "--models", nargs="+", choices=[m[0] for m in MODELS], default=[m[0] for m in MODELS]
    )
    parser.add_argument("--write-readme", action="store_true", help="write into README.md")
    parser.add_argument(
        "--no-long", action="store_true", help="skip the two 48-epoch runs of the first seed"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read finished runs in runs/science instead of rerunning",
    )
    args = parser.parse_args(argv)
    rev = commit()
    todo = [(n, f, s) for n, f, _ in MODELS if n in args.models for s in args.seeds]
    if not args.no_long:
        todo += [(n, f, args.seeds[0]) for n, f, _ in LONG_MODELS]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda t: run_one(t[0], t[1], t[2], reuse=args.reuse), todo))
    for r in runs:
        ev = r["eval"]
        print(
            f"{r['name']} seed {r['seed']}: {r['seconds']:.0f} s, val top-1 "
            f"{100 * r['final']['val_top1']:.2f} %, radius "
            + ", ".join(_ci(e) for e in ev["horizon"])
            + "; hidden - revealed "
            + ", ".join(_ci(e["hidden_minus_revealed"]) for e in ev["ambiguity"])
        )
    text = tables(runs, rev, args.seeds)
    print(text)
    if args.write_readme:
        write_readme("science", text)
        first = RUNS / f"htr-s{args.seeds[0]}"
        for name in (
            "poincare_disk.png",
            "radius_by_horizon.png",
            "radius_by_ambiguity.png",
            "probe.png",
        ):
            shutil.copyfile(ROOT / first / name, ROOT / "docs" / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
