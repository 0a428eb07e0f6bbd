"""Forward+backward time and peak memory of hyperbolic against Euclidean multi-head attention.

Compares, in one process and interleaved round by round, for the same (B, N, E, heads), float32:

* ``sdpa``: Euclidean self-attention written on ``scaled_dot_product_attention`` in training
  mode (the fair peer: every ratio is to it);
* ``mha``: :class:`torch.nn.MultiheadAttention`;
* ``cosh``, ``distance``, ``squared``: :class:`poincare.nn.HyperbolicMultiHeadAttention` with
  that score (``cosh`` runs inside ``scaled_dot_product_attention`` on augmented Lorentz
  vectors; the explicit scores run blockwise, recomputing each block in backward);
* ``cosh-lean``: ``cosh`` with ``memory_efficient=True``; ``naive``: the broadcast design
  (distances of ``(..., N, M, D)`` broadcast pairs and a midpoint over them).

Time: medians of per-round ratios of interleaved forward+backward runs (which absorbs slow
drifts of a shared machine's load, not bursts). Memory (``--memory-n``): the peak resident
memory one forward+backward at that length adds, each implementation in a fresh process.

Run: ``python -m benchmarks.attention [--batch 4 --embed 128 --heads 8 --lengths 64 256 1024]
[--compile] [--memory-n 8192]``.

``--targets`` checks the project's targets in one run, at 1 and 2 threads: three tables (time
of each score over ``sdpa``'s at (B, E, heads) in {(4, 128, 8), (32, 256, 8)} and N in {256,
1024, 4096}, at most 2x for ``distance`` and ``squared`` and 1.3x for ``cosh``; the peak memory
each score adds at N = 8192, (B, E, heads) = (1, 32, 4), at most 2x ``sdpa``'s; inductor-compiled
against eager at (4, 128, 8), N = 1024: compiled / compiled ``sdpa`` at most eager / ``sdpa``, and
compiled at most eager time), a ``target`` and a ``met`` column after each ratio, and a last
line ``targets met: X of Y``. Its run time is measured in the whole suite: ``python -m
benchmarks`` (the core tables, ``pairwise_dist``, these targets and the video model) took 17.9
min on the shared 2-core machine, these targets most of it (the largest round, (32, 256, 8) at
N = 4096, takes SDPA's module 19 s at one thread, and each score about four times that).
``--targets-quick`` runs the same code on tiny sizes in under a minute (a check, not a
measurement).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

import poincare
from benchmarks._common import Requirement, interleaved, median_ratio, versions
from poincare.nn import HyperbolicMultiHeadAttention

Step = Callable[[Tensor], Tensor]
PROG = "python -m benchmarks.attention"
NEEDS: tuple[Requirement, ...] = ()
"""The optional modules this benchmark imports: none (torch and :mod:`poincare` only)."""


class EuclideanSDPAttention(nn.Module):
    """Euclidean multi-head self-attention written directly on ``scaled_dot_product_attention``
    with contiguous heads (the layout in which the fused CPU kernel applies)."""

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(embed, 3 * embed)
        self.out_proj = nn.Linear(embed, embed)

    def forward(self, x: Tensor) -> Tensor:
        b, n, e = x.shape
        qkv = self.in_proj(x).view(b, n, 3, self.heads, e // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out2: Tensor = self.out_proj(out.transpose(1, 2).reshape(b, n, e))
        return out2


class NaiveHyperbolicAttention(nn.Module):
    """The broadcast design: every pair (i, j) materialises a D-vector."""

    def __init__(self, hyp: HyperbolicMultiHeadAttention) -> None:
        super().__init__()
        self.hyp = hyp

    def forward(self, x: Tensor) -> Tensor:
        h = self.hyp
        assert h.in_proj_weight is not None
        u = poincare.logmap0(x, c=h.c)
        b, n = x.shape[0], x.shape[1]
        z = torch.nn.functional.linear(u, h.in_proj_weight).view(b, n, 3, h.num_heads, -1)
        if h.in_proj_bias is None:
            pts = poincare.expmap0(z, c=h.c)
        else:
            bias = h.in_proj_bias.view(3, h.num_heads, -1)
            pts = poincare.expmap0_add(z, bias, c=h.c)
        q, k, v = pts.permute(2, 0, 3, 1, 4).unbind(0)
        d = poincare.dist(q.unsqueeze(-2), k.unsqueeze(-3), c=h.c)  # (B, H, N, M) via N x M x D
        w = torch.softmax(-h.beta.view(-1, 1, 1) * d, dim=-1)
        out = poincare.einstein_midpoint(v.unsqueeze(-3), w, c=h.c, dim=-2)  # N x M x D inside
        t = poincare.logmap0(out, c=h.c).transpose(1, 2).reshape(x.shape)
        return h.out_proj.forward_tangent(t)


class _SelfAttention:
    """``module(x, x, x)[0]`` (``nn.MultiheadAttention`` and the hyperbolic module) or
    ``module(x)`` as one callable."""

    def __init__(self, module: nn.Module, packed: bool) -> None:
        self.module, self.packed = module, packed

    def __call__(self, x: Tensor) -> Tensor:
        out: Tensor = self.module(x, x, x, need_weights=False)[0] if self.packed else self.module(x)
        return out


def make_steps(
    embed: int, heads: int, compiled: bool = False, device: str = "cpu", backend: str = "inductor"
) -> dict[str, Step]:
    """The implementations by name: ``mha`` (``nn.MultiheadAttention``), ``sdpa`` (the
    Euclidean peer on ``scaled_dot_product_attention``), ``cosh``, ``distance`` and
    ``squared`` (the hyperbolic module with that score), ``cosh-lean`` (``cosh`` with
    ``memory_efficient=True``) and ``naive`` (the broadcast design). With ``compiled``, each
    module goes through ``torch.compile`` with ``backend`` (default: inductor)."""
    torch.manual_seed(0)
    modules: dict[str, tuple[nn.Module, bool]] = {
        "mha": (nn.MultiheadAttention(embed, heads, batch_first=True), True),
        "sdpa": (EuclideanSDPAttention(embed, heads), False),
    }
    cosh = HyperbolicMultiHeadAttention(embed, heads, score="cosh")
    modules["cosh"] = (cosh, True)
    for score in ("distance", "squared"):
        m = HyperbolicMultiHeadAttention(embed, heads, score=score)
        m.load_state_dict(cosh.state_dict())
        modules[score] = (m, True)
    lean = HyperbolicMultiHeadAttention(embed, heads, score="cosh", memory_efficient=True)
    lean.load_state_dict(cosh.state_dict())
    modules["cosh-lean"] = (lean, True)
    dist = modules["distance"][0]
    assert isinstance(dist, HyperbolicMultiHeadAttention)
    modules["naive"] = (NaiveHyperbolicAttention(dist), False)
    steps: dict[str, Step] = {}
    for name, (module, packed) in modules.items():
        module.to(device)
        if compiled and name != "naive":
            module = torch.compile(module, backend=backend)  # type: ignore[assignment]
        steps[name] = _SelfAttention(module, packed)
    return steps


def _input(batch: int, n: int, embed: int) -> Tensor:
    g = torch.Generator().manual_seed(n)
    return poincare.expmap0(torch.randn(batch, n, embed, generator=g) / embed**0.5)


def run_once(step: Step, x: Tensor) -> float:
    """Seconds for one forward+backward of ``step(x).sum()``."""
    xx = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    step(xx).sum().backward()  # type: ignore[no-untyped-call]
    return time.perf_counter() - t0


def time_rows(
    batch: int,
    embed: int,
    heads: int,
    lengths: list[int],
    rounds: int,
    *,
    impls: tuple[str, ...] = ("cosh", "distance", "squared"),
    compiled: bool = False,
    device: str = "cpu",
    peers: tuple[str, ...] = ("sdpa", "mha"),
    warmup: int | None = None,
) -> list[dict[str, object]]:
    """Forward+backward times of ``impls`` against ``peers`` (``sdpa`` first, then ``mha``
    unless left out), interleaved after ``warmup`` untimed runs of each (default: 2 compiled,
    1 eager); one row per (N, impl) with the median ms and the medians of per-round ratios
    ``vs_sdpa`` (and ``vs_mha``)."""
    steps = make_steps(embed, heads, compiled, device)
    names = [*peers, *impls]
    rows: list[dict[str, object]] = []
    for n in lengths:
        x = _input(batch, n, embed).to(device)

        def bind(step: Step, x: Tensor = x) -> Callable[[], object]:
            return lambda: run_once(step, x)

        warm = (2 if compiled else 1) if warmup is None else warmup
        times = interleaved({k: bind(steps[k]) for k in names}, rounds, warmup=warm, device=device)
        for name in names:
            row: dict[str, object] = {
                "batch": batch,
                "embed": embed,
                "heads": heads,
                "n": n,
                "impl": name,
                "ms": statistics.median(times[name]) * 1e3,
                "vs_sdpa": median_ratio(times[name], times["sdpa"]),
                "compiled": compiled,
                "device": device,
            }
            if "mha" in times:
                row["vs_mha"] = median_ratio(times[name], times["mha"])
            rows.append(row)
    return rows


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """The process's peak resident memory (``VmHWM``: reset by ``exec``, unlike ``getrusage``'s
    ``ru_maxrss``, which a child inherits from a large parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _memory_child(impl: str, batch: int, n: int, embed: int, heads: int, threads: int) -> None:
    """Print the peak resident memory a forward+backward at length ``n`` adds (bytes)."""
    torch.set_num_threads(threads)
    step = make_steps(embed, heads)[impl]
    run_once(step, _input(batch, 16, embed))  # load every kernel first
    x = _input(batch, n, embed)
    gc.collect()
    before = _rss_bytes()
    run_once(step, x)
    print(max(0, _peak_rss_bytes() - before))


def memory_rows(
    batch: int,
    embed: int,
    heads: int,
    n: int,
    impls: tuple[str, ...],
    *,
    threads: int = 1,
    peers: tuple[str, ...] = ("sdpa", "mha"),
) -> list[dict[str, object]]:
    """Peak resident memory added by one forward+backward at length ``n`` on ``threads``
    threads, ``peers`` (``sdpa`` first) then ``impls``, each implementation in a fresh process
    (``/proc`` and ``VmHWM``: Linux), with its ratio to ``sdpa``'s."""
    peaks: dict[str, int] = {}
    for impl in (*peers, *impls):
        cmd = [sys.executable, "-m", "benchmarks.attention", "--memory-child", impl]
        cmd += ["--batch", str(batch), "--embed", str(embed), "--heads", str(heads)]
        cmd += ["--lengths", str(n), "--threads", str(threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        peaks[impl] = int(done.stdout.strip().splitlines()[-1])
    return [
        {
            "batch": batch,
            "embed": embed,
            "heads": heads,
            "n": n,
            "impl": k,
            "peak_mib": v / 2**20,
            "vs_sdpa": v / max(1, peaks["sdpa"]),
        }
        for k, v in peaks.items()
    ]


def saved_bytes(step: Step, x: Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``step(x)``."""
    xx = x.detach().requires_grad_(True)
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    def unpack(t: Tensor) -> Tensor:
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = step(xx)
    out.sum().backward()  # type: ignore[no-untyped-call]
    skip = {xx.untyped_storage().data_ptr()}
    return sum(n for ptr, n in seen.items() if ptr not in skip and n > 0)


def format_time_rows(rows: list[dict[str, object]]) -> str:
    """Time rows as a Markdown table: one line per (B, E, N), one column per implementation."""
    impls = list(dict.fromkeys(str(r["impl"]) for r in rows if r["impl"] not in ("sdpa", "mha")))
    head = "| B | E | heads | N | sdpa ms | mha / sdpa | " + " | ".join(
        f"{k} / sdpa" for k in impls
    )
    lines = [head + " |", "|" + "---:|" * (6 + len(impls))]
    keys = list(dict.fromkeys((r["batch"], r["embed"], r["heads"], r["n"]) for r in rows))
    for key in keys:
        by = {r["impl"]: r for r in rows if (r["batch"], r["embed"], r["heads"], r["n"]) == key}
        cells = [str(k) for k in key]
        cells += [f"{by['sdpa']['ms']:.1f}", f"{by['mha']['vs_sdpa']:.2f}"]
        cells += [f"{by[k]['vs_sdpa']:.2f}" for k in impls]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_memory_rows(rows: list[dict[str, object]]) -> str:
    """Memory rows as a Markdown table."""
    lines = ["| impl | N | peak MiB added | / sdpa |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['n']} | {r['peak_mib']:.1f} | {r['vs_sdpa']:.2f} |")
    return "\n".join(lines)


SCORES = ("cosh", "distance", "squared")
"""The hyperbolic module's scores, each checked against the targets."""
TIME_TARGETS = {"cosh": 1.3, "distance": 2.0, "squared": 2.0}
"""The bound of each score's forward+backward time over the SDPA module's (eager, float32)."""
MEMORY_TARGET = 2.0
"""The bound of each score's peak memory added over the SDPA module's."""


@dataclass(frozen=True)
class TargetGrid:
    """The sizes of a ``--targets`` run; every part runs at each of ``threads``."""

    threads: tuple[int, ...]
    shapes: tuple[tuple[int, int, int], ...]
    """(B, E, heads) of the time table, each at every N of ``lengths``."""
    lengths: tuple[int, ...]
    memory: tuple[int, int, int, int]
    """(B, E, heads, N) of the memory table."""
    compiled: tuple[int, int, int, int]
    """(B, E, heads, N) of the ``torch.compile`` table."""
    backend: str
    """``torch.compile``'s backend."""
    max_rounds: int
    budget: float
    """The work of the rounds at one size, in (4, 128, 8) N = 256 rounds (:func:`target_rounds`)."""


TARGETS = TargetGrid(
    threads=(1, 2),
    shapes=((4, 128, 8), (32, 256, 8)),
    lengths=(256, 1024, 4096),
    memory=(1, 32, 4, 8192),
    compiled=(4, 128, 8, 1024),
    backend="inductor",
    max_rounds=7,
    budget=512,
)
"""The project's targets (``--targets``)."""
TARGETS_QUICK = TargetGrid(
    threads=(1, 2),
    shapes=((1, 16, 2), (2, 16, 4)),
    lengths=(16, 32),
    memory=(1, 16, 2, 256),
    compiled=(1, 16, 2, 32),
    backend="eager",
    max_rounds=2,
    budget=512,
)
"""The same code on tiny sizes, compiled by TorchDynamo alone (``--targets-quick``: a check
that it runs, not a measurement)."""


def target_rounds(grid: TargetGrid, batch: int, embed: int, n: int) -> tuple[int, int]:
    """(rounds, warm-up runs) at one size. A round's work grows as ``B·E·N²`` (the scores);
    in units ``w`` of a (4, 128, 8) N = 256 round: ``budget // w`` rounds, between 1 and
    ``max_rounds``, after one warm-up run where ``w < 256`` and none from there (a run takes
    seconds to minutes there, and a first call costs no more than the others)."""
    work = batch * embed * n * n / (4 * 128 * 256**2)
    rounds = max(1, min(grid.max_rounds, int(grid.budget // work)))
    return rounds, 1 if work < 256 else 0


@dataclass(frozen=True)
class Check:
    """A measured ratio against its bound: met when the ratio as printed (two decimals) is at
    most the bound as printed."""

    value: float
    bound: float

    @property
    def met(self) -> bool:
        """Whether the printed ratio is at most the printed bound."""
        return round(self.value, 2) <= round(self.bound, 2)

    def cells(self) -> list[str]:
        """The ratio's cell, its ``target`` and its ``met``."""
        return [f"{self.value:.2f}", f"<= {self.bound:.2f}", "yes" if self.met else "no"]


@dataclass(frozen=True)
class TargetTable:
    """One part of ``--targets``: a Markdown table with a ``target`` and a ``met`` column after
    each checked ratio, and the checks behind them."""

    title: str
    head: tuple[str, ...]
    rows: list[list[str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        """Append a row: a :class:`Check` fills three cells, anything else one."""
        row: list[str] = []
        for cell in cells:
            if isinstance(cell, Check):
                self.checks.append(cell)
                row += cell.cells()
            else:
                row.append(str(cell))
        assert len(row) == len(self.head)
        self.rows.append(row)

    def markdown(self) -> str:
        """The table (without the title)."""
        rule = "".join("---|" if h in ("score", "target", "met") else "---:|" for h in self.head)
        lines = ["| " + " | ".join(self.head) + " |", "|" + rule]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows])


def _num(x: object) -> float:
    assert isinstance(x, float)
    return x


def _time_table(grid: TargetGrid) -> TargetTable:
    head: tuple[str, ...] = ("threads", "B", "E", "heads", "N", "rounds", "sdpa ms")
    head += tuple(c for s in SCORES for c in (f"{s} / sdpa", "target", "met"))
    table = TargetTable(
        "Attention targets: forward+backward time against the SDPA module, float32, CPU, eager "
        "(medians of per-round ratios)",
        head,
    )
    for threads in grid.threads:
        torch.set_num_threads(threads)
        for batch, embed, heads in grid.shapes:
            for n in grid.lengths:
                rounds, warmup = target_rounds(grid, batch, embed, n)
                rows = time_rows(batch, embed, heads, [n], rounds, peers=("sdpa",), warmup=warmup)
                by = {r["impl"]: r for r in rows}
                checks = [Check(_num(by[s]["vs_sdpa"]), TIME_TARGETS[s]) for s in SCORES]
                sdpa_ms = f"{_num(by['sdpa']['ms']):.1f}"
                table.add(threads, batch, embed, heads, n, rounds, sdpa_ms, *checks)
    return table


def _memory_table(grid: TargetGrid) -> TargetTable:
    batch, embed, heads, n = grid.memory
    head = ("threads", "B", "E", "heads", "N", "score", "sdpa MiB", "score MiB", "/ sdpa")
    table = TargetTable(
        f"Attention targets: peak memory one forward+backward adds at N = {n} (B={batch}, "
        f"E={embed}, heads={heads}), each in a fresh process",
        (*head, "target", "met"),
    )
    for threads in grid.threads:
        rows = memory_rows(batch, embed, heads, n, SCORES, threads=threads, peers=("sdpa",))
        by = {r["impl"]: r for r in rows}
        sdpa_mib = f"{_num(by['sdpa']['peak_mib']):.1f}"
        for s in SCORES:
            mib, check = (
                f"{_num(by[s]['peak_mib']):.1f}",
                Check(_num(by[s]["vs_sdpa"]), MEMORY_TARGET),
            )
            table.add(threads, batch, embed, heads, n, s, sdpa_mib, mib, check)
    return table


def _compile_table(grid: TargetGrid) -> TargetTable:
    batch, embed, heads, n = grid.compiled
    head: tuple[str, ...] = ("threads", "B", "E", "heads", "N", "rounds", "score", "eager / sdpa")
    head += ("compiled / compiled sdpa", "target", "met", "compiled / eager", "target", "met")
    table = TargetTable(
        f"Attention targets: torch.compile ({grid.backend}) of both modules against eager, "
        "forward+backward, float32, CPU (the target of compiled / compiled sdpa is eager / sdpa)",
        head,
    )
    rounds, _ = target_rounds(grid, batch, embed, n)
    x = _input(batch, n, embed)
    for threads in grid.threads:
        torch.set_num_threads(threads)
        torch._dynamo.reset()  # inductor's C++ loops take the thread count at compile time
        eager = make_steps(embed, heads)
        compiled = make_steps(embed, heads, compiled=True, backend=grid.backend)
        fns: dict[str, Callable[[], object]] = {}
        for k in ("sdpa", *SCORES):
            fns[f"eager {k}"] = partial(run_once, eager[k], x)
            fns[f"compiled {k}"] = partial(run_once, compiled[k], x)
        t = interleaved(fns, rounds, warmup=2)  # the first compiles
        for s in SCORES:
            e = median_ratio(t[f"eager {s}"], t["eager sdpa"])
            c = Check(median_ratio(t[f"compiled {s}"], t["compiled sdpa"]), e)
            c_e = Check(median_ratio(t[f"compiled {s}"], t[f"eager {s}"]), 1.0)
            table.add(threads, batch, embed, heads, n, rounds, s, f"{e:.2f}", c, c_e)
    return table


def run_targets(grid: TargetGrid) -> Iterator[TargetTable]:
    """The targets' tables, each as soon as it is done: time against the SDPA module, peak
    memory, ``torch.compile`` against eager; the torch thread count is restored after."""
    previous = torch.get_num_threads()
    try:
        yield _time_table(grid)
        yield _memory_table(grid)
        yield _compile_table(grid)
    finally:
        torch.set_num_threads(previous)


def targets_summary(tables: list[TargetTable]) -> str:
    """``targets met: X of Y`` over every check of ``tables``."""
    checks = [c for t in tables for c in t.checks]
    return f"targets met: {sum(c.met for c in checks)} of {len(checks)}"


def _print_targets(grid: TargetGrid) -> None:
    start = time.perf_counter()
    print(versions(), flush=True)
    tables: list[TargetTable] = []
    for table in run_targets(grid):
        print(f"**{table.title}**\n\n{table.markdown()}\n", flush=True)
        tables.append(table)
    print(f"the targets took {(time.perf_counter() - start) / 60:.1f} min")
    print(targets_summary(tables))


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the time table (and, with ``--memory-n``, memory), or,
    with ``--targets`` or ``--targets-quick``, the targets' tables."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--impls",
        nargs="+",
        default=["cosh", "distance", "squared"],
        choices=["cosh", "distance", "squared", "cosh-lean", "naive"],
        help="implementations beside sdpa and mha (default: cosh distance squared)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile every module")
    parser.add_argument(
        "--memory-n", type=int, default=None, help="also measure peak memory at this length"
    )
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--targets",
        action="store_true",
        help="check the project's targets (other options ignored; most of the 18 min that "
        "python -m benchmarks takes on 2 shared cores)",
    )
    parser.add_argument(
        "--targets-quick",
        action="store_true",
        help="--targets on tiny sizes (a check that it runs)",
    )
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        _memory_child(
            args.memory_child, args.batch, args.lengths[0], args.embed, args.heads, args.threads
        )
        return
    if args.targets or args.targets_quick:
        _print_targets(TARGETS_QUICK if args.targets_quick else TARGETS)
        return
    torch.set_num_threads(args.threads)
    print(versions())
    print("forward+backward, float32, CPU; ratios: medians of per-round ratios to sdpa")
    rows = time_rows(
        args.batch,
        args.embed,
        args.heads,
        args.lengths,
        args.rounds,
        impls=tuple(args.impls),
        compiled=args.compile,
    )
    print(format_time_rows(rows))
    if args.memory_n is not None:
        impls = tuple(k for k in args.impls if k != "naive")
        mem = memory_rows(args.batch, args.embed, args.heads, args.memory_n, impls)
        print(format_memory_rows(mem))


if __name__ == "__main__":
    main()
