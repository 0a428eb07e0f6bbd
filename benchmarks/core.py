"""Time the core ops of :mod:`poincare` against geoopt's, interleaved in one process.

For every op, both implementations run forward and backward on the same inputs, alternating,
and the median time ratio ``poincare / geoopt`` is printed (below 1: this library is faster).
Absolute times on a shared CPU mean little; the ratio of interleaved runs is what is reported.

Run: ``python -m benchmarks.core [--n 4096] [--dim 64] [--dtype float32] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

import poincare as P
from poincare._optional import MissingDependencyError, optional_imports

Op = Callable[[Tensor, Tensor, Tensor], Tensor]


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


def _time(fn: Op, x: Tensor, y: Tensor, v: Tensor) -> float:
    xs, ys, vs = (t.detach().requires_grad_() for t in (x, y, v))
    start = time.perf_counter()
    out = fn(xs, ys, vs)
    torch.autograd.backward(out.sum())
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the interleaved timings, print the table of median ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096, help="number of points (default 4096)")
    parser.add_argument("--dim", type=int, default=64, help="dimension (default 64)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (default 15)")
    args = parser.parse_args(argv)
    try:
        with optional_imports("geoopt", extra="dev", purpose="this benchmark"):
            import geoopt
    except MissingDependencyError as err:  # pragma: no cover - geoopt is in the dev extra
        raise SystemExit(f"python -m benchmarks.core: error: {err}") from err

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    x = P.expmap0(torch.randn(args.n, args.dim, generator=gen, dtype=dtype) * 0.5)
    y = P.expmap0(torch.randn(args.n, args.dim, generator=gen, dtype=dtype) * 0.5)
    v = torch.randn(args.n, args.dim, generator=gen, dtype=dtype) * 0.3
    cases = _cases(geoopt.PoincareBall(c=1.0))
    print(
        f"forward+backward, n={args.n}, dim={args.dim}, {args.dtype}, CPU threads "
        f"{torch.get_num_threads()}, {args.repeats} interleaved rounds"
    )
    print(f"{'op':<20}{'poincare ms':>14}{'geoopt ms':>12}{'ratio':>9}")
    for name, (ours, peer) in cases.items():
        _time(ours, x, y, v), _time(peer, x, y, v)  # warm-up
        ratios, t_ours, t_peer = [], [], []
        for _ in range(args.repeats):
            a = _time(ours, x, y, v)
            b = _time(peer, x, y, v)
            t_ours.append(a)
            t_peer.append(b)
            ratios.append(a / b)
        print(
            f"{name:<20}{statistics.median(t_ours) * 1e3:>14.2f}"
            f"{statistics.median(t_peer) * 1e3:>12.2f}{statistics.median(ratios):>9.2f}"
        )


if __name__ == "__main__":
    main()
