"""Time the core ops of :mod:`poincare` against geoopt's, interleaved in one process.

For every op, both implementations run forward and backward on the same inputs, alternating,
and the median time ratio ``poincare / geoopt`` is printed (below 1: this library is faster).
Absolute times on a shared CPU mean little; the ratio of interleaved runs is what is reported.

Run: ``python -m benchmarks.core [--n 262144] [--dim 64] [--dtype float32] [--repeats 5]
[--compile]``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import Tensor

import poincare as P
from benchmarks._common import GEOOPT_PEER, exit_if_missing, interleaved, median_ratio, versions

Op = Callable[[Tensor, Tensor, Tensor], Tensor]
PROG = "python -m benchmarks.core"
NEEDS = (GEOOPT_PEER,)
"""The optional modules this benchmark imports."""


def _cases(geoopt_ball: object) -> dict[str, tuple[Op, Op]]:
    g = geoopt_ball
    return {
        "mobius_add": (
            lambda x, y, v: P.mobius_add(x, y),
            lambda x, y, v: g.mobius_add(x, y),  # type: ignore[attr-defined]
        ),
        "dist": (lambda x, y, v: P.dist(x, y), lambda x, y, v: g.dist(x, y)),  # type: ignore[attr-defined]
        "dist0": (lambda x, y, v: P.dist0(x), lambda x, y, v: g.dist0(x)),  # type: ignore[attr-defined]
        "expmap0": (lambda x, y, v: P.expmap0(v), lambda x, y, v: g.expmap0(v)),  # type: ignore[attr-defined]
        "logmap0": (lambda x, y, v: P.logmap0(x), lambda x, y, v: g.logmap0(x)),  # type: ignore[attr-defined]
        "expmap": (lambda x, y, v: P.expmap(x, v), lambda x, y, v: g.expmap(x, v)),  # type: ignore[attr-defined]
        "logmap": (lambda x, y, v: P.logmap(x, y), lambda x, y, v: g.logmap(x, y)),  # type: ignore[attr-defined]
        "mobius_scalar_mul": (
            lambda x, y, v: P.mobius_scalar_mul(0.7, x),
            lambda x, y, v: g.mobius_scalar_mul(torch.tensor(0.7, dtype=x.dtype), x),  # type: ignore[attr-defined]
        ),
        "transp": (
            lambda x, y, v: P.transp(x, y, v),
            lambda x, y, v: g.transp(x, y, v),  # type: ignore[attr-defined]
        ),
        "einstein_midpoint": (
            lambda x, y, v: P.einstein_midpoint(x.reshape(-1, 16, x.shape[-1])),
            lambda x, y, v: g.weighted_midpoint(x.reshape(-1, 16, x.shape[-1]), reducedim=[-2]),  # type: ignore[attr-defined]
        ),
    }


def _step(fn: Op, x: Tensor, y: Tensor, v: Tensor) -> Callable[[], None]:
    def run() -> None:
        xs, ys, vs = (t.detach().requires_grad_() for t in (x, y, v))
        torch.autograd.backward(fn(xs, ys, vs).sum())

    return run


def run(
    n: int = 262144,
    dim: int = 64,
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    *,
    compiled: bool = False,
    device: str = "cpu",
) -> list[dict[str, object]]:
    """Forward+backward of every op, ours against geoopt's, interleaved; one row per op.

    Each row holds the op, the median milliseconds of ``ours`` and ``geoopt`` and the median
    of per-round ratios ``ratio`` (ours / geoopt). With ``compiled``, also ``ours_compiled``
    and ``geoopt_compiled`` (``torch.compile`` with the default backend, compilation excluded)
    and the ratios ``compiled_vs_geoopt`` (ours compiled / geoopt eager) and
    ``compiled_vs_geoopt_compiled``.
    """
    with GEOOPT_PEER.imports():
        import geoopt
    gen = torch.Generator().manual_seed(0)
    x = P.expmap0(torch.randn(n, dim, generator=gen, dtype=dtype) * 0.5).to(device)
    y = P.expmap0(torch.randn(n, dim, generator=gen, dtype=dtype) * 0.5).to(device)
    v = (torch.randn(n, dim, generator=gen, dtype=dtype) * 0.3).to(device)
    rows: list[dict[str, object]] = []
    for name, (ours, peer) in _cases(geoopt.PoincareBall(c=1.0)).items():
        fns = {"ours": _step(ours, x, y, v), "geoopt": _step(peer, x, y, v)}
        if compiled:
            torch._dynamo.reset()
            fns["ours_compiled"] = _step(torch.compile(ours), x, y, v)
            fns["geoopt_compiled"] = _step(torch.compile(peer), x, y, v)
        times = interleaved(fns, repeats, warmup=2 if compiled else 1, device=device)
        row: dict[str, object] = {"op": name}
        for key, ts in times.items():
            row[f"{key}_ms"] = statistics.median(ts) * 1e3
        row["ratio"] = median_ratio(times["ours"], times["geoopt"])
        if compiled:
            row["compiled_vs_geoopt"] = median_ratio(times["ours_compiled"], times["geoopt"])
            row["compiled_vs_geoopt_compiled"] = median_ratio(
                times["ours_compiled"], times["geoopt_compiled"]
            )
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, object]]) -> str:
    """The rows of :func:`run` as a Markdown table."""
    compiled = bool(rows) and "compiled_vs_geoopt" in rows[0]
    head = "| op | poincare ms | geoopt ms | ratio |"
    rule = "|---|---:|---:|---:|"
    if compiled:
        head += " compiled ms | geoopt compiled ms | compiled / geoopt |"
        head += " compiled / geoopt compiled |"
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    for r in rows:
        line = f"| `{r['op']}` | {r['ours_ms']:.2f} | {r['geoopt_ms']:.2f} | {r['ratio']:.2f} |"
        if compiled:
            line += (
                f" {r['ours_compiled_ms']:.2f} | {r['geoopt_compiled_ms']:.2f} |"
                f" {r['compiled_vs_geoopt']:.2f} | {r['compiled_vs_geoopt_compiled']:.2f} |"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the interleaved timings, print the table of median ratios."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=262144, help="number of points (default 262144)")
    parser.add_argument("--dim", type=int, default=64, help="dimension (default 64)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument(
        "--compile", action="store_true", help="also time both libraries under torch.compile"
    )
    parser.add_argument("--device", default="cpu", help="device (default cpu)")
    args = parser.parse_args(argv)
    exit_if_missing(PROG, NEEDS)
    rows = run(
        args.n,
        args.dim,
        getattr(torch, args.dtype),
        args.repeats,
        compiled=args.compile,
        device=args.device,
    )
    print(versions())
    print(f"forward+backward, n={args.n}, dim={args.dim}, {args.dtype}, {args.device}")
    print(format_rows(rows))


if __name__ == "__main__":
    main()
