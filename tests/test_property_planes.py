"""Properties of the gyroplane distance, the geodesics and ``mobius_fn_apply``, in hULP.

The contract's allowances of these ops are those of ``verification.reference_planes``: the
``hulp`` of every point input, plus, for the gyroplane, the rotation of the plane by one float
step of its normal's direction (``F·eps``, ``F`` the distance's sensitivity to that rotation)
and, for extrapolated geodesics, the Jacobi factors by which the endpoints' float steps grow.
Identities between ops are checked against the sum of the budgets of the ops involved
(``conftest.budget``/``scalar_budget``): 16 hULP of every point touched.
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    HULP_BOUND,
    assert_points_close,
    assert_scalars_close,
    budget,
    examples,
    hulp,
    note_tensors,
    rows,
    scalar_budget,
    ulp_length,
)
from hypothesis import given, note
from hypothesis import strategies as st

import poincare
from poincare._geodesic import geodesic, geodesic_unit, mobius_fn_apply
from poincare._gyroplane import dist2plane
from verification import metrics
from verification import reference as ref
from verification import reference_planes as refp
from verification.strategies import (
    antipodal_pairs,
    curvatures,
    dims,
    directions,
    matrices,
    nearly_equal_pairs,
    points,
    scalars,
)

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 4
#: Largest hyperbolic radius (in units of the curvature radius) of the gradient comparisons.
REFERENCE_RADIUS = 8.0
GRAD_RTOL = 1e-6


def _mp(t: torch.Tensor) -> list[Any]:
    """The exact values of the rows of ``t`` (``(..., D)``) as lists of mpf."""
    return list(ref.to_mp(t.detach().reshape(-1, t.shape[-1])))


def _setup(data: st.DataObject, max_dim: int = 4) -> tuple[float, int]:
    return data.draw(curvatures(), label="c"), data.draw(dims(max_dim=max_dim), label="dim")


def _normals(data: st.DataObject, d: int, dtype: torch.dtype, n: int = B) -> torch.Tensor:
    """Normals of random direction (now and then along an axis) and size ``2^k``."""
    u = data.draw(directions(d, (n,)), label="normal direction")
    if data.draw(st.integers(0, 4), label="axis normals") == 0:
        u = torch.zeros_like(u)
        u[:, 0] = 1.0
    k = data.draw(st.integers(-30, 30), label="log2 |a|")
    return (u * math.ldexp(1.0, k)).to(dtype)


def _pair(
    data: st.DataObject, dtype: torch.dtype, c: float, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    kind = data.draw(st.sampled_from(["independent", "near", "antipodal"]), label="pair kind")
    if kind == "near":
        return data.draw(nearly_equal_pairs(dtype, d, (B,), c=c), label="x, y")
    if kind == "antipodal":
        return data.draw(antipodal_pairs(dtype, d, (B,), c=c), label="x, y")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    return x, data.draw(points(dtype, d, (B,), c=c), label="y")


def _plane_allowance(
    x: torch.Tensor, p: torch.Tensor, a: torch.Tensor, c: float, dtype: torch.dtype
) -> list[float]:
    """Per row, Σ of the allowances of dist2plane (units of the curvature radius)."""
    return [
        float(sum(refp.dist2plane_allowance(xi, pi, ai, c, dtype)))
        for xi, pi, ai in zip(_mp(x), _mp(p), _mp(a), strict=True)
    ]


def _perpendicular(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to ``a`` (float64, last dimension at least 2): the normalised
    part of ``v`` orthogonal to ``a``, or ``(-a_1, a_0, 0, ...)`` where ``v`` is (nearly)
    parallel to ``a``."""
    a64, v64 = a.double(), v.double()
    ahat = a64 / torch.linalg.vector_norm(a64, dim=-1, keepdim=True)
    perp = v64 - (v64 * ahat).sum(-1, keepdim=True) * ahat
    swap = torch.zeros_like(ahat)
    swap[..., 0], swap[..., 1] = -ahat[..., 1], ahat[..., 0]
    n = torch.linalg.vector_norm(perp, dim=-1, keepdim=True)
    perp = torch.where(n < 1e-3, swap, perp)
    unit = perp / torch.linalg.vector_norm(perp, dim=-1, keepdim=True)
    # once more: after one projection the part along a is of order eps / |perp| (up to 1e-13
    # where v is nearly parallel to a), which a point at radius r carries off the plane by
    # sinh(r) times that; a second projection leaves order eps, what the tests allow
    unit = unit - (unit * ahat).sum(-1, keepdim=True) * ahat
    again: torch.Tensor = unit / torch.linalg.vector_norm(unit, dim=-1, keepdim=True)
    return again


# ---------------------------------------------------------------------------------------------
# dist2plane
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_dist2plane_matches_reference(dtype: torch.dtype, data: st.DataObject) -> None:
    """Signed and unsigned distances within 16 hULP of mpmath, for independent points, points
    equal or nearly equal to ``p`` and antipodal pairs, over the full radius."""
    c, d = _setup(data)
    x, p = _pair(data, dtype, c, d)
    a = _normals(data, d, dtype)
    note_tensors(x=x, p=p, a=a)
    got = dist2plane(x, p, a, c=c)
    assert torch.equal(dist2plane(x, p, a, c=c, signed=False), got.abs())
    errs = []
    for i, (xi, pi, ai) in enumerate(zip(_mp(x), _mp(p), _mp(a), strict=True)):
        exact = refp.dist2plane(xi, pi, ai, c)
        allow = refp.dist2plane_allowance(xi, pi, ai, c, dtype)
        errs.append(metrics.scalar_error(float(got[i]), exact, c, dtype, allow))
    note(f"errors in hULP: {[round(e, 3) for e in errs]}")
    assert max(errs) <= HULP_BOUND, f"dist2plane: {max(errs):.2f} hULP"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_dist2plane_isometry_invariance(dtype: torch.dtype, data: st.DataObject) -> None:
    """d(m ⊕ x; m ⊕ p, gyr[m, p] a) = d(x; p, a) (the left gyrotranslation by m is an isometry
    whose differential at p is gyr[m, p] up to a positive factor) and d(Qx; Qp, Qa) = d(x; p, a)
    for an orthogonal Q. The moved inputs are exact (mpmath) rounded to the dtype."""
    c, d = _setup(data)
    half = poincare.max_radius(dtype, c=c) / 2
    x = data.draw(points(dtype, d, (B,), c=c, max_radius=half), label="x")
    p = data.draw(points(dtype, d, (B,), c=c, max_radius=half), label="p")
    m = data.draw(points(dtype, d, (B,), c=c, max_radius=half), label="m")
    q = data.draw(matrices(d, d, torch.float64, kinds=("orthogonal",)), label="Q")
    a = _normals(data, d, dtype)
    note_tensors(x=x, p=p, m=m, a=a)
    moved: list[list[list[float]]] = [[], [], []]
    for xi, pi, mi, ai in zip(_mp(x), _mp(p), _mp(m), _mp(a), strict=True):
        moved[0].append(ref.to_floats(ref.mobius_add(mi, xi, c), dtype))
        moved[1].append(ref.to_floats(ref.mobius_add(mi, pi, c), dtype))
        moved[2].append(ref.to_floats(ref.gyration(mi, pi, ai, c), dtype))
    x2 = poincare.project(torch.tensor(moved[0], dtype=dtype), c=c)
    p2 = poincare.project(torch.tensor(moved[1], dtype=dtype), c=c)
    a2 = torch.tensor(moved[2], dtype=dtype)
    qd = q.to(dtype)
    x3, p3, a3 = poincare.project(x @ qd.T, c=c), poincare.project(p @ qd.T, c=c), a @ qd.T
    d1 = dist2plane(x, p, a, c=c)
    allow1 = _plane_allowance(x, p, a, c, dtype)
    eps = float(torch.finfo(dtype).eps)
    for name, (xx, pp, aa) in (("gyrotranslation", (x2, p2, a2)), ("rotation", (x3, p3, a3))):
        d2 = dist2plane(xx, pp, aa, c=c)
        allow2 = _plane_allowance(xx, pp, aa, c, dtype)
        for i in range(B):
            # Each op within 16 of its allowances; the rounding of the moved inputs (and the
            # product with Q, a few float steps) moves the exact value by a few allowances more.
            bound = (
                HULP_BOUND * (2 * eps * abs(float(d1[i])) * c**0.5 + allow1[i])
                + (HULP_BOUND + 4) * allow2[i]
            ) / c**0.5
            diff = abs(float(d1[i]) - float(d2[i]))
            assert diff <= bound, f"{name}: row {i}: {diff:.3e} > {bound:.3e}"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_dist2plane_zero_on_the_plane_and_length_along_the_normal(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """x = exp_p(v) with v ⟂ a lies on the plane (distance 0); the unit-speed geodesic from p
    along a reaches signed distance s at time s. Points built in float64, rounded to the dtype."""
    c, d = _setup(data)
    d = max(d, 2)
    p = data.draw(points(dtype, d, (B,), c=c), label="p")
    a = _normals(data, d, dtype)
    w = data.draw(directions(d, (B,)), label="w")
    frac = data.draw(st.floats(0.0, 1.0), label="length fraction")
    sign = data.draw(st.sampled_from([1.0, -1.0]), label="side")
    note_tensors(p=p, a=a)
    top = float(poincare.max_radius(dtype, c=c))
    room = (top - poincare.dist0(p.double(), c=c)).clamp_min(0.0)  # (B,)
    length = frac * room
    p64 = p.double()
    lam = poincare.conformal_factor(p64, c=c)
    perp = _perpendicular(w, a)
    on_plane = poincare.project(
        poincare.expmap(p64, perp * (length[:, None] / lam), c=c).to(dtype), c=c
    )
    allow = _plane_allowance(on_plane, p, a, c, dtype)
    got = dist2plane(on_plane, p, a, c=c)
    for i in range(B):
        # the construction: expmap's 16 hULP of p, the tangent and the result
        built = float(hulp(p[i : i + 1], c)[0] + hulp(on_plane[i : i + 1], c)[0])
        built += float(torch.finfo(dtype).eps) * c**0.5 * float(length[i])
        bound = HULP_BOUND * (allow[i] + built) / c**0.5
        assert abs(float(got[i])) <= bound, f"on the plane: row {i}: {float(got[i]):.3e}"
    s = (sign * length).to(dtype).unsqueeze(-1)
    along = poincare.project(geodesic_unit(s.double(), p64, a.double(), c=c).to(dtype), c=c)
    got = dist2plane(along, p, a, c=c)
    allow = _plane_allowance(along, p, a, c, dtype)
    for i in range(B):
        built = float(hulp(p[i : i + 1], c)[0] + hulp(along[i : i + 1], c)[0])
        built += float(torch.finfo(dtype).eps) * c**0.5 * abs(float(s[i]))
        exact = float(s[i])
        bound = (
            HULP_BOUND * (allow[i] + built + float(torch.finfo(dtype).eps) * abs(exact)) / c**0.5
        )
        assert abs(float(got[i]) - exact) <= bound, f"along the normal: row {i}"


def _grads(
    fn: Any, inputs: list[torch.Tensor], w: torch.Tensor | None = None
) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    weight = torch.ones_like(out) if w is None else w
    gs = torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(gs, leaves, strict=True)]


def _assert_finite(name: str, fn: Any, inputs: list[torch.Tensor]) -> None:
    out = fn(*inputs)
    assert bool(torch.isfinite(out).all()), f"{name}: non-finite output"
    for i, g in enumerate(_grads(fn, inputs)):
        assert bool(torch.isfinite(g).all()), f"{name}: non-finite gradient of input {i}"


def _rtol(dtype: torch.dtype, c: float, *inputs: torch.Tensor) -> list[float]:
    """As in test_property_gradients: 1e-6 in float64, ``max(1e-6, 16 (eps + Σ hulp))`` in
    float32 (the exact gradient at inputs a few float steps away)."""
    n = inputs[0].shape[0]
    if dtype == torch.float64:
        return [GRAD_RTOL] * n
    total = torch.full((n,), float(torch.finfo(dtype).eps), dtype=torch.float64)
    for t in inputs:
        total = total + hulp(t, c, dtype).reshape(n, -1).sum(-1)
    return [max(GRAD_RTOL, HULP_BOUND * float(v)) for v in total]


def _assert_grad_close(
    got: torch.Tensor,
    exact: list[Any],
    rtol: list[float],
    what: str,
    floor: list[Any] | None = None,
) -> None:
    """Each row within ``rtol`` of the exact gradient, relative to ``max(|exact|, floor)``
    (``floor``: the natural size of a gradient that vanishes, e.g. ∇_y γ(t) at t = 0)."""
    for i, (g, e) in enumerate(zip(rows(got, got.dim() - 1), exact, strict=True)):
        n = max(ref.norm(e), 0 if floor is None else floor[i])
        err = ref.norm([u - v for u, v in zip(g, e, strict=True)])  # type: ignore[call-overload]
        assert err <= rtol[i] * n, f"{what}: row {i}: error {float(err):.3g}, size {float(n):.3g}"


def _speed(points_: list[Any], lengths: list[Any], c: float) -> list[Any]:
    """The Euclidean speed ``L / λ_γ`` at the exact points of a geodesic of length ``L``
    travelled in unit time: the natural size of ``∂_t <w, γ(t)>`` for a unit ``w``."""
    return [ln / ref.conformal_factor(q, c) for q, ln in zip(points_, lengths, strict=True)]


def _normal_gradient_size(x: list[Any], p: list[Any], a: list[Any], c: float) -> Any:
    """``|∂d/∂â| / |a| = 2|z| / ((1 - c|z|^2) cosh(s_c d) |a|)``, ``z = (-p) ⊕ x``."""
    z = ref.mobius_add([-v for v in p], x, c)
    d = refp.dist2plane(x, p, a, c)
    sc = mpmath.sqrt(c)
    return 2 * ref.norm(z) / ((1 - c * ref.dot(z, z)) * mpmath.cosh(sc * d) * ref.norm(a))


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.25)
@given(data=st.data())
def test_property_dist2plane_gradients_match_reference(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """∇ of the signed distance in x, p and a equals mpmath's derivative (radius ≤ 8)."""
    c, d = _setup(data, max_dim=3)
    r = REFERENCE_RADIUS / c**0.5
    n = 2
    x = data.draw(points(dtype, d, (n,), c=c, max_radius=r), label="x")
    p = data.draw(points(dtype, d, (n,), c=c, max_radius=r), label="p")
    a = _normals(data, d, dtype, n)
    note_tensors(x=x, p=p, a=a)
    gx, gp, ga = _grads(lambda q, s, u: dist2plane(q, s, u, c=c), [x, p, a])
    exact = [
        refp.grad_dist2plane(xi, pi, ai, c)
        for xi, pi, ai in zip(_mp(x), _mp(p), _mp(a), strict=True)
    ]
    rtol = _rtol(dtype, c, x, p)
    _assert_grad_close(gx, [e[0] for e in exact], rtol, "∇_x dist2plane")
    _assert_grad_close(gp, [e[1] for e in exact], rtol, "∇_p dist2plane")
    # ∇_a = (I - â âᵀ) ∂d/∂â / |a| is the part of ∂d/∂â = 2 z / ((1 - c|z|^2) cosh(s_c d))
    # orthogonal to a: it cancels near the normal geodesic (and vanishes at x == p), so it is
    # compared relative to the full size |∂d/∂â| / |a|.
    floor = [
        _normal_gradient_size(xi, pi, ai, c)
        for xi, pi, ai in zip(_mp(x), _mp(p), _mp(a), strict=True)
    ]
    _assert_grad_close(ga, [e[2] for e in exact], rtol, "∇_a dist2plane", floor)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_dist2plane_gradients_finite(dtype: torch.dtype, data: st.DataObject) -> None:
    """Finite gradients everywhere: x == p, nearly equal, antipodal, the origin, the shell,
    zero, tiny and huge normals, signed and unsigned."""
    c, d = _setup(data)
    x, p = _pair(data, dtype, c, d)
    a = _normals(data, d, dtype)
    scale = data.draw(st.sampled_from([0.0, 1e-30, 1.0, 1e30]), label="normal scale")
    # a huge normal stays finite: at most half the largest float of the dtype
    scale = min(scale, float(torch.finfo(dtype).max) / 2 / float(a.abs().max()))
    note_tensors(x=x, p=p, a=a)
    for signed in (True, False):

        def f(q: torch.Tensor, s: torch.Tensor, u: torch.Tensor, sg: bool = signed) -> torch.Tensor:
            return dist2plane(q, s, u, c=c, signed=sg)

        _assert_finite(f"dist2plane(signed={signed})", f, [x, p, a * scale])
        _assert_finite(f"dist2plane(x, x, a) signed={signed}", f, [x, x, a])


# ---------------------------------------------------------------------------------------------
# geodesic
# ---------------------------------------------------------------------------------------------


def _fractions(data: st.DataObject, dtype: torch.dtype) -> torch.Tensor:
    kind = data.draw(st.sampled_from(["interior", "ends", "extrapolate"]), label="t kind")
    if kind == "ends":
        vals = data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=B, max_size=B))
    elif kind == "interior":
        vals = data.draw(st.lists(st.floats(0.0, 1.0), min_size=B, max_size=B))
    else:
        vals = data.draw(st.lists(st.floats(-1.0, 2.0), min_size=B, max_size=B))
    return torch.tensor(vals, dtype=dtype).unsqueeze(-1)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_geodesic_matches_reference(dtype: torch.dtype, data: st.DataObject) -> None:
    """γ_{x→y}(t) within 16 hULP of mpmath, t in [0, 1] (endpoints included) and extrapolated
    in [-1, 2], for exact results within the representable radius."""
    c, d = _setup(data)
    x, y = _pair(data, dtype, c, d)
    t = _fractions(data, dtype)
    note_tensors(x=x, y=y, t=t)
    got = geodesic(t, x, y, c=c)
    top = ref.max_radius(dtype, c)
    errs = []
    for i, (xi, yi) in enumerate(zip(_mp(x), _mp(y), strict=True)):
        ti = float(t[i])
        exact = refp.geodesic(ti, xi, yi, c)
        if ref.dist0(exact, c) > top:
            continue
        allow = refp.geodesic_allowance(ti, xi, yi, c, dtype)
        errs.append(metrics.point_error(_mp(got[i : i + 1])[0], exact, c, dtype, allow))
    note(f"errors in hULP: {[round(e, 3) for e in errs]}")
    assert not errs or max(errs) <= HULP_BOUND, f"geodesic: {max(errs):.2f} hULP"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_geodesic_distances_and_composition(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """For s, t in [0, 1]: d(x, γ(t)) = t d(x, y); γ_{x→y}(t) = γ_{y→x}(1 - t); and
    γ_{x→γ(s)}(t) = γ_{x→y}(s t)."""
    c, d = _setup(data)
    x, y = _pair(data, dtype, c, d)
    s = data.draw(st.floats(0.0, 1.0), label="s")
    t = data.draw(st.floats(0.0, 1.0), label="t")
    s, t = float(torch.tensor(s, dtype=dtype)), float(torch.tensor(t, dtype=dtype))
    note_tensors(x=x, y=y)
    g = geodesic(t, x, y, c=c)
    dxy = poincare.dist(x.double(), y.double(), c=c)
    dxg = poincare.dist(x.double(), g.double(), c=c)
    assert_scalars_close(
        dxg, t * dxy, scalar_budget(c, dtype, [dxy], [x, y, g, x, g]), "d(x, γ(t)) = t d(x, y)"
    )
    back = geodesic(1.0 - t, y, x, c=c) if (1.0 - t) + t == 1.0 else g
    assert_points_close(back, g, c, budget(c, dtype, [x, y, g], [x, y, back]), "γ reversed")
    gs = geodesic(s, x, y, c=c)
    st_ = float(torch.tensor(s * t, dtype=dtype))
    lhs = geodesic(t, x, gs, c=c)
    rhs = geodesic(st_, x, y, c=c)
    bound = budget(c, dtype, [x, y, gs], [x, gs, lhs], [x, y, rhs])
    bound = bound + HULP_BOUND * float(torch.finfo(dtype).eps) * dxy  # rounding of s t
    assert_points_close(lhs, rhs, c, bound, "γ_{x→γ(s)}(t) = γ(st)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_geodesic_gradients_finite(dtype: torch.dtype, data: st.DataObject) -> None:
    """Finite gradients of both geodesics at x == y, nearly equal and antipodal pairs, the
    shell, any t (far extrapolations included), v = 0."""
    c, d = _setup(data)
    x, y = _pair(data, dtype, c, d)
    r = data.draw(scalars(max_abs=4.0), label="t")
    big = data.draw(st.sampled_from([1.0, 1e3, 1e30]), label="t scale")
    t = torch.full((B, 1), r * big, dtype=dtype)
    note_tensors(x=x, y=y, t=t)
    _assert_finite("geodesic", lambda a, b, u: geodesic(u, a, b, c=c), [x, y, t])
    _assert_finite("geodesic(x, x)", lambda a, u: geodesic(u, a, a, c=c), [x, t])
    v = (y - x).detach()
    _assert_finite("geodesic_unit", lambda a, b, u: geodesic_unit(u, a, b, c=c), [x, v, t])
    z = torch.zeros_like(x)
    _assert_finite("geodesic_unit(v=0)", lambda a, b, u: geodesic_unit(u, a, b, c=c), [x, z, t])
    poincare.check_point(geodesic(t, x, y, c=c), c=c)
    poincare.check_point(geodesic_unit(t, x, v, c=c), c=c)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.25)
@given(data=st.data())
def test_property_geodesic_gradients_match_reference(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """∇<w, γ_{x→y}(t)> in t, x, y and ∇<w, γ_{x,v}(t)> in t, x, v equal mpmath's
    derivatives (radius ≤ 8, x ≠ y, v ≠ 0)."""
    c, d = _setup(data, max_dim=3)
    r = REFERENCE_RADIUS / c**0.5
    n = 2
    x = data.draw(points(dtype, d, (n,), c=c, max_radius=r), label="x")
    y = data.draw(points(dtype, d, (n,), c=c, max_radius=r), label="y")
    w = data.draw(directions(d, (n,)), label="w").to(dtype)
    t = torch.tensor(data.draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)), dtype=dtype)
    t = t.unsqueeze(-1)
    note_tensors(x=x, y=y, w=w, t=t)
    keep = [i for i, (a, b) in enumerate(zip(_mp(x), _mp(y), strict=True)) if a != b]
    if not keep:
        return
    x, y, w, t = x[keep], y[keep], w[keep], t[keep]
    rtol = _rtol(dtype, c, x, y)
    gt, gx, gy = _grads(lambda u, a, b: geodesic(u, a, b, c=c), [t, x, y], w)
    exact = [
        refp.grad_geodesic(float(ti), xi, yi, wi, c)
        for ti, xi, yi, wi in zip(t, _mp(x), _mp(y), _mp(w), strict=True)
    ]
    fp = [ref.norm(e[1]) + ref.norm(e[2]) for e in exact]
    xs, ys = _mp(x), _mp(y)
    on = [refp.geodesic(float(ti), a, b, c) for ti, a, b in zip(t, xs, ys, strict=True)]
    ft = _speed(on, [ref.dist(a, b, c) for a, b in zip(xs, ys, strict=True)], c)
    _assert_grad_close(gt, [[e[0]] for e in exact], rtol, "∂_t geodesic", ft)
    _assert_grad_close(gx, [e[1] for e in exact], rtol, "∇_x geodesic", fp)
    _assert_grad_close(gy, [e[2] for e in exact], rtol, "∇_y geodesic", fp)
    # v of size 2^±30: mpmath's numerical derivative takes an absolute step, which must be
    # far below |v| (the direction of v bends on the scale of |v|).
    v = _normals(data, d, dtype, n)[keep]
    tu = t * (3.0 / c**0.5)  # up to 3 curvature radii, as the points' radius is in those units
    gt, gx, gv = _grads(lambda u, a, b: geodesic_unit(u, a, b, c=c), [tu, x, v], w)
    exact = [
        refp.grad_geodesic_unit(float(ti), xi, vi, wi, c)
        for ti, xi, vi, wi in zip(tu, _mp(x), _mp(v), _mp(w), strict=True)
    ]
    fp = [ref.norm(e[1]) + ref.norm(e[2]) for e in exact]
    on = [
        refp.geodesic_unit(float(ti), a, b, c) for ti, a, b in zip(tu, _mp(x), _mp(v), strict=True)
    ]
    ft = _speed(on, [1] * len(on), c)
    _assert_grad_close(gt, [[e[0]] for e in exact], rtol, "∂_t geodesic_unit", ft)
    _assert_grad_close(gx, [e[1] for e in exact], rtol, "∇_x geodesic_unit", fp)
    _assert_grad_close(gv, [e[2] for e in exact], rtol, "∇_v geodesic_unit", fp)


# ---------------------------------------------------------------------------------------------
# geodesic_unit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_geodesic_unit_matches_reference(dtype: torch.dtype, data: st.DataObject) -> None:
    """γ_{x,v}(t) within 16 hULP of mpmath for signed times up to the room left in the ball
    (and beyond it, where only containment is asked)."""
    c, d = _setup(data)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    v = _normals(data, d, dtype)
    fr = data.draw(st.lists(st.floats(-2.0, 2.0), min_size=B, max_size=B), label="t / R")
    t = (torch.tensor(fr, dtype=torch.float64) * poincare.max_radius(dtype, c=c)).to(dtype)
    t = t.unsqueeze(-1)
    note_tensors(x=x, v=v, t=t)
    got = geodesic_unit(t, x, v, c=c)
    poincare.check_point(got, c=c)
    top = ref.max_radius(dtype, c)
    errs = []
    for i, (xi, vi) in enumerate(zip(_mp(x), _mp(v), strict=True)):
        ti = float(t[i])
        exact = refp.geodesic_unit(ti, xi, vi, c)
        if ref.dist0(exact, c) > top:
            continue
        allow = refp.geodesic_unit_allowance(ti, xi, vi, c, dtype)
        errs.append(metrics.point_error(_mp(got[i : i + 1])[0], exact, c, dtype, allow))
    note(f"errors in hULP: {[round(e, 3) for e in errs]}")
    assert not errs or max(errs) <= HULP_BOUND, f"geodesic_unit: {max(errs):.2f} hULP"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_geodesic_unit_speed_and_agreement(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """d(x, γ_{x,v}(t)) = |t|, and γ_{x, log_x y}(t d(x, y)) = γ_{x→y}(t) for t in [0, 1]."""
    c, d = _setup(data)
    x, y = _pair(data, dtype, c, d)
    t = float(torch.tensor(data.draw(st.floats(0.0, 1.0), label="t"), dtype=dtype))
    note_tensors(x=x, y=y)
    v = poincare.logmap(x.double(), y.double(), c=c)
    dxy = poincare.dist(x.double(), y.double(), c=c)
    room = (poincare.max_radius(dtype, c=c) - poincare.dist0(x.double(), c=c)).clamp_min(0)
    times = (t * room).to(dtype).unsqueeze(-1)
    g = geodesic_unit(times, x, v.to(dtype), c=c)
    dist = poincare.dist(x.double(), g.double(), c=c)
    moving = v.to(dtype).abs().amax(dim=-1) > 0  # v = 0 stays at x
    expected = torch.where(moving, times.squeeze(-1).double(), 0.0)
    bound = scalar_budget(c, dtype, [times.squeeze(-1)], [x, g, x, g])
    assert_scalars_close(dist, expected, bound, "unit speed")
    tt = (t * dxy).unsqueeze(-1)
    lhs = geodesic_unit(tt, x.double(), v, c=c)  # float64 tangent, from float64 logmap
    rhs = geodesic(t, x, y, c=c)
    # The direction of log_x y in float64 carries its rounding sinh(t d) times further.
    direction = HULP_BOUND * 1.1e-16 * torch.sinh(c**0.5 * tt.squeeze(-1)) / c**0.5
    bound = budget(c, dtype, [x, y, rhs], [x, y, rhs]) + direction
    assert_points_close(lhs.to(dtype), rhs, c, bound + ulp_length(rhs, c, dtype), "γ_unit = γ")


# ---------------------------------------------------------------------------------------------
# mobius_fn_apply
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_mobius_fn_apply(dtype: torch.dtype, data: st.DataObject) -> None:
    """fn = identity gives x; fn = r·v gives r ⊗ x; fn = M v gives M ⊗ x (within the budgets
    of the compositions)."""
    c, d = _setup(data)
    r = data.draw(scalars(max_abs=3.0), label="r")
    top = poincare.max_radius(dtype, c=c) / max(1.0, abs(r))
    x = data.draw(points(dtype, d, (B,), c=c, max_radius=top), label="x")
    m = data.draw(matrices(d, d, dtype, kinds=("orthogonal",)), label="m")
    note_tensors(x=x)
    same = mobius_fn_apply(lambda u: u, x, c=c)
    assert_points_close(same, x, c, budget(c, dtype, [x, same], [x, same]), "identity")
    rr = float(torch.tensor(r, dtype=dtype))
    out = mobius_fn_apply(lambda u, k: k * u, x, rr, c=c)
    exp = poincare.mobius_scalar_mul(rr, x, c=c)
    assert_points_close(out, exp, c, budget(c, dtype, [x, out], [x, exp]), "r ⊗ x")
    out = mobius_fn_apply(lambda u, *, mat: u @ mat.T, x, mat=m, c=c)
    exp = poincare.mobius_matvec(m, x, c=c)
    assert_points_close(out, exp, c, budget(c, dtype, [x, out], [x, exp]), "M ⊗ x")
