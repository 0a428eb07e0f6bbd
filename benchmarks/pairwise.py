"""``poincare.pairwise_dist`` against geoopt's distance of broadcast pairs, interleaved.

geoopt has no pairwise distance: the peer is ``ball.dist(x[..., :, None, :], y[..., None, :, :])``,
which forms an ``N x M x D`` tensor; ours forms none. Forward+backward of the sum, per size.

Run: ``python -m benchmarks.pairwise [--sizes 256 512 1024] [--dim 64] [--dtype float32]``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import Tensor

import poincare as P
from benchmarks._common import GEOOPT_PEER, exit_if_missing, interleaved, median_ratio, versions

PROG = "python -m benchmarks.pairwise"
NEEDS = (GEOOPT_PEER,)
"""The optional modules this benchmark imports."""


def _step(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> Callable[[], None]:
    def run() -> None:
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        torch.autograd.backward(fn(xs, ys).sum())

    return run


def run(
    sizes: tuple[int, ...] = (256, 512, 1024),
    dim: int = 64,
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
) -> list[dict[str, object]]:
    """One row per size ``N = M``: median ms of ours and geoopt's, and the median ratio."""
    with GEOOPT_PEER.imports():
        import geoopt
    ball = geoopt.PoincareBall(c=1.0)
    rows: list[dict[str, object]] = []
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        x = P.expmap0(torch.randn(n, dim, generator=g, dtype=dtype) * 0.5)
        y = P.expmap0(torch.randn(n, dim, generator=g, dtype=dtype) * 0.5)
        fns = {
            "ours": _step(lambda a, b: P.pairwise_dist(a, b), x, y),
            "geoopt": _step(lambda a, b: ball.dist(a[:, None, :], b[None, :, :]), x, y),
        }
        times = interleaved(fns, repeats)
        rows.append(
            {
                "n": n,
                "ours_ms": statistics.median(times["ours"]) * 1e3,
                "geoopt_ms": statistics.median(times["geoopt"]) * 1e3,
                "ratio": median_ratio(times["ours"], times["geoopt"]),
            }
        )
    return rows


def format_rows(rows: list[dict[str, object]]) -> str:
    """The rows of :func:`run` as a Markdown table."""
    lines = ["| N = M | poincare ms | geoopt (broadcast) ms | ratio |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['ours_ms']:.1f} | {r['geoopt_ms']:.1f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the table."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    exit_if_missing(PROG, NEEDS)
    rows = run(tuple(args.sizes), args.dim, getattr(torch, args.dtype), args.repeats)
    print(versions())
    print(f"forward+backward, dim={args.dim}, {args.dtype}")
    print(format_rows(rows))


if __name__ == "__main__":
    main()
