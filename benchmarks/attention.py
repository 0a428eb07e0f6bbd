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
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

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
    embed: int, heads: int, compiled: bool = False, device: str = "cpu"
) -> dict[str, Step]:
    """The implementations by name: ``mha`` (``nn.MultiheadAttention``), ``sdpa`` (the
    Euclidean peer on ``scaled_dot_product_attention``), ``cosh``, ``distance`` and
    ``squared`` (the hyperbolic module with that score), ``cosh-lean`` (``cosh`` with
    ``memory_efficient=True``) and ``naive`` (the broadcast design). With ``compiled``, each
    module goes through ``torch.compile`` (the default backend)."""
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
            module = torch.compile(module)  # type: ignore[assignment]
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
) -> list[dict[str, object]]:
    """Forward+backward times of ``impls`` against ``sdpa`` (and ``mha``), interleaved; one
    row per (N, impl) with the median ms and the medians of per-round ratios ``vs_sdpa`` and
    ``vs_mha``."""
    steps = make_steps(embed, heads, compiled, device)
    names = ["sdpa", "mha", *impls]
    rows: list[dict[str, object]] = []
    for n in lengths:
        x = _input(batch, n, embed).to(device)

        def bind(step: Step, x: Tensor = x) -> Callable[[], object]:
            return lambda: run_once(step, x)

        warm = 2 if compiled else 1
        times = interleaved({k: bind(steps[k]) for k in names}, rounds, warmup=warm, device=device)
        for name in names:
            rows.append(
                {
                    "batch": batch,
                    "embed": embed,
                    "heads": heads,
                    "n": n,
                    "impl": name,
                    "ms": statistics.median(times[name]) * 1e3,
                    "vs_sdpa": median_ratio(times[name], times["sdpa"]),
                    "vs_mha": median_ratio(times[name], times["mha"]),
                    "compiled": compiled,
                    "device": device,
                }
            )
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


def _memory_child(impl: str, batch: int, n: int, embed: int, heads: int) -> None:
    """Print the peak resident memory a forward+backward at length ``n`` adds (bytes)."""
    torch.set_num_threads(1)
    step = make_steps(embed, heads)[impl]
    run_once(step, _input(batch, 16, embed))  # load every kernel first
    x = _input(batch, n, embed)
    gc.collect()
    before = _rss_bytes()
    run_once(step, x)
    print(max(0, _peak_rss_bytes() - before))


def memory_rows(
    batch: int, embed: int, heads: int, n: int, impls: tuple[str, ...]
) -> list[dict[str, object]]:
    """Peak resident memory added by one forward+backward at length ``n``, each
    implementation in a fresh process (``/proc`` and ``VmHWM``: Linux), with its ratio to
    ``sdpa``'s."""
    peaks: dict[str, int] = {}
    for impl in ("sdpa", "mha", *impls):
        cmd = [sys.executable, "-m", "benchmarks.attention", "--memory-child", impl]
        cmd += ["--batch", str(batch), "--embed", str(embed), "--heads", str(heads)]
        cmd += ["--lengths", str(n)]
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


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the time table (and, with ``--memory-n``, memory)."""
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
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        _memory_child(args.memory_child, args.batch, args.lengths[0], args.embed, args.heads)
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
