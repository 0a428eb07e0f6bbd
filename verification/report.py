"""Accuracy report: the error of every :mod:`poincare` op in hULP, by hyperbolic radius.

For each op, dtype (float32, float64) and radius band ``R`` (hyperbolic distances from the
origin, reaching :func:`poincare.max_radius`), inputs are drawn such that every point input and
the exact output lie within ``R`` of the origin: points by hyperbolic radius (direction uniform
on the sphere, radius uniform in ``[0, R]`` with extra mass at the origin and on the outermost
shell), tangent inputs as the exact ``log_x(y)`` of a drawn ``y`` rounded to the dtype, scalars
in ``[-3, 3]``, random matrices (some rank-deficient), nonnegative weights with zeros. Each
result is scored against the mpmath reference on the exact float inputs
(:mod:`verification.metrics`); each band also checks finiteness, containment (a point result
strictly inside its model) and finite gradients (backward of the sum of the output).

Results outside the Poincaré ball are scored in their own model: a Klein result must satisfy
``c|k|^2 < 1`` and a hyperboloid result ``h`` must map into the ball by ``h_s / (1 + sqrt(c) h_0)``
(equivalently ``|h_s| < h_0 + 1/sqrt(c)``: timelike enough); both are then mapped to the ball
exactly and scored as points, with the output allowance of their own model
(:func:`verification.metrics.hulp_klein`, :func:`verification.metrics.hulp_lorentz`). For
``project`` the last band also holds points on and outside the boundary.

The fused kernels of :mod:`poincare._fused` have rows of their own, each called the way the
modules of ``poincare.nn`` call it and scored against the mpmath composition of the ops it
replaces: ``expmap0_add`` and ``expmap0_add_lorentz`` on tangent vectors (the exact ``log_0`` of
drawn points, so that their images lie within the band), ``midpoint_logmap0`` on the float64
Lorentz sums ``w @ h`` of drawn points and weights, and the three ``cosh_score`` rows on the
float64 Minkowski product ``g`` of the Lorentz coordinates of drawn pairs (in the points'
dtype), as the attention forms them.

For every op of :mod:`poincare` that fails somewhere, the report prints the worst input of the
smallest failing band (exact float values as ``float.hex``) and the *one-ulp sensitivity* of
that input: the largest score of the exact result when one input coordinate moves by one float
step. An error near or below it is the conditioning of the problem under the contract's
allowances rather than a flaw of the algorithm.

Run ``python -m verification.report`` (``--help`` for the options). :func:`measure` returns the
same table as data for tests.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import poincare
from poincare import _fused
from poincare._optional import MissingDependencyError, optional_imports

try:
    with optional_imports("mpmath", extra="verify", purpose="the accuracy report"):
        import mpmath
except MissingDependencyError as _missing:
    if __name__ == "__main__":  # python -m verification.report: the one line, no traceback
        sys.exit(f"python -m verification.report: error: {_missing}")
    raise

from verification import metrics
from verification import reference as ref
from verification.metrics import BandResult

__all__ = [
    "OPS",
    "PEERS",
    "Report",
    "Worst",
    "band_radii",
    "format_report",
    "main",
    "measure",
]

UNIT_BANDS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.0, 35.0)
"""Band edges in units of the curvature radius (``sqrt(c)·R``), cut at the dtype's limit."""

DEFAULT_SAMPLES = 16
"""Inputs per band of the command line (the whole default run is about a minute on 2 cores)."""

MIDPOINT_POINTS = 4
PAIRWISE_SHAPE = (3, 2)
MAX_TRIES = 40


def band_radii(dtype: torch.dtype, c: float) -> list[float]:
    """The band radii for ``dtype`` at curvature ``c``: ``UNIT_BANDS / sqrt(c)`` below the
    representable radius, then :func:`poincare.max_radius` itself (the last band)."""
    top = float(ref.max_radius(dtype, c))
    sc = math.sqrt(c)
    radii = [u / sc for u in UNIT_BANDS if u / sc < top * (1 - 1e-2)]
    return [*radii, top]


# ----------------------------------------------------------------------------------------------
# Drawing inputs
# ----------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One set of inputs of an op with its exact result and a scoring function.

    ``inputs``: the float tensors passed to the op (in the dtype), in call order;
    ``score``: maps the computed output (a float64 tensor) to ``(error in hULP, contained)``;
    ``reference``: the exact output (mpf, nested like the op's output) of inputs given as
    nested lists of floats, used to measure the sensitivity of the problem itself.
    """

    inputs: list[torch.Tensor]
    score: Callable[[torch.Tensor], tuple[float, bool]]
    reference: Callable[[list[Any]], Any]


class Drawer:
    """Draws inputs for one dtype, curvature and band radius ``R``."""

    def __init__(self, rng: random.Random, dtype: torch.dtype, c: float, radius: float, dim: int):
        self.rng = rng
        self.dtype = dtype
        self.c = c
        self.mc = mpmath.mpf(c)
        self.sc = mpmath.sqrt(self.mc)
        self.radius = radius
        self.dim = dim

    # plain helpers ----------------------------------------------------------------------------
    def rnd(self, value: Any) -> float:
        """Round a real to the dtype."""
        return ref.round_to_dtype(value, self.dtype)

    def tensor(self, values: Any) -> torch.Tensor:
        return torch.tensor(values, dtype=self.dtype)

    def within(self, p: Sequence[Any]) -> bool:
        """Whether ``p`` lies strictly inside the ball and within the band radius."""
        return ref.in_ball(p, self.mc) and ref.dist0(p, self.mc) <= self.radius

    def direction(self) -> list[float]:
        while True:
            d = [self.rng.gauss(0.0, 1.0) for _ in range(self.dim)]
            if any(v != 0 for v in d):
                return d

    def draw_distance(self) -> float:
        u = self.rng.random()
        if u < 0.1:
            return 0.0
        if u < 0.3:
            return self.radius
        return self.rng.uniform(0.0, self.radius)

    def shell_point(self) -> list[float]:
        """An axis point with the largest coordinate of the dtype inside the band."""
        with mpmath.workdps(ref.DPS):
            axis = self.rng.randrange(self.dim)
            target = mpmath.tanh(self.sc * self.radius / 2) / self.sc
            value = self.rnd(target)
            step = 1 - mpmath.mpf(torch.finfo(self.dtype).eps)
            while value > 0:
                p = [0.0] * self.dim
                p[axis] = value
                if self.within(p):
                    return p
                value = self.rnd(mpmath.mpf(value) * step)
            return [0.0] * self.dim

    def point(self) -> list[float]:
        """A float point within the band (its exact value, rounded, lies within ``R``)."""
        if self.rng.random() < 0.05:
            return self.shell_point()
        t = self.draw_distance()
        d = self.direction()
        with mpmath.workdps(ref.DPS):
            dn = ref.norm(d)
            for _ in range(MAX_TRIES):
                scale = mpmath.tanh(self.sc * t / 2) / (self.sc * dn)
                p = [self.rnd(scale * v) for v in d]
                if self.within(p):
                    return p
                t -= max(self.radius * 1e-3, 1e-6)
                t = max(t, 0.0)
        return [0.0] * self.dim

    def near(self, x: Sequence[float]) -> list[float]:
        """``x`` with every coordinate moved by -4..4 float steps, kept within the band."""
        t = torch.tensor(list(x), dtype=self.dtype)
        for _ in range(MAX_TRIES):
            y = t.clone()
            for i in range(y.numel()):
                k = self.rng.randint(-4, 4)
                toward = torch.tensor(math.copysign(math.inf, k), dtype=self.dtype)
                for _ in range(abs(k)):
                    y[i] = torch.nextafter(y[i], toward)
            values = [float(v) for v in y.tolist()]
            if self.within(values):
                return values
        return list(x)

    def partner(self, x: Sequence[float]) -> list[float]:
        """A second point for a binary op: ``x`` itself (8%), a few float steps from ``x``
        (8%), or an independent point."""
        u = self.rng.random()
        if u < 0.08:
            return list(x)
        if u < 0.16:
            return self.near(x)
        return self.point()

    def points(self, n: int) -> list[list[float]]:
        return [self.point() for _ in range(n)]

    def tangent(self, x: Sequence[float] | None, y: Sequence[float]) -> list[float]:
        """The exact ``log_x(y)`` (``log_0(y)`` if ``x`` is None) rounded to the dtype."""
        v = ref.logmap0(y, self.mc) if x is None else ref.logmap(x, y, self.mc)
        return [self.rnd(a) for a in v]

    # allowances -------------------------------------------------------------------------------
    def hulp(self, p: Sequence[Any]) -> Any:
        return metrics.hulp(p, self.mc, self.dtype)

    def hulp_t(self, x: Sequence[Any], v: Sequence[Any]) -> Any:
        return metrics.hulp_tangent(x, v, self.mc, self.dtype)

    # scoring ----------------------------------------------------------------------------------
    def point_score(
        self, exact: Sequence[Any], allow: Sequence[Any]
    ) -> Callable[[torch.Tensor], tuple[float, bool]]:
        def score(out: torch.Tensor) -> tuple[float, bool]:
            p = ref.to_mp(out)
            contained = bool(torch.isfinite(out).all()) and ref.in_ball(p, self.mc)
            return metrics.point_error(p, exact, self.mc, self.dtype, allow), contained

        return score

    def lorentz_score(
        self, exact: Sequence[Any], allow: Sequence[Any]
    ) -> Callable[[torch.Tensor], tuple[float, bool]]:
        """Lorentz coordinates scored through the point they encode: mapped exactly to the
        ball (inf and not contained when non-finite, on the lower sheet or space-like) and
        compared with the exact point ``exact``."""

        def score(out: torch.Tensor) -> tuple[float, bool]:
            h = ref.to_mp(out)
            if not bool(torch.isfinite(out).all()) or h[0] <= 0:
                return math.inf, False
            try:
                p = ref.lorentz_to_poincare(h, self.mc)
            except ValueError:
                return math.inf, False
            return metrics.point_error(p, exact, self.mc, self.dtype, allow), True

        return score

    def tangent_score(
        self, base: Sequence[Any], exact: Sequence[Any], allow: Sequence[Any]
    ) -> Callable[[torch.Tensor], tuple[float, bool]]:
        def score(out: torch.Tensor) -> tuple[float, bool]:
            err = metrics.tangent_error(base, ref.to_mp(out), exact, self.mc, self.dtype, allow)
            return err, True

        return score


def _scalar_out(out: torch.Tensor) -> Any:
    return ref.to_mp(out.reshape(()))


# ----------------------------------------------------------------------------------------------
# The ops: how to draw their inputs, call them here and in the peer library
# ----------------------------------------------------------------------------------------------


def draw_project(d: Drawer) -> Sample | None:
    """Points within the band (returned unchanged); in the last band (the representable radius)
    also points on or outside the boundary, whose exact projection lies on that radius."""
    top = float(ref.max_radius(d.dtype, d.mc))
    allow: list[Any] = []
    if d.radius >= top * (1 - 1e-12) and d.rng.random() < 0.3:
        direction = d.direction()
        with mpmath.workdps(ref.DPS):
            factor = mpmath.mpf(d.rng.choice([1.0, 1.0, d.rng.uniform(1.0, 3.0)]))
            scale = factor / (d.sc * ref.norm(direction))
            x = [d.rnd(scale * v) for v in direction]
    else:
        x = d.point()
        allow.append(d.hulp(x))
    exact = ref.project(x, d.mc, d.dtype)
    return Sample(
        [d.tensor(x)],
        d.point_score(exact, allow),
        lambda a: ref.project(a[0], d.mc, d.dtype),
    )


def draw_conformal_factor(d: Drawer) -> Sample | None:
    x = d.point()
    exact = ref.conformal_factor(x, d.mc)
    allow = [d.hulp(x)]

    def score(out: torch.Tensor) -> tuple[float, bool]:
        return metrics.relative_error(_scalar_out(out), exact, d.dtype, allow), True

    return Sample([d.tensor(x)], score, lambda a: [ref.conformal_factor(a[0], d.mc)])


def _draw_add(d: Drawer, sign: int) -> Sample | None:
    x = d.point()
    u = d.rng.random()
    if u < 0.08:
        y = [sign * -v for v in x]  # x ⊕ (-x) = 0
    elif u < 0.16:
        y = [sign * -v for v in d.near(x)]  # x ⊕ (-x') with x' a few float steps from x
    elif u < 0.2:
        y = [0.0] * d.dim
    else:
        y = d.point()
    exact = ref.mobius_add(x, [sign * v for v in y], d.mc)
    if not d.within(exact):
        return None
    op = ref.mobius_add if sign == 1 else ref.mobius_sub
    score = d.point_score(exact, [d.hulp(x), d.hulp(y)])
    return Sample([d.tensor(x), d.tensor(y)], score, lambda a: op(a[0], a[1], d.mc))


def draw_mobius_add(d: Drawer) -> Sample | None:
    return _draw_add(d, 1)


def draw_mobius_sub(d: Drawer) -> Sample | None:
    return _draw_add(d, -1)


def draw_mobius_scalar_mul(d: Drawer) -> Sample | None:
    x = d.point()
    d0 = float(ref.dist0(x, d.mc))
    bound = 3.0 if d0 == 0 else min(3.0, d.radius / d0)
    r = d.rnd(d.rng.uniform(-bound, bound))
    exact = ref.mobius_scalar_mul(r, x, d.mc)
    if not d.within(exact):
        return None
    return Sample(
        [d.tensor([r]), d.tensor(x)],
        d.point_score(exact, [d.hulp(x)]),
        lambda a: ref.mobius_scalar_mul(a[0][0], a[1], d.mc),
    )


def _matrix(d: Drawer) -> list[list[float]]:
    n = d.dim
    m = [[d.rng.gauss(0.0, 1.0) / math.sqrt(n) for _ in range(n)] for _ in range(n)]
    u = d.rng.random()
    if u < 0.15:
        m[d.rng.randrange(n)] = [0.0] * n  # a zero row
    elif u < 0.3:
        a, b = d.rng.sample(range(n), 2)  # two equal rows up to a factor: rank n - 1
        m[a] = [2.0 * v for v in m[b]]
    return [[d.rnd(v) for v in row] for row in m]


def draw_mobius_matvec(d: Drawer) -> Sample | None:
    m = _matrix(d)
    if d.rng.random() < 0.1:
        # a zero column and x along it: M x = 0 exactly
        j = d.rng.randrange(d.dim)
        for row in m:
            row[j] = 0.0
        x = [0.0] * d.dim
        x[j] = d.rnd(mpmath.tanh(d.sc * d.rng.uniform(0, d.radius) / 2) / d.sc)
        if not d.within(x):
            return None
    else:
        x = d.point()
        with mpmath.workdps(ref.DPS):
            nx = ref.norm(x)
            if nx > 0:
                gain = ref.norm([ref.dot(row, x) for row in m]) / nx
                d0 = ref.dist0(x, d.mc)
                if gain * d0 > d.radius and gain > 0:
                    # shrink x along its direction so that the output stays within the band
                    t = d.rng.uniform(0, float(d.radius / gain))
                    scale = mpmath.tanh(d.sc * t / 2) / (d.sc * nx)
                    x = [d.rnd(scale * v) for v in x]
    exact = ref.mobius_matvec(m, x, d.mc)
    if not d.within(exact):
        return None
    allow = [d.hulp(x), _matrix_allowance(d, m, x, exact)]
    return Sample(
        [d.tensor(m), d.tensor(x)],
        d.point_score(exact, allow),
        lambda a: ref.mobius_matvec(a[0], a[1], d.mc),
    )


def _matrix_allowance(d: Drawer, m: list[list[float]], x: list[float], exact: ref.Vec) -> Any:
    """Allowance for forming ``Mx`` in floating point: a relative perturbation of ``Mx`` by
    ``η = eps·| |M||x| | / |Mx|`` moves the output by at most ``η`` times its hyperbolic size,
    ``sqrt(c)(λ_e|e| + d(0, e))`` (direction and length)."""
    with mpmath.workdps(ref.DPS):
        mx = [ref.dot(row, x) for row in m]
        nmx = ref.norm(mx)
        if nmx == 0:
            return mpmath.mpf(0)
        abs_mx = [ref.dot([abs(v) for v in row], [abs(v) for v in x]) for row in m]
        eta = metrics.machine_eps(d.dtype) * ref.norm(abs_mx) / nmx
        size = d.sc * (ref.conformal_factor(exact, d.mc) * ref.norm(exact) + ref.dist0(exact, d.mc))
        return eta * size


def draw_expmap0(d: Drawer) -> Sample | None:
    y = d.point()
    v = d.tangent(None, y)
    exact = ref.expmap0(v, d.mc)
    if not d.within(exact):
        return None
    zero = [0.0] * d.dim
    return Sample(
        [d.tensor(v)], d.point_score(exact, [d.hulp_t(zero, v)]), lambda a: ref.expmap0(a[0], d.mc)
    )


def draw_logmap0(d: Drawer) -> Sample | None:
    y = d.point()
    exact = ref.logmap0(y, d.mc)
    return Sample(
        [d.tensor(y)],
        d.tangent_score([0.0] * d.dim, exact, [d.hulp(y)]),
        lambda a: ref.logmap0(a[0], d.mc),
    )


def draw_expmap(d: Drawer) -> Sample | None:
    x = d.point()
    y = d.partner(x)
    v = d.tangent(x, y)
    exact = ref.expmap(x, v, d.mc)
    if not d.within(exact):
        return None
    allow = [d.hulp(x), d.hulp_t(x, v)]
    return Sample(
        [d.tensor(x), d.tensor(v)],
        d.point_score(exact, allow),
        lambda a: ref.expmap(a[0], a[1], d.mc),
    )


def draw_logmap(d: Drawer) -> Sample | None:
    x = d.point()
    y = d.partner(x)
    exact = ref.logmap(x, y, d.mc)
    return Sample(
        [d.tensor(x), d.tensor(y)],
        d.tangent_score(x, exact, [d.hulp(x), d.hulp(y)]),
        lambda a: ref.logmap(a[0], a[1], d.mc),
    )


def draw_dist(d: Drawer) -> Sample | None:
    x = d.point()
    y = d.partner(x)
    exact = ref.dist(x, y, d.mc)
    allow = [d.hulp(x), d.hulp(y)]

    def score(out: torch.Tensor) -> tuple[float, bool]:
        return metrics.scalar_error(_scalar_out(out), exact, d.mc, d.dtype, allow), True

    return Sample([d.tensor(x), d.tensor(y)], score, lambda a: ref.dist(a[0], a[1], d.mc))


def draw_dist0(d: Drawer) -> Sample | None:
    x = d.point()
    exact = ref.dist0(x, d.mc)
    allow = [d.hulp(x)]

    def score(out: torch.Tensor) -> tuple[float, bool]:
        return metrics.scalar_error(_scalar_out(out), exact, d.mc, d.dtype, allow), True

    return Sample([d.tensor(x)], score, lambda a: ref.dist0(a[0], d.mc))


def _draw_pairwise(d: Drawer, squared: bool) -> Sample | None:
    n, m = PAIRWISE_SHAPE
    xs = d.points(n)
    ys = d.points(m)
    if d.rng.random() < 0.2:
        ys[0] = list(xs[0])
    exact = ref.pairwise_dist(xs, ys, d.mc, squared=squared)
    hx = [d.hulp(x) for x in xs]
    hy = [d.hulp(y) for y in ys]

    def score(out: torch.Tensor) -> tuple[float, bool]:
        got = ref.to_mp(out)
        worst = 0.0
        for i in range(n):
            for j in range(m):
                allow = [hx[i], hy[j]]
                if squared:
                    err = metrics.squared_length_error(got[i][j], exact[i][j], d.mc, d.dtype, allow)
                else:
                    err = metrics.scalar_error(got[i][j], exact[i][j], d.mc, d.dtype, allow)
                worst = max(worst, err)
        return worst, True

    return Sample(
        [d.tensor(xs), d.tensor(ys)],
        score,
        lambda a: ref.pairwise_dist(a[0], a[1], d.mc, squared=squared),
    )


def draw_pairwise_dist(d: Drawer) -> Sample | None:
    return _draw_pairwise(d, False)


def draw_pairwise_dist_squared(d: Drawer) -> Sample | None:
    return _draw_pairwise(d, True)


def draw_gyration(d: Drawer) -> Sample | None:
    a, b, u = d.points(3)
    exact = ref.gyration(a, b, u, d.mc)
    allow = [d.hulp(a), d.hulp(b), d.hulp(u)]
    return Sample(
        [d.tensor(a), d.tensor(b), d.tensor(u)],
        d.point_score(exact, allow),
        lambda a: ref.gyration(a[0], a[1], a[2], d.mc),
    )


def draw_transp(d: Drawer) -> Sample | None:
    x, y, z = d.points(3)
    v = d.tangent(x, z)
    exact = ref.transp(x, y, v, d.mc)
    allow = [d.hulp(x), d.hulp(y), d.hulp_t(x, v)]
    return Sample(
        [d.tensor(x), d.tensor(y), d.tensor(v)],
        d.tangent_score(y, exact, allow),
        lambda a: ref.transp(a[0], a[1], a[2], d.mc),
    )


def draw_transp0(d: Drawer) -> Sample | None:
    y, z = d.points(2)
    v = d.tangent(None, z)
    exact = ref.transp0(y, v, d.mc)
    allow = [d.hulp(y), d.hulp_t([0.0] * d.dim, v)]
    return Sample(
        [d.tensor(y), d.tensor(v)],
        d.tangent_score(y, exact, allow),
        lambda a: ref.transp0(a[0], a[1], d.mc),
    )


def draw_egrad2rgrad(d: Drawer) -> Sample | None:
    x = d.point()
    g = [d.rnd(d.rng.gauss(0.0, 1.0)) for _ in range(d.dim)]
    exact = ref.egrad2rgrad(x, g, d.mc)
    allow = [d.hulp(x)]

    def score(out: torch.Tensor) -> tuple[float, bool]:
        return metrics.relative_error(ref.to_mp(out), exact, d.dtype, allow), True

    return Sample([d.tensor(x), d.tensor(g)], score, lambda a: ref.egrad2rgrad(a[0], a[1], d.mc))


def draw_poincare_to_klein(d: Drawer) -> Sample | None:
    x = d.point()
    exact_k = ref.poincare_to_klein(x, d.mc)
    hk = metrics.hulp_klein(exact_k, d.mc, d.dtype)
    allow = [hk, d.hulp(x)]

    def score(out: torch.Tensor) -> tuple[float, bool]:
        k = ref.to_mp(out)
        if not bool(torch.isfinite(out).all()) or not ref.in_ball(k, d.mc):
            return math.inf, False
        p = ref.klein_to_poincare(k, d.mc)
        return metrics.point_error(p, x, d.mc, d.dtype, allow), True

    return Sample([d.tensor(x)], score, lambda a: ref.poincare_to_klein(a[0], d.mc))


def draw_klein_to_poincare(d: Drawer) -> Sample | None:
    x = d.point()
    k = [d.rnd(v) for v in ref.poincare_to_klein(x, d.mc)]
    if not ref.in_ball(k, d.mc):
        return None  # the Klein model cannot represent this point in the dtype
    exact = ref.klein_to_poincare(k, d.mc)
    if not d.within(exact):
        return None
    hk = metrics.hulp_klein(k, d.mc, d.dtype)
    return Sample(
        [d.tensor(k)], d.point_score(exact, [hk]), lambda a: ref.klein_to_poincare(a[0], d.mc)
    )


def draw_poincare_to_lorentz(d: Drawer) -> Sample | None:
    x = d.point()
    exact_h = ref.poincare_to_lorentz(x, d.mc)
    allow = [metrics.hulp_lorentz(exact_h, d.mc, d.dtype), d.hulp(x)]

    return Sample(
        [d.tensor(x)], d.lorentz_score(x, allow), lambda a: ref.poincare_to_lorentz(a[0], d.mc)
    )


def draw_lorentz_to_poincare(d: Drawer) -> Sample | None:
    x = d.point()
    h = [d.rnd(v) for v in ref.poincare_to_lorentz(x, d.mc)]
    try:
        exact = ref.lorentz_to_poincare(h, d.mc)
    except ValueError:
        return None
    if not d.within(exact):
        return None
    hl = metrics.hulp_lorentz(h, d.mc, d.dtype)
    return Sample(
        [d.tensor(h)], d.point_score(exact, [hl]), lambda a: ref.lorentz_to_poincare(a[0], d.mc)
    )


def draw_einstein_midpoint(d: Drawer) -> Sample | None:
    pts = d.points(MIDPOINT_POINTS)
    w = [0.0 if d.rng.random() < 0.3 else d.rnd(d.rng.uniform(0.0, 1.0)) for _ in pts]
    if all(v == 0 for v in w):
        w[d.rng.randrange(len(w))] = 1.0
    exact = ref.einstein_midpoint(pts, w, d.mc)
    allow = [d.hulp(p) for p, v in zip(pts, w, strict=True) if v != 0]
    return Sample(
        [d.tensor(pts), d.tensor(w)],
        d.point_score(exact, allow),
        lambda a: ref.einstein_midpoint(a[0], a[1], d.mc),
    )


# The fused compositions of poincare._fused, called as the modules of poincare.nn call them.


def _fused_tangents(d: Drawer) -> tuple[list[float], list[float], ref.Vec]:
    """Two tangent vectors ``u``, ``b`` at the origin, each the exact ``log_0`` of a drawn point
    rounded to the dtype: ``b = -u`` (8%, the sum is the origin), ``b`` the negated tangent of a
    point a few float steps from ``exp_0(u)`` (8%), ``b = 0`` (4%), else independent; and the
    exact ``exp_0(u) ⊕ exp_0(b)``."""
    y = d.point()
    u = d.tangent(None, y)
    r = d.rng.random()
    if r < 0.08:
        b = [-v for v in u]
    elif r < 0.16:
        b = [-v for v in d.tangent(None, d.near(y))]
    elif r < 0.2:
        b = [0.0] * d.dim
    else:
        b = d.tangent(None, d.point())
    return u, b, ref.expmap0_add(u, b, d.mc)


def _composition_allowance(d: Drawer, tangents: Sequence[Sequence[float]]) -> list[Any]:
    """The budget of the composition ``mobius_add(expmap0(u), expmap0(b))`` a fused op
    replaces: each tangent input's float step at the origin (``hulp_tangent``) and the float
    step of its exact image ``exp_0(v)``, the point the composition rounds and sums. Rounding
    ``u`` moves ``exp_0(u)`` sideways by the float step of that point, which the sum carries
    undiminished to a result that may lie near the origin: with the tangent steps alone, even
    the exact result of inputs moved by one float step scores thousands of hULP."""
    zero = [0.0] * d.dim
    allow: list[Any] = []
    for v in tangents:
        allow += [d.hulp_t(zero, v), d.hulp(ref.expmap0(v, d.mc))]
    return allow


def draw_expmap0_add(d: Drawer) -> Sample | None:
    """Tangent vectors whose images and exact sum lie within the band; the allowance is the
    budget of the composition it replaces (:func:`_composition_allowance`)."""
    u, b, exact = _fused_tangents(d)
    if not d.within(exact):
        return None
    allow = _composition_allowance(d, [u, b])
    return Sample(
        [d.tensor(u), d.tensor(b)],
        d.point_score(exact, allow),
        lambda a: ref.expmap0_add(a[0], a[1], d.mc),
    )


def draw_expmap0_add_lorentz(d: Drawer) -> Sample | None:
    """The inputs of :func:`draw_expmap0_add` (without ``b`` in 30% of the draws: the Lorentz
    coordinates of ``exp_0(u)``), scored as :func:`draw_poincare_to_lorentz`: the hyperboloid
    result mapped exactly to the ball, with the allowance of the exact coordinates added."""
    u, drawn_b, exact = _fused_tangents(d)
    b: list[float] | None = drawn_b
    if d.rng.random() < 0.3:
        b = None
        exact = ref.expmap0(u, d.mc)
    if not d.within(exact):
        return None
    exact_h = ref.expmap0_add_lorentz(u, b, d.mc)
    allow = [metrics.hulp_lorentz(exact_h, d.mc, d.dtype)]
    allow += _composition_allowance(d, [u] if b is None else [u, b])

    inputs = [d.tensor(u)] if b is None else [d.tensor(u), d.tensor(b)]
    return Sample(
        inputs,
        d.lorentz_score(exact, allow),
        lambda a: ref.expmap0_add_lorentz(a[0], a[1] if len(a) > 1 else None, d.mc),
    )


def draw_midpoint_logmap0(d: Drawer) -> Sample | None:
    """The inputs of :func:`draw_einstein_midpoint`; the exact ``log_0`` of the midpoint is
    scored as a tangent vector at the origin (as :func:`draw_logmap0`)."""
    pts = d.points(MIDPOINT_POINTS)
    w = [0.0 if d.rng.random() < 0.3 else d.rnd(d.rng.uniform(0.0, 1.0)) for _ in pts]
    if all(v == 0 for v in w):
        w[d.rng.randrange(len(w))] = 1.0
    exact = ref.midpoint_logmap0(pts, w, d.mc)
    allow = [d.hulp(p) for p, v in zip(pts, w, strict=True) if v != 0]
    return Sample(
        [d.tensor(pts), d.tensor(w)],
        d.tangent_score([0.0] * d.dim, exact, allow),
        lambda a: ref.midpoint_logmap0(a[0], a[1], d.mc),
    )


def _draw_cosh_score(d: Drawer, kind: str) -> Sample | None:
    """Pairs as :func:`draw_dist` (``y = x`` and ``y`` a few float steps from ``x`` included),
    ``β = 1``. The distance score is scored as a length (``scalar_error``), the squared one as
    a squared length (``squared_length_error``), and ``cosh(sqrt(c) d) - 1`` through the length
    it encodes, ``2/sqrt(c) · asinh(sqrt(v/2))`` of the computed ``v``, evaluated exactly."""
    x = d.point()
    y = d.partner(x)
    exact_d = ref.dist(x, y, d.mc)
    allow = [d.hulp(x), d.hulp(y)]

    def score(out: torch.Tensor) -> tuple[float, bool]:
        v = -_scalar_out(out)
        if not mpmath.isfinite(v):
            return math.inf, True
        if kind == "squared":
            return metrics.squared_length_error(v, exact_d**2, d.mc, d.dtype, allow), True
        if kind == "cosh":
            if v < 0:
                return math.inf, True
            with mpmath.workdps(ref.DPS):
                v = 2 / d.sc * mpmath.asinh(mpmath.sqrt(v / 2))
        return metrics.scalar_error(v, exact_d, d.mc, d.dtype, allow), True

    return Sample(
        [d.tensor(x), d.tensor(y)],
        score,
        lambda a: [ref.cosh_score(a[0], a[1], d.mc, kind)],
    )


def draw_cosh_score_distance(d: Drawer) -> Sample | None:
    return _draw_cosh_score(d, "distance")


def draw_cosh_score_squared(d: Drawer) -> Sample | None:
    return _draw_cosh_score(d, "squared")


def draw_cosh_score_cosh(d: Drawer) -> Sample | None:
    return _draw_cosh_score(d, "cosh")


Call = Callable[[list[torch.Tensor], float], torch.Tensor]


def _ours(name: str) -> Call:
    fn = getattr(poincare, name)

    def call(args: list[torch.Tensor], c: float) -> torch.Tensor:
        return fn(*args, c=c)  # type: ignore[no-any-return]

    return call


def _ours_pairwise(squared: bool) -> Call:
    def call(args: list[torch.Tensor], c: float) -> torch.Tensor:
        return poincare.pairwise_dist(args[0], args[1], c=c, squared=squared)

    return call


def _ours_midpoint(args: list[torch.Tensor], c: float) -> torch.Tensor:
    return poincare.einstein_midpoint(args[0], args[1], c=c)


def _ours_conformal(args: list[torch.Tensor], c: float) -> torch.Tensor:
    return poincare.conformal_factor(args[0], c=c)


def _ours_expmap0_add(args: list[torch.Tensor], c: float) -> torch.Tensor:
    return poincare.expmap0_add(args[0], args[1], c=c)


def _ours_expmap0_add_lorentz(args: list[torch.Tensor], c: float) -> torch.Tensor:
    return poincare.expmap0_add_lorentz(args[0], args[1] if len(args) > 1 else None, c=c)


def _ours_midpoint_logmap0(args: list[torch.Tensor], c: float) -> torch.Tensor:
    """As the attention merges its heads: float64 Lorentz coordinates of the points, their
    weighted sums ``agg = w @ h``, then the fused ``log_0`` of the midpoint in the dtype."""
    pts, w = args
    h = poincare.poincare_to_lorentz(pts.to(torch.float64), c=c)
    agg = w.to(torch.float64) @ h
    return _fused.midpoint_logmap0(agg, None, c=c, dim=pts.shape[-1], dtype=pts.dtype)


def _ours_cosh_score(kind: str) -> Call:
    """As :func:`poincare.nn.functional.hyperbolic_attention` scores explicitly:
    ``g - 1`` (:func:`poincare._fused.lorentz_cosh_minus_one`) from float64 Lorentz coordinates
    of the points, then the fused score in the points' dtype (β = 1)."""

    def call(args: list[torch.Tensor], c: float) -> torch.Tensor:
        x, y = args
        dtype = x.dtype
        hx = poincare.poincare_to_lorentz(x.to(torch.float64), c=c)
        hy = poincare.poincare_to_lorentz(y.to(torch.float64), c=c)
        gm1 = _fused.lorentz_cosh_minus_one(hx.unsqueeze(0), hy.unsqueeze(0), c=c)  # (1, 1)
        beta = torch.ones((), dtype=dtype)
        return _fused.cosh_score(gm1, beta, c=c, score=kind, dtype=dtype).reshape(1)

    return call


PATHS: dict[str, str] = {"eager": "poincare", "branch-free": "branch-free"}
"""This library's two implementations of every op, by path name: the implementation name of
the report's tables. ``poincare`` is eager CPU code with its data-dependent shortcuts;
``branch-free`` is the form that ``torch.compile``, ``torch.func`` transforms and accelerators
take, measured on the CPU under :class:`poincare.branch_free`. Both are under the contract."""

OURS: tuple[str, ...] = tuple(PATHS.values())
"""The implementation names of this library in a report's table."""


def _on_path(call: Call, path: str) -> Call:
    """``call`` on ``path`` (a key of :data:`PATHS`)."""
    if path == "eager":
        return call

    def branch_free(args: list[torch.Tensor], c: float) -> torch.Tensor:
        with poincare.branch_free():
            return call(args, c)

    return branch_free


@dataclass(frozen=True)
class OpSpec:
    """An op of the report: its input drawer and how to call it."""

    name: str
    draw: Callable[[Drawer], Sample | None]
    call: Call


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        OpSpec("project", draw_project, _ours("project")),
        OpSpec("conformal_factor", draw_conformal_factor, _ours_conformal),
        OpSpec("mobius_add", draw_mobius_add, _ours("mobius_add")),
        OpSpec("mobius_sub", draw_mobius_sub, _ours("mobius_sub")),
        OpSpec("mobius_scalar_mul", draw_mobius_scalar_mul, _ours("mobius_scalar_mul")),
        OpSpec("mobius_matvec", draw_mobius_matvec, _ours("mobius_matvec")),
        OpSpec("expmap0", draw_expmap0, _ours("expmap0")),
        OpSpec("logmap0", draw_logmap0, _ours("logmap0")),
        OpSpec("expmap", draw_expmap, _ours("expmap")),
        OpSpec("logmap", draw_logmap, _ours("logmap")),
        OpSpec("dist", draw_dist, _ours("dist")),
        OpSpec("dist0", draw_dist0, _ours("dist0")),
        OpSpec("pairwise_dist", draw_pairwise_dist, _ours_pairwise(False)),
        OpSpec("pairwise_dist_sq", draw_pairwise_dist_squared, _ours_pairwise(True)),
        OpSpec("gyration", draw_gyration, _ours("gyration")),
        OpSpec("transp", draw_transp, _ours("transp")),
        OpSpec("transp0", draw_transp0, _ours("transp0")),
        OpSpec("egrad2rgrad", draw_egrad2rgrad, _ours("egrad2rgrad")),
        OpSpec("einstein_midpoint", draw_einstein_midpoint, _ours_midpoint),
        OpSpec("poincare_to_klein", draw_poincare_to_klein, _ours("poincare_to_klein")),
        OpSpec("klein_to_poincare", draw_klein_to_poincare, _ours("klein_to_poincare")),
        OpSpec("poincare_to_lorentz", draw_poincare_to_lorentz, _ours("poincare_to_lorentz")),
        OpSpec("lorentz_to_poincare", draw_lorentz_to_poincare, _ours("lorentz_to_poincare")),
        OpSpec("expmap0_add", draw_expmap0_add, _ours_expmap0_add),
        OpSpec("expmap0_add_lorentz", draw_expmap0_add_lorentz, _ours_expmap0_add_lorentz),
        OpSpec("midpoint_logmap0", draw_midpoint_logmap0, _ours_midpoint_logmap0),
        OpSpec("cosh_score_distance", draw_cosh_score_distance, _ours_cosh_score("distance")),
        OpSpec("cosh_score_squared", draw_cosh_score_squared, _ours_cosh_score("squared")),
        OpSpec("cosh_score_cosh", draw_cosh_score_cosh, _ours_cosh_score("cosh")),
    ]
}
"""Every banded op of the report, by name."""


def _geoopt_calls(c: float, dtype: torch.dtype) -> dict[str, Call]:
    """The peer geoopt 0.5.1 (``geoopt.PoincareBall``) for the ops it has."""
    with optional_imports("geoopt", extra="dev", purpose="the accuracy report's --peer geoopt"):
        import geoopt
        from geoopt.manifolds.stereographic import math as gmath

    # Built from a tensor of the dtype: PoincareBall(c=float) holds its curvature through a
    # float32 parameter, which would give float64 inputs a curvature off by ~1e-8.
    ball = geoopt.PoincareBall(c=torch.tensor(c, dtype=dtype))
    k = torch.tensor(-c, dtype=dtype)

    def pairwise(squared: bool) -> Call:
        def call(a: list[torch.Tensor], _: float) -> torch.Tensor:
            d = ball.dist(a[0][:, None, :], a[1][None, :, :])
            return d * d if squared else d  # type: ignore[no-any-return]

        return call

    return {
        "project": lambda a, _: ball.projx(a[0]),
        "conformal_factor": lambda a, _: ball.lambda_x(a[0], keepdim=True),
        "mobius_add": lambda a, _: ball.mobius_add(a[0], a[1]),
        "mobius_sub": lambda a, _: ball.mobius_sub(a[0], a[1]),
        "mobius_scalar_mul": lambda a, _: ball.mobius_scalar_mul(a[0], a[1]),
        "mobius_matvec": lambda a, _: ball.mobius_matvec(a[0], a[1]),
        "expmap0": lambda a, _: ball.expmap0(a[0]),
        "logmap0": lambda a, _: ball.logmap0(a[0]),
        "expmap": lambda a, _: ball.expmap(a[0], a[1]),
        "logmap": lambda a, _: ball.logmap(a[0], a[1]),
        "dist": lambda a, _: ball.dist(a[0], a[1]),
        "dist0": lambda a, _: ball.dist0(a[0]),
        "pairwise_dist": pairwise(False),
        "pairwise_dist_sq": pairwise(True),
        "gyration": lambda a, _: gmath.gyration(a[0], a[1], a[2], k=k),
        "transp": lambda a, _: ball.transp(a[0], a[1], a[2]),
        "transp0": lambda a, _: ball.transp0(a[0], a[1]),
        "egrad2rgrad": lambda a, _: ball.egrad2rgrad(a[0], a[1]),
        "einstein_midpoint": lambda a, _: ball.weighted_midpoint(a[0], a[1], reducedim=[0]),
    }


PEERS = ("geoopt",)
"""Peer libraries :func:`measure` can compare against."""


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------


@dataclass
class Worst:
    """The worst sample of an op and dtype: the smallest failing band's worst input, or else
    the largest error seen. ``inputs`` are the exact float values as ``float.hex`` strings."""

    radius: float
    error: float
    reason: str
    inputs: list[Any]
    sensitivity: float = math.nan
    """The largest score of the exact result of the inputs with one coordinate moved by one
    float step (computed for failing inputs only): what the problem's own conditioning costs
    under the contract's allowances."""


@dataclass
class Report:
    """The measured table: ``table[(impl, op, dtype_name)]`` lists one :class:`BandResult` per
    band (increasing radius); ``worst`` the matching :class:`Worst`; ``max_radius`` the
    representable radius per dtype name, ours against the reference."""

    c: float
    dim: int
    samples: int
    table: dict[tuple[str, str, str], list[BandResult]] = field(default_factory=dict)
    worst: dict[tuple[str, str, str], Worst] = field(default_factory=dict)
    max_radius: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def usable(self, impl: str, op: str, dtype: str) -> float:
        """The usable radius of an op (:func:`verification.metrics.usable_radius`)."""
        return metrics.usable_radius(self.table[(impl, op, dtype)])


def _hex_inputs(inputs: list[torch.Tensor]) -> list[Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, list):
            return [conv(u) for u in v]
        return float(v).hex()

    return [conv(t.to(torch.float64).tolist()) for t in inputs]


def _grads_finite(call: Call, inputs: list[torch.Tensor], c: float) -> bool:
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    try:
        out = call(leaves, c)
        out.sum().backward()  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError):
        return False
    return all(t.grad is None or bool(torch.isfinite(t.grad).all()) for t in leaves)


def one_ulp_sensitivity(sample: Sample, dtype: torch.dtype) -> float:
    """The largest score of the exact result of ``sample``'s inputs with one coordinate moved
    one float step up or down (perturbations that leave the op's domain are skipped).

    An implementation can hardly do better than this: it is the error that a single rounding of
    one input coordinate causes in the exact result, measured with the same allowances."""
    worst = 0.0
    values = [t.to(torch.float64).tolist() for t in sample.inputs]
    for i, t in enumerate(sample.inputs):
        flat = t.reshape(-1)
        for j in range(flat.numel()):
            for target in (math.inf, -math.inf):
                moved = flat.clone()
                moved[j] = torch.nextafter(flat[j], torch.tensor(target, dtype=t.dtype))
                args = list(values)
                args[i] = moved.reshape(t.shape).to(torch.float64).tolist()
                try:
                    exact = sample.reference(args)
                except ValueError:
                    continue
                out = ref.to_tensor(exact, torch.float64)
                err, _ = sample.score(out)
                worst = max(worst, err)
    return worst


_Task = tuple[str, str, float, int, int, int, tuple[str, ...], tuple[str, ...]]


def _measure_one(task: _Task) -> dict[tuple[str, str, str], tuple[list[BandResult], Worst]]:
    """Measure one op in one dtype at one curvature over all its bands, on each of our paths
    and for the peers."""
    op_name, dtype_name, c, samples, dim, seed, peers, paths = task
    torch.set_num_threads(1)
    dtype = getattr(torch, dtype_name)
    spec = OPS[op_name]
    impls: dict[str, Call] = {PATHS[p]: _on_path(spec.call, p) for p in paths}
    for peer in peers:
        calls = _geoopt_calls(c, dtype) if peer == "geoopt" else {}
        if op_name in calls:
            impls[peer] = calls[op_name]
    results: dict[str, list[BandResult]] = {name: [] for name in impls}
    worst: dict[str, Worst] = {name: Worst(0.0, 0.0, "", []) for name in impls}
    for band_index, radius in enumerate(band_radii(dtype, c)):
        rng = random.Random(f"{seed}/{op_name}/{dtype_name}/{band_index}")
        drawer = Drawer(rng, dtype, c, radius, dim)
        drawn: list[Sample] = []
        for _ in range(samples * 10 + 10):
            if len(drawn) == samples:
                break
            sample = spec.draw(drawer)
            if sample is not None:
                drawn.append(sample)
        for name, call in impls.items():
            max_err, finite, inside, grads = 0.0, True, True, True
            band_worst: Worst | None = None
            band_worst_sample: Sample | None = None
            for sample in drawn:
                try:
                    with torch.no_grad():
                        out = call(sample.inputs, c)
                except (RuntimeError, ValueError) as exc:
                    out = torch.full((1,), math.nan)
                    raised = f"raised {type(exc).__name__}: {exc}"
                else:
                    raised = ""
                ok_finite = bool(torch.isfinite(out).all())
                err, contained = (math.inf, False) if raised else sample.score(out.double())
                ok_grad = _grads_finite(call, sample.inputs, c)
                reason = raised
                if reason:
                    pass
                elif not ok_finite:
                    reason = "non-finite output"
                elif not contained:
                    reason = "output outside the ball"
                elif not ok_grad:
                    reason = "non-finite gradient"
                elif err > metrics.HULP_LIMIT:
                    reason = f"error above {metrics.HULP_LIMIT:g} hULP"
                finite &= ok_finite
                inside &= contained
                grads &= ok_grad
                max_err = max(max_err, err)
                rank = (bool(reason), err)
                if band_worst is None or rank > (bool(band_worst.reason), band_worst.error):
                    band_worst = Worst(radius, err, reason, _hex_inputs(sample.inputs))
                    band_worst_sample = sample
            results[name].append(BandResult(radius, len(drawn), max_err, finite, inside, grads))
            if (
                band_worst is not None
                and not worst[name].reason
                and (band_worst.reason or band_worst.error >= worst[name].error)
            ):
                worst[name] = band_worst
                if band_worst.reason and band_worst_sample is not None:
                    band_worst.sensitivity = one_ulp_sensitivity(band_worst_sample, dtype)
    return {(name, op_name, dtype_name): (results[name], worst[name]) for name in results}


def measure(
    ops: Sequence[str] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    c: float = 1.0,
    samples: int = DEFAULT_SAMPLES,
    dim: int = 4,
    seed: int = 0,
    peers: Sequence[str] = (),
    jobs: int = 1,
    paths: Sequence[str] = ("eager",),
) -> Report:
    """Measure the error of ``ops`` (default: all of :data:`OPS`) in every dtype and band.

    ``samples`` inputs are drawn per band (fewer where the band admits fewer, e.g. the Klein
    model beyond its representable radius); draws are deterministic given ``seed``. ``peers``
    names libraries of :data:`PEERS` measured on the same inputs; ``paths`` the paths of this
    library (keys of :data:`PATHS`). ``jobs > 1`` spreads the (op, dtype) pairs over worker
    processes. ``c`` is used as given, a float64 number, in every dtype: the exact result is
    that of the exact float inputs and this curvature, and an op on float32 data must not
    compute with the curvature's float32 rounding where that matters. Raises ``ValueError``
    for an unknown op, path or peer, ``c <= 0``, ``samples < 1`` or ``dim < 2``.
    """
    return measure_curvatures(
        [c],
        ops=ops,
        dtypes=dtypes,
        samples=samples,
        dim=dim,
        seed=seed,
        peers=peers,
        jobs=jobs,
        paths=paths,
    )[0]


def measure_curvatures(
    curvatures: Sequence[float],
    ops: Sequence[str] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    samples: int = DEFAULT_SAMPLES,
    dim: int = 4,
    seed: int = 0,
    peers: Sequence[str] = (),
    jobs: int = 1,
    paths: Sequence[str] = ("eager",),
) -> list[Report]:
    """:func:`measure` at each curvature of ``curvatures``, one :class:`Report` each, in their
    order; ``jobs > 1`` spreads the (curvature, op, dtype) triples over worker processes.
    Raises ``ValueError`` as :func:`measure` does, and for an empty ``curvatures``."""
    names = list(OPS) if ops is None else list(ops)
    for name in names:
        if name not in OPS:
            raise ValueError(f"ops: unknown op {name!r}; known: {', '.join(OPS)}")
    for peer in peers:
        if peer not in PEERS:
            raise ValueError(f"peers: unknown peer {peer!r}; known: {', '.join(PEERS)}")
    for path in paths:
        if path not in PATHS:
            raise ValueError(f"paths: unknown path {path!r}; known: {', '.join(PATHS)}")
    if not curvatures:
        raise ValueError("curvatures: give at least one curvature")
    for c in curvatures:
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"c must be positive and finite, got {c!r}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}")
    start = time.perf_counter()
    reports = [Report(c=float(c), dim=dim, samples=samples) for c in curvatures]
    tasks: list[_Task] = []
    owner: list[Report] = []
    for report in reports:
        for dtype in dtypes:
            dname = str(dtype).removeprefix("torch.")
            report.max_radius[dname] = (
                poincare.max_radius(dtype, c=report.c),
                float(ref.max_radius(dtype, report.c)),
            )
            for name in names:
                tasks.append(
                    (name, dname, report.c, samples, dim, seed, tuple(peers), tuple(paths))
                )
                owner.append(report)
    if jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(jobs) as pool:
            parts = pool.map(_measure_one, tasks, chunksize=1)
    else:
        parts = [_measure_one(t) for t in tasks]
    for report, part in zip(owner, parts, strict=True):
        for key, (bands, worst) in part.items():
            report.table[key] = bands
            report.worst[key] = worst
    seconds = time.perf_counter() - start
    for report in reports:
        report.seconds = seconds
    return reports


# ----------------------------------------------------------------------------------------------
# Printing and plotting
# ----------------------------------------------------------------------------------------------


def _impl_order(report: Report) -> list[str]:
    """The implementations of ``report``: this library's paths first (:data:`OURS` order), then
    the peers by name."""
    names = {k[0] for k in report.table}
    return [n for n in OURS if n in names] + sorted(names - set(OURS))


def _cell(band: BandResult) -> str:
    if band.samples == 0:
        return "n/a"
    if not band.finite:
        text = "nonfin"
    elif math.isinf(band.max_error):
        text = "inf"
    elif band.max_error >= 1e5:
        text = f"{band.max_error:.0e}"
    elif band.max_error >= 100:
        text = f"{band.max_error:.0f}"
    else:
        text = f"{band.max_error:.2g}" if band.max_error < 10 else f"{band.max_error:.1f}"
    if not band.in_ball:
        text += "!b"
    if not band.grad_finite:
        text += "!g"
    return text


def format_report(report: Report) -> str:
    """The report as text: per dtype a table op × radius of the largest error in hULP (one row
    per implementation), then the usable radius per op, dtype and implementation, then the
    worst failing input of every op of ours that fails somewhere."""
    lines: list[str] = []
    impls = _impl_order(report)
    dtypes = sorted({k[2] for k in report.table}, key=lambda s: s != "float32")
    ops = [op for op in OPS if any(k[1] == op for k in report.table)]
    lines.append(
        f"Largest error in hULP by band radius (c={report.c:g}, dim={report.dim}, "
        f"{report.samples} samples per band; !b: a point outside the ball, !g: a non-finite "
        f"gradient, n/a: no input representable)"
    )
    for dname in dtypes:
        (ours_r, exact_r) = report.max_radius.get(dname, (math.nan, math.nan))
        lines.append("")
        lines.append(
            f"{dname}: max_radius = {ours_r:.6g} (reference {exact_r:.6g}, "
            f"relative difference {abs(ours_r - exact_r) / exact_r:.1e})"
        )
        key0 = next(k for k in report.table if k[2] == dname)
        radii = [b.radius for b in report.table[key0]]
        header = f"{'op':<20}{'impl':<12}" + "".join(f"{r:>8.4g}" for r in radii)
        lines.append(header)
        lines.append("-" * len(header))
        for op in ops:
            for impl in impls:
                key = (impl, op, dname)
                if key not in report.table:
                    continue
                cells = "".join(f"{_cell(b):>8}" for b in report.table[key])
                label = op if impl == impls[0] or (impls[0], op, dname) not in report.table else ""
                lines.append(f"{label:<20}{impl:<12}{cells}")
    lines.append("")
    lines.append(f"Usable radius (all bands up to it within {metrics.HULP_LIMIT:g} hULP, finite, ")
    lines[-1] += "in the ball, finite gradients)"
    header = f"{'op':<20}" + "".join(f"{d + ' ' + i:>20}" for d in dtypes for i in impls)
    lines.append(header)
    lines.append("-" * len(header))
    for op in ops:
        row = f"{op:<20}"
        for dname in dtypes:
            top = report.max_radius[dname][1]
            for impl in impls:
                key = (impl, op, dname)
                if key not in report.table:
                    row += f"{'-':>20}"
                    continue
                usable = report.usable(impl, op, dname)
                mark = " (max)" if usable >= top * (1 - 1e-9) else ""
                row += f"{f'{usable:.3g}{mark}':>20}"
        lines.append(row)
    failures = [(k, w) for k, w in report.worst.items() if k[0] in OURS and w.reason]
    if failures:
        lines.append("")
        lines.append("Failing inputs of poincare (smallest failing band, its worst input):")
        for (impl, op, dname), w in failures:
            lines.append(
                f"  {op} {dname} ({impl}) R={w.radius:.4g}: {w.reason} ({w.error:.3g} hULP); "
                f"the exact result of these inputs moved by one float step scores up to "
                f"{w.sensitivity:.3g} hULP"
            )
            lines.append(f"    inputs (float.hex): {w.inputs}")
    lines.append("")
    lines.append(f"({report.seconds:.1f} s)")
    return "\n".join(lines)


def plot_report(report: Report, path: Path) -> None:
    """Write a PNG of the largest error against the band radius: one panel per dtype and
    implementation, one line per op, log scale, the 16 hULP bound dashed."""
    with optional_imports("matplotlib", extra="verify", purpose="the accuracy report's plot"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    impls = _impl_order(report)
    dtypes = sorted({k[2] for k in report.table}, key=lambda s: s != "float32")
    fig, axes = plt.subplots(
        len(impls), len(dtypes), figsize=(7 * len(dtypes), 5 * len(impls)), squeeze=False
    )
    for i, impl in enumerate(impls):
        for j, dname in enumerate(dtypes):
            ax = axes[i][j]
            tab20, dark2 = plt.get_cmap("tab20"), plt.get_cmap("Dark2")
            colors = [tab20(k) for k in range(20)] + [dark2(k) for k in range(8)]
            for index, op in enumerate(OPS):
                bands = report.table.get((impl, op, dname))
                if not bands:
                    continue
                xs = [b.radius for b in bands if b.samples > 0]
                ys = [max(min(b.max_error, 1e12), 1e-3) for b in bands if b.samples > 0]
                ax.plot(
                    xs,
                    ys,
                    marker="os^vD"[index % 5],
                    markersize=3,
                    linestyle=("-", "--", ":")[index % 3],
                    color=colors[index % len(colors)],
                    label=op,
                )
            ax.axhline(metrics.HULP_LIMIT, color="k", linestyle="--", linewidth=1)
            ax.set_yscale("log")
            ax.set_xlabel("band radius R (hyperbolic distance from the origin)")
            ax.set_ylabel("largest error (hULP)")
            ax.set_title(f"{impl}, {dname}, c={report.c:g}")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


KNOWN_MISSES: dict[tuple[str, str], float] = {
    ("midpoint_logmap0", "float64"): 3.0,
    ("cosh_score_distance", "float64"): 0.0,
    ("cosh_score_squared", "float64"): 0.0,
    ("cosh_score_cosh", "float64"): 0.0,
}
"""The documented misses of the contract: ``(op, dtype name) -> R``, the usable radius the op
reaches, in units of the curvature radius (``sqrt(c) * radius``), on every path. Any other op
of this library below the representable radius, or a known miss below its ``R``, makes
:func:`shortfalls` report it (and the command exit with status 1).

All four are fused kernels of the attention on float64 Lorentz coordinates of float64 points,
a use the attention does not make (its float64 calls score and aggregate from the points):
the midpoint's Klein norm carries a relative error ``eps``, which ``artanh`` turns into about
``cosh r`` hULP (checked up to 3 curvature radii by the property suite), and ``g - 1`` of the
scores keeps an absolute error of about ``eps c h_0^2``, which misses the hULP of a distance
for points near the origin as for close pairs far out. On float32 points, whose coordinates
the attention forms in float64, all four meet the contract to the representable radius."""


def shortfalls(report: Report) -> list[str]:
    """The ops of this library that fall short in ``report``: one line per (op, dtype, path)
    whose usable radius is below the representable radius (or, for a :data:`KNOWN_MISSES`
    entry, below its documented radius)."""
    out = []
    for (impl, op, dname), _ in sorted(report.table.items()):
        if impl not in OURS:
            continue
        usable = report.usable(impl, op, dname)
        top = report.max_radius[dname][1]
        known = KNOWN_MISSES.get((op, dname))
        need = top if known is None else min(top, known / math.sqrt(report.c))
        if usable < need * (1 - 1e-9):
            what = "representable" if known is None else "documented"
            out.append(
                f"{op} {dname} ({impl}) at c={report.c:g}: usable radius {usable:.4g} below "
                f"the {what} radius {need:.4g}"
            )
    return out


def _summary_cell(report: Report, op: str, dname: str) -> str:
    """``max`` where every path of ours reaches the representable radius, else the usable
    radius of each path (``eager / branch-free``), ``-`` where the op was not measured."""
    top = report.max_radius[dname][1]
    values = [report.usable(impl, op, dname) for impl in OURS if (impl, op, dname) in report.table]
    if not values:
        return "-"
    if all(v >= top * (1 - 1e-9) for v in values):
        return "max"
    return " / ".join("max" if v >= top * (1 - 1e-9) else f"{v:.3g}" for v in values)


def format_summary(reports: Sequence[Report]) -> str:
    """The usable radius of every op of this library at every curvature of ``reports``, as a
    Markdown table: one row per op, one column per curvature and dtype; ``max`` where every
    measured path reaches the representable radius (given in the header row below it), else
    the radius of each path, ``eager / branch-free``."""
    dtypes = sorted({k[2] for r in reports for k in r.table}, key=lambda s: s != "float32")
    ops = [op for op in OPS if any(k[1] == op and k[0] in OURS for r in reports for k in r.table)]
    columns = [(r, d) for r in reports for d in dtypes]
    head = "| op | " + " | ".join(f"c = {r.c:g}, {d}" for r, d in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    top = "| representable radius | " + " | ".join(f"{r.max_radius[d][1]:.4g}" for r, d in columns)
    lines = [head, rule, top + " |"]
    for op in ops:
        cells = [_summary_cell(r, op, d) for r, d in columns]
        lines.append(f"| `{op}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


README_MARKERS = ("<!-- accuracy:begin -->", "<!-- accuracy:end -->")
"""The markers between which ``--write-readme`` writes the summary into README.md."""


def write_readme(path: Path, text: str) -> None:
    """Replace the text between :data:`README_MARKERS` in the file ``path`` by ``text``.

    Raises ``ValueError`` if the file lacks the markers."""
    begin, end = README_MARKERS
    content = path.read_text()
    i, j = content.find(begin), content.find(end)
    if i < 0 or j < i:
        raise ValueError(f"{path} has no {begin} ... {end} markers")
    path.write_text(content[: i + len(begin)] + "\n" + text + "\n" + content[j:])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verification.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--c",
        type=float,
        nargs="+",
        default=[1.0],
        metavar="C",
        help="curvatures, one report each and a summary of all (default 1.0)",
    )
    parser.add_argument(
        "--path",
        choices=[*PATHS, "both"],
        default="both",
        help="this library's eager path, its branch-free path, or both (default both)",
    )
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help=f"inputs per band ({DEFAULT_SAMPLES})"
    )
    parser.add_argument("--dim", type=int, default=4, help="dimension of the points (default 4)")
    parser.add_argument(
        "--out", type=Path, default=Path("report_out"), help="PNG folder (default report_out)"
    )
    parser.add_argument("--no-plot", action="store_true", help="write no PNG (needs no matplotlib)")
    parser.add_argument(
        "--dtype", choices=["float32", "float64", "both"], default="both", help="default both"
    )
    parser.add_argument(
        "--peer",
        choices=list(PEERS),
        action="append",
        default=[],
        help="also measure this library on the same inputs (repeatable)",
    )
    parser.add_argument(
        "--ops",
        nargs="+",
        choices=list(OPS),
        default=None,
        metavar="OP",
        help=f"ops to measure (default all: {', '.join(OPS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes"
    )
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="write the summary table into README.md, between its accuracy markers",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: measure at each curvature, print each report and (for several
    curvatures) the summary, write the PNGs; returns the exit status: 0, or 1 if some op of
    ours falls short (:func:`shortfalls`). A missing matplotlib (needed for the PNGs) ends the
    command before any work, in one line."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.no_plot:
        try:
            with optional_imports(
                "matplotlib", extra="verify", purpose="the accuracy report's plot"
            ):
                import matplotlib  # noqa: F401
        except MissingDependencyError as exc:
            parser.exit(1, f"{parser.prog}: error: {exc}\n")
    dtypes = [torch.float32, torch.float64]
    if args.dtype != "both":
        dtypes = [getattr(torch, args.dtype)]
    paths = list(PATHS) if args.path == "both" else [args.path]
    try:
        reports = measure_curvatures(
            args.c,
            ops=args.ops,
            dtypes=dtypes,
            samples=args.samples,
            dim=args.dim,
            seed=args.seed,
            peers=args.peer,
            jobs=args.jobs,
            paths=paths,
        )
    except ValueError as exc:
        parser.error(str(exc))
    short: list[str] = []
    for report in reports:
        print(format_report(report))
        if not args.no_plot:
            png = args.out / f"accuracy_c{report.c:g}.png"
            plot_report(report, png)
            print(f"wrote {png}")
        short += shortfalls(report)
        print()
    summary = format_summary(reports)
    print("Usable radius by curvature (max: the representable radius, on every path measured)")
    print(summary)
    if args.write_readme:
        command = "python -m verification.report " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        write_readme(
            Path(__file__).resolve().parent.parent / "README.md",
            f"`{command.strip()}` ({args.samples} samples per band, dim {args.dim}, paths: "
            f"{', '.join(paths)}):\n\n{summary}",
        )
    if short:
        print("\nBelow the representable radius:")
        print("\n".join(f"  {line}" for line in short))
    return 1 if short else 0


# The rows of the ops whose draws live in their own modules (gyroplanes and geodesics, the
# wrapped normal, the Fréchet mean). Those modules import this one and add their rows to OPS
# themselves when they are imported first; here they are added when this module is.
from . import report_distributions, report_means, report_planes  # noqa: E402

for _rows in (report_planes, report_distributions, report_means):
    OPS.update({spec.name: spec for spec in getattr(_rows, "SPECS", [])})


if __name__ == "__main__":
    sys.exit(main())
