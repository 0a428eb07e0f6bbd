"""Accuracy-report rows of the gyroplane distance and the geodesics.

Each row follows :mod:`verification.report`: a ``draw_*`` function builds one
:class:`~verification.report.Sample` per call (inputs in the dtype, every point input and the
exact output within the band radius), scored against :mod:`verification.reference_planes`; the
``call`` functions call the op the way the library's users do. :data:`SPECS` lists the rows, for
registration in :data:`verification.report.OPS`::

    from verification import report, report_planes
    report.OPS.update({s.name: s for s in report_planes.SPECS})
    print(report.format_report(report.measure(ops=[s.name for s in report_planes.SPECS])))

The allowances of the inputs are those of :mod:`verification.reference_planes`: the contract's
``hulp`` of every point input, plus the problem's own conditioning where a float step of an
input moves the exact result further (the direction of a gyroplane's normal; an extrapolated
geodesic).
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import torch

from poincare._geodesic import geodesic, geodesic_unit
from poincare._gyroplane import dist2plane
from verification import metrics
from verification import reference as ref
from verification import reference_planes as refp
from verification.report import OPS, Drawer, OpSpec, Sample

__all__ = [
    "SPECS",
    "draw_dist2plane",
    "draw_dist2plane_unsigned",
    "draw_geodesic",
    "draw_geodesic_unit",
]


def _scalar_out(out: torch.Tensor) -> Any:
    return ref.to_mp(out.reshape(()))


def _normal(d: Drawer) -> list[float]:
    """A normal vector: a random direction scaled by a power of two in ``[2^-20, 2^20]``
    (the result must not depend on its size), now and then along a coordinate axis."""
    if d.rng.random() < 0.1:
        a = [0.0] * d.dim
        a[d.rng.randrange(d.dim)] = d.rng.choice([1.0, -1.0])
    else:
        a = d.direction()
    scale = math.ldexp(1.0, d.rng.randint(-20, 20))
    return [d.rnd(scale * v) for v in a]


def _on_plane(d: Drawer, p: list[float], a: list[float]) -> list[float] | None:
    """A point of the gyroplane (before rounding): ``exp_p(v)`` for a tangent ``v ⟂ a`` of
    Riemannian length up to the room left in the band."""
    with mpmath.workdps(ref.DPS):
        na = ref.norm(a)
        w = d.direction()
        ahat = [mpmath.mpf(v) / na for v in a]
        wa = ref.dot(w, ahat)
        perp = [wi - wa * ai for wi, ai in zip(w, ahat, strict=True)]
        npp = ref.norm(perp)
        if npp == 0:
            return None
        length = d.rng.uniform(0.0, 2 * d.radius)
        lam = ref.conformal_factor(p, d.mc)
        v = [length / (lam * npp) * u for u in perp]
        x = [d.rnd(u) for u in ref.expmap(p, v, d.mc)]
        return x if d.within(x) else None


def _draw_dist2plane(d: Drawer, signed: bool) -> Sample | None:
    """``p`` a point; ``x`` an independent point (60%), ``p`` itself or a few float steps from
    it (16%), a point of the plane rounded to the dtype (16%), or on the normal geodesic
    through ``p`` (8%); the normal ``a`` of random direction and size (power of two)."""
    p = d.point()
    a = _normal(d)
    r = d.rng.random()
    x: list[float] | None
    if r < 0.16:
        x = list(p) if r < 0.08 else d.near(p)
    elif r < 0.32:
        x = _on_plane(d, p, a)
    elif r < 0.4:
        s = d.rng.uniform(-2 * d.radius, 2 * d.radius)
        x = [d.rnd(v) for v in refp.geodesic_unit(s, p, a, d.mc)]
    else:
        x = d.point()
    if x is None or not d.within(x):
        return None
    exact = refp.dist2plane(x, p, a, d.mc, signed)
    allow = refp.dist2plane_allowance(x, p, a, d.mc, d.dtype)

    def score(out: torch.Tensor) -> tuple[float, bool]:
        return metrics.scalar_error(_scalar_out(out), exact, d.mc, d.dtype, allow), True

    return Sample(
        [d.tensor(x), d.tensor(p), d.tensor(a)],
        score,
        lambda v: [refp.dist2plane(v[0], v[1], v[2], d.mc, signed)],
    )


def draw_dist2plane(d: Drawer) -> Sample | None:
    return _draw_dist2plane(d, True)


def draw_dist2plane_unsigned(d: Drawer) -> Sample | None:
    return _draw_dist2plane(d, False)


def _fraction(d: Drawer) -> float:
    """``t``: 0 or 1 (10%), uniform in ``[0, 1]`` (70%), or an extrapolation in ``[-1, 2]``."""
    r = d.rng.random()
    if r < 0.1:
        return float(d.rng.choice([0.0, 1.0]))
    if r < 0.8:
        return d.rnd(d.rng.random())
    return d.rnd(d.rng.uniform(-1.0, 2.0))


def draw_geodesic(d: Drawer) -> Sample | None:
    """``x``, ``y`` as :func:`verification.report.draw_dist` (``y = x`` and ``y`` a few float
    steps away included); ``t`` from :func:`_fraction`; the exact point within the band."""
    x = d.point()
    y = d.partner(x)
    t = _fraction(d)
    exact = refp.geodesic(t, x, y, d.mc)
    if not d.within(exact):
        return None
    allow = refp.geodesic_allowance(t, x, y, d.mc, d.dtype)
    return Sample(
        [d.tensor([t]), d.tensor(x), d.tensor(y)],
        d.point_score(exact, allow),
        lambda v: refp.geodesic(v[0][0], v[1], v[2], d.mc),
    )


def draw_geodesic_unit(d: Drawer) -> Sample | None:
    """``x`` a point, ``v`` the rounded ``log_x(y)`` of a partner ``y`` (zero when ``y = x``)
    scaled by a power of two, ``t`` a signed time up to twice the band radius."""
    x = d.point()
    y = d.partner(x)
    scale = math.ldexp(1.0, d.rng.randint(-10, 10))
    v = [d.rnd(scale * u) for u in d.tangent(x, y)]
    t = d.rnd(d.rng.uniform(-2 * d.radius, 2 * d.radius) if d.rng.random() < 0.9 else 0.0)
    exact = refp.geodesic_unit(t, x, v, d.mc)
    if not d.within(exact):
        return None
    allow = refp.geodesic_unit_allowance(t, x, v, d.mc, d.dtype)
    return Sample(
        [d.tensor([t]), d.tensor(x), d.tensor(v)],
        d.point_score(exact, allow),
        lambda w: refp.geodesic_unit(w[0][0], w[1], w[2], d.mc),
    )


def _call_dist2plane(signed: bool) -> Any:
    def call(args: list[torch.Tensor], c: float) -> torch.Tensor:
        return dist2plane(args[0], args[1], args[2], c=c, signed=signed)

    return call


def _call_geodesic(args: list[torch.Tensor], c: float) -> torch.Tensor:
    return geodesic(args[0], args[1], args[2], c=c)


def _call_geodesic_unit(args: list[torch.Tensor], c: float) -> torch.Tensor:
    return geodesic_unit(args[0], args[1], args[2], c=c)


SPECS: list[OpSpec] = [
    OpSpec("dist2plane", draw_dist2plane, _call_dist2plane(True)),
    OpSpec("dist2plane_unsigned", draw_dist2plane_unsigned, _call_dist2plane(False)),
    OpSpec("geodesic", draw_geodesic, _call_geodesic),
    OpSpec("geodesic_unit", draw_geodesic_unit, _call_geodesic_unit),
]
"""The report rows of this module, to add to :data:`verification.report.OPS`."""

OPS.update({spec.name: spec for spec in SPECS})
