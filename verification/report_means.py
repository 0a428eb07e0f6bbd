"""Report rows of the means of :mod:`poincare` beyond the Einstein midpoint.

``frechet_mean``: the weighted Fréchet (Karcher) mean (:func:`poincare._frechet.frechet_mean`)
on the inputs of the ``einstein_midpoint`` row (``MIDPOINT_POINTS`` points drawn by
hyperbolic radius within the band, weights with zeros), scored as a point in hULP against the
mpmath mean of :mod:`verification.reference_means`, with the hULP of every point of nonzero
weight as the inputs' allowance. (The mean lies in the convex hull of its points, so it lies
within the band too.)

:data:`SPECS` lists the rows, to be registered into :data:`verification.report.OPS`.
"""

from __future__ import annotations

import torch

from poincare._frechet import frechet_mean
from verification import reference_means as ref_means
from verification.report import MIDPOINT_POINTS, Drawer, OpSpec, Sample

__all__ = ["SPECS", "draw_frechet_mean"]


def draw_frechet_mean(d: Drawer) -> Sample | None:
    """``MIDPOINT_POINTS`` points within the band and nonnegative weights (30% zeros, never all
    zero), as for the Einstein midpoint."""
    pts = d.points(MIDPOINT_POINTS)
    w = [0.0 if d.rng.random() < 0.3 else d.rnd(d.rng.uniform(0.0, 1.0)) for _ in pts]
    if all(v == 0 for v in w):
        w[d.rng.randrange(len(w))] = 1.0
    exact = ref_means.frechet_mean(pts, w, d.mc)
    allow = [d.hulp(p) for p, v in zip(pts, w, strict=True) if v != 0]
    return Sample(
        [d.tensor(pts), d.tensor(w)],
        d.point_score(exact, allow),
        lambda a: ref_means.frechet_mean(a[0], a[1], d.mc),
    )


def _ours_frechet_mean(args: list[torch.Tensor], c: float) -> torch.Tensor:
    return frechet_mean(args[0], args[1], c=c)


SPECS: list[OpSpec] = [OpSpec("frechet_mean", draw_frechet_mean, _ours_frechet_mean)]
"""The rows of this module."""
