"""geoopt's Riemannian optimisers on this library's ball and on geoopt's own, side by side.

Each problem is a ``geoopt.ManifoldParameter`` of starting points, pulled towards fixed targets
by minimising the sum of their geodesic distances (or of the squared distances); the same
optimiser, learning rate and number of steps run on ``poincare.PoincareBall`` and on
``geoopt.PoincareBall`` at the same curvature. The three problems:

1. one point at hyperbolic radius 12 towards a target at radius 1 (the distance);
2. one point at radius 8 towards a target at radius 8 in another direction (the distance);
3. 64 points towards 64 targets, both at radii up to 6 (the sum of squared distances).

Each cell gives the objective at the start and at the end (for one point: its distance to the
target), and the largest hyperbolic radius of the final points. Distances and radii are in units
of the curvature radius ``1/sqrt(c)``, measured in float64 with :func:`poincare.dist` for both
balls.

Run: ``python -m benchmarks.optimisers [--optimiser adam] [--lr 0.2] [--steps 300] [--dim 4]
[--c 1.0] [--dtype float64] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import poincare as P
from benchmarks._common import GEOOPT_PEER, exit_if_missing, versions

PROG = "python -m benchmarks.optimisers"
NEEDS = (GEOOPT_PEER,)
"""The optional modules this benchmark imports."""
OPTIMISERS = ("adam", "sgd")


@dataclass(frozen=True)
class Problem:
    """Starting points and their targets, ``(N, D)`` each, and the objective: the sum over the
    rows of :math:`d(x_i, t_i)`, or of :math:`d(x_i, t_i)^2` when ``squared``."""

    title: str
    start: Tensor
    target: Tensor
    squared: bool = False


@dataclass(frozen=True)
class Outcome:
    """The objective before and after the run, the largest distance from the origin that a
    point reached at the end (see :func:`measure`), and the final points (``(N, D)``, in the
    problem's dtype)."""

    start_loss: float
    final_loss: float
    final_radius: float
    final: Tensor


def points(radius: Tensor | float, direction: Tensor, *, c: float, dtype: torch.dtype) -> Tensor:
    r"""Points at hyperbolic ``radius`` (``(...)`` or a float) from the origin along
    ``direction`` (``(..., D)``, any norm but 0): :func:`poincare.expmap0` of the unit direction
    times ``radius / 2``, taken in float64, rounded to ``dtype`` and passed through
    :func:`poincare.project` (which caps a radius beyond :func:`poincare.max_radius`)."""
    d = direction.double()
    half = torch.as_tensor(radius, dtype=torch.float64).unsqueeze(-1) / 2
    x = P.expmap0(d / torch.linalg.vector_norm(d, dim=-1, keepdim=True) * half, c=c)
    return P.project(x.to(dtype), c=c)


def problems(
    *, dim: int = 4, c: float = 1.0, dtype: torch.dtype = torch.float64, seed: int = 0
) -> list[Problem]:
    """The three problems of the table, with random directions drawn from ``seed``; hyperbolic
    radii are in units of the curvature radius :math:`1/\\sqrt{c}`."""
    g = torch.Generator().manual_seed(seed)
    s = 1 / math.sqrt(c)

    def at(radius: Tensor | float, n: int = 1) -> Tensor:
        d = torch.randn(n, dim, generator=g, dtype=torch.float64)
        return points(torch.as_tensor(radius, dtype=torch.float64) * s, d, c=c, dtype=dtype)

    def radii() -> Tensor:
        return 6.0 * torch.rand(64, generator=g, dtype=torch.float64)

    return [
        Problem("radius 12 -> radius 1", at(12.0), at(1.0)),
        Problem("radius 8 -> radius 8, another direction", at(8.0), at(8.0)),
        Problem("64 points -> 64 targets, radii up to 6, sum of dist²", at(radii(), 64),
                at(radii(), 64), squared=True),
    ]  # fmt: skip


def _objective(d: Tensor, squared: bool) -> Tensor:
    return (d.square() if squared else d).sum()


def measure(x: Tensor, problem: Problem, c: float) -> tuple[float, float]:
    r"""The objective of ``x`` against the problem's targets and the largest radius of ``x``, in
    float64 with this library's exact distances, in units of the curvature radius
    :math:`1/\sqrt{c}` (as the radii of :func:`problems`)."""
    xd = x.detach().double()
    sc = math.sqrt(c)
    loss = _objective(P.dist(xd, problem.target.double(), c=c) * sc, problem.squared)
    return float(loss), float(P.dist0(xd, c=c).max()) * sc


def minimise(
    manifold: Any,
    problem: Problem,
    *,
    c: float,
    optimiser: str = "adam",
    lr: float = 0.2,
    steps: int = 300,
    decay: float = 1.0,
    **options: Any,
) -> Outcome:
    """Run ``steps`` of geoopt's ``RiemannianAdam`` (``optimiser="adam"``) or
    ``RiemannianSGD`` (``"sgd"``) on a ``geoopt.ManifoldParameter`` of the problem's starting
    points on ``manifold`` (a ball of curvature ``c``), minimising the objective computed with
    the manifold's own ``dist``. The learning rate starts at ``lr`` and is multiplied by
    ``decay`` after every step; ``options`` go to the optimiser (``betas``, ``momentum``, ...).

    Raises:
        ValueError: ``optimiser`` is not one of :data:`OPTIMISERS`, or ``steps`` is negative.
        MissingDependencyError: geoopt is not installed.
    """
    if optimiser not in OPTIMISERS:
        raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {optimiser!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    with GEOOPT_PEER.imports():
        import geoopt
    param = geoopt.ManifoldParameter(problem.start.clone(), manifold=manifold)
    kind = geoopt.optim.RiemannianAdam if optimiser == "adam" else geoopt.optim.RiemannianSGD
    opt = kind([param], lr=lr, **options)
    start_loss, _ = measure(param, problem, c)
    for _ in range(steps):
        opt.zero_grad()
        torch.autograd.backward(_objective(manifold.dist(param, problem.target), problem.squared))
        opt.step()
        for group in opt.param_groups:
            group["lr"] *= decay
    final_loss, radius = measure(param, problem, c)
    return Outcome(start_loss, final_loss, radius, param.detach().clone())


def run(
    *,
    optimiser: str = "adam",
    lr: float = 0.2,
    steps: int = 300,
    dim: int = 4,
    c: float = 1.0,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> list[dict[str, object]]:
    """One row per problem of :func:`problems`: its title and the :class:`Outcome` on this
    library's ball (``ours``) and on geoopt's (``geoopt``, its curvature a tensor of ``dtype``).

    Raises:
        MissingDependencyError: geoopt is not installed.
    """
    with GEOOPT_PEER.imports():
        import geoopt
    balls = {
        "ours": P.PoincareBall(c),
        "geoopt": geoopt.PoincareBall(c=torch.tensor(c, dtype=dtype)),
    }
    rows: list[dict[str, object]] = []
    for problem in problems(dim=dim, c=c, dtype=dtype, seed=seed):
        row: dict[str, object] = {"problem": problem.title}
        for name, ball in balls.items():
            row[name] = minimise(ball, problem, c=c, optimiser=optimiser, lr=lr, steps=steps)
        rows.append(row)
    return rows


def _cell(o: object) -> str:
    assert isinstance(o, Outcome)
    return f"{o.start_loss:.4g} → {o.final_loss:.3g}, radius {o.final_radius:.3g}"


def format_rows(rows: list[dict[str, object]]) -> str:
    """The rows of :func:`run` as a Markdown table."""
    lines = [
        "| start → target | poincare ball | geoopt's own ball |",
        "|---|---|---|",
        *(f"| {r['problem']} | {_cell(r['ours'])} | {_cell(r['geoopt'])} |" for r in rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the three problems on both balls, print the table."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimiser", choices=OPTIMISERS, default="adam", help="default adam")
    parser.add_argument("--lr", type=float, default=0.2, help="learning rate (default 0.2)")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (default 300)")
    parser.add_argument("--dim", type=int, default=4, help="dimension of the ball (default 4)")
    parser.add_argument("--c", type=float, default=1.0, help="curvature (default 1.0)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--seed", type=int, default=0, help="seed of the directions (default 0)")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.dim < 1 or not (math.isfinite(args.c) and args.c > 0):
        parser.error("--steps must be >= 0, --dim >= 1 and --c a positive finite number")
    exit_if_missing(PROG, NEEDS)
    options = dict(vars(args), dtype=getattr(torch, args.dtype))
    rows = run(**options)
    print(versions())
    print(
        f"geoopt Riemannian{'Adam' if args.optimiser == 'adam' else 'SGD'}, lr={args.lr}, "
        f"{args.steps} steps, dim={args.dim}, c={args.c}, {args.dtype}, seed={args.seed}"
    )
    print(format_rows(rows))


if __name__ == "__main__":
    main()
