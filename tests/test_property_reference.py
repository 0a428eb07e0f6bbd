"""Every op agrees with its mpmath reference (``verification.reference``) within 16 hULP.

This is the numerical contract itself: the error of each computed value against the exact value
on the exact float inputs, in hULP of the output plus the inputs (``verification.metrics``).
Inputs range over the whole representable radius; where an op's exact output could lie beyond it,
the inputs are drawn so that it does not (results beyond it are projected, see the containment
tests).
"""

from __future__ import annotations

from typing import Any

import mpmath
import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    HULP_BOUND,
    assert_matches_reference,
    input_hulps,
    note_tensors,
    rows,
)
from hypothesis import given, note
from hypothesis import strategies as st

import poincare
from verification import metrics
from verification import reference as ref
from verification.strategies import (
    antipodal_pairs,
    curvatures,
    dims,
    directions,
    matrices,
    nearly_equal_pairs,
    point_and_tangent,
    points,
    scalars,
    translated_points,
    weights,
)

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 4


def _setup(data: st.DataObject) -> tuple[float, int]:
    return data.draw(curvatures(), label="c"), data.draw(dims(max_dim=6), label="dim")


def _pair(
    data: st.DataObject, dtype: torch.dtype, c: float, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent, nearly equal or antipodal pairs of points over the full radius."""
    kind = data.draw(st.sampled_from(["independent", "near", "antipodal"]), label="pair kind")
    if kind == "near":
        return data.draw(nearly_equal_pairs(dtype, d, (B,), c=c), label="x, y")
    if kind == "antipodal":
        return data.draw(antipodal_pairs(dtype, d, (B,), c=c), label="x, y")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    return x, data.draw(points(dtype, d, (B,), c=c), label="y")


def _worst(errs: list[float], what: str) -> None:
    worst = max(errs)
    note(f"{what}: errors in hULP {[round(e, 3) for e in errs]}")
    assert worst <= HULP_BOUND, f"{what}: {worst:.2f} hULP > {HULP_BOUND:g}"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_mobius_add_sub(dtype: torch.dtype, data: st.DataObject) -> None:
    """x ⊕ y and x ⊖ y, with ``y`` drawn so that the exact result is representable."""
    c, d = _setup(data)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    y = data.draw(translated_points(x, c=c), label="y")
    note_tensors(x=x, y=y)
    h = input_hulps(c, dtype, (B,), points=[x, y])
    xs, ys = rows(x, 1), rows(y, 1)
    exact = [ref.mobius_add(a, b, c) for a, b in zip(xs, ys, strict=True)]  # type: ignore[arg-type]
    assert_matches_reference(poincare.mobius_add(x, y, c=c), exact, c, dtype, h, "mobius_add")
    # x ⊖ (-y) = x ⊕ y exactly.
    exact_sub = [ref.mobius_sub(a, [-v for v in b], c) for a, b in zip(xs, ys, strict=True)]  # type: ignore[attr-defined]
    out = poincare.mobius_sub(x, -y, c=c)
    assert_matches_reference(out, exact_sub, c, dtype, h, "mobius_sub")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_scalar_mul(dtype: torch.dtype, data: st.DataObject) -> None:
    """r ⊗ x for r in [-3, 3] and x within R / max(1, |r|)."""
    c, d = _setup(data)
    r = data.draw(scalars(max_abs=3.0), label="r")
    x = data.draw(
        points(dtype, d, (B,), c=c, max_radius=poincare.max_radius(dtype, c=c) / max(1.0, abs(r))),
        label="x",
    )
    rr = float(torch.tensor(r, dtype=dtype))
    note_tensors(x=x)
    exact = [ref.mobius_scalar_mul(rr, a, c) for a in rows(x, 1)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[x])
    out = poincare.mobius_scalar_mul(rr, x, c=c)
    assert_matches_reference(out, exact, c, dtype, h, f"mobius_scalar_mul({rr})")


def _matrix_allowance(
    m: list[Any], x: list[Any], exact: list[Any], c: float, dtype: torch.dtype
) -> Any:
    """Forming ``Mx`` in floating point perturbs it relatively by ``η = eps·| |M||x| | / |Mx|``,
    which moves the output by at most ``η`` times its hyperbolic size
    ``sqrt(c)(λ_e|e| + d(0, e))`` (direction and length)."""
    with mpmath.workdps(ref.DPS):
        mx = [ref.dot(row, x) for row in m]
        nmx = ref.norm(mx)
        if nmx == 0:
            return mpmath.mpf(0)
        abs_mx = [ref.dot([abs(v) for v in row], [abs(v) for v in x]) for row in m]
        eta = metrics.machine_eps(dtype) * ref.norm(abs_mx) / nmx
        sc = mpmath.sqrt(c)
        return eta * sc * (ref.conformal_factor(exact, c) * ref.norm(exact) + ref.dist0(exact, c))


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_matvec(dtype: torch.dtype, data: st.DataObject) -> None:
    """M ⊗ x, with x within R / max(1, ||M||_2) so that the exact result is representable."""
    c, d = _setup(data)
    d_out = data.draw(dims(max_dim=6), label="out")
    m = data.draw(matrices(d_out, d, dtype), label="m")
    gain = max(1.0, float(torch.linalg.matrix_norm(m.to(torch.float64), ord=2)))
    x = data.draw(
        points(dtype, d, (B,), c=c, max_radius=poincare.max_radius(dtype, c=c) / gain), label="x"
    )
    note_tensors(m=m, x=x)
    mm = rows(m, 0)[0]
    exact = [ref.mobius_matvec(mm, a, c) for a in rows(x, 1)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[x])
    h = [
        hh + float(_matrix_allowance(mm, a, e, c, dtype))  # type: ignore[arg-type]
        for hh, a, e in zip(h, rows(x, 1), exact, strict=True)
    ]
    out = poincare.mobius_matvec(m, x, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "mobius_matvec")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_expmap0_logmap0(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap0(v) for v with a representable image, and logmap0(y) over the full radius."""
    c, d = _setup(data)
    zero, v = data.draw(point_and_tangent(dtype, d, (B,), c=c, max_radius=0.0), label="0, v")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    note_tensors(v=v, y=y)
    exact = [ref.expmap0(a, c) for a in rows(v, 1)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), tangents=[(zero, v)])
    assert_matches_reference(poincare.expmap0(v, c=c), exact, c, dtype, h, "expmap0")
    exact = [ref.logmap0(a, c) for a in rows(y, 1)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[y])
    out = poincare.logmap0(y, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "logmap0", kind="tangent", at=zero)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_expmap(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap(x, v) for v whose image is representable, x over the full radius."""
    c, d = _setup(data)
    x, v = data.draw(point_and_tangent(dtype, d, (B,), c=c), label="x, v")
    note_tensors(x=x, v=v)
    exact = [ref.expmap(a, b, c) for a, b in zip(rows(x, 1), rows(v, 1), strict=True)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[x], tangents=[(x, v)])
    assert_matches_reference(poincare.expmap(x, v, c=c), exact, c, dtype, h, "expmap")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_logmap(dtype: torch.dtype, data: st.DataObject) -> None:
    """logmap(x, y) for independent, nearly equal and antipodal pairs."""
    c, d = _setup(data)
    x, y = _pair(data, dtype, c, d)
    note_tensors(x=x, y=y)
    exact = [ref.logmap(a, b, c) for a, b in zip(rows(x, 1), rows(y, 1), strict=True)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[x, y])
    out = poincare.logmap(x, y, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "logmap", kind="tangent", at=x)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_dist(dtype: torch.dtype, data: st.DataObject) -> None:
    """dist(x, y) and dist0(x) for independent, nearly equal and antipodal pairs."""
    c, d = _setup(data)
    x, y = _pair(data, dtype, c, d)
    note_tensors(x=x, y=y)
    exact = [ref.dist(a, b, c) for a, b in zip(rows(x, 1), rows(y, 1), strict=True)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[x, y])
    out = poincare.dist(x, y, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "dist", kind="scalar")
    exact = [ref.dist0(a, c) for a in rows(x, 1)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[x])
    assert_matches_reference(poincare.dist0(x, c=c), exact, c, dtype, h, "dist0", kind="scalar")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_pairwise_dist(dtype: torch.dtype, data: st.DataObject) -> None:
    """pairwise_dist(x, y) and its squared form, entry by entry."""
    c, d = _setup(data)
    n = data.draw(st.integers(1, 4), label="n")
    m = data.draw(st.integers(1, 4), label="m")
    x = data.draw(points(dtype, d, (n,), c=c), label="x")
    y = data.draw(points(dtype, d, (m,), c=c), label="y")
    if data.draw(st.booleans(), label="share a point"):
        y = torch.cat([x[:1], y[1:]], dim=0)
    note_tensors(x=x, y=y)
    xs, ys = rows(x, 1), rows(y, 1)
    hx = [float(metrics.hulp(a, c, dtype)) for a in xs]  # type: ignore[arg-type]
    hy = [float(metrics.hulp(b, c, dtype)) for b in ys]  # type: ignore[arg-type]
    exact = ref.pairwise_dist(xs, ys, c)  # type: ignore[arg-type]
    got = poincare.pairwise_dist(x, y, c=c).tolist()
    got_sq = poincare.pairwise_dist(x, y, c=c, squared=True).tolist()
    errs: list[float] = []
    errs_sq: list[float] = []
    for i in range(n):
        for j in range(m):
            e = exact[i][j]
            errs.append(metrics.scalar_error(got[i][j], e, c, dtype, [hx[i], hy[j]]))
            with mpmath.workdps(ref.DPS):
                e2 = e * e
            errs_sq.append(metrics.squared_length_error(got_sq[i][j], e2, c, dtype, [hx[i], hy[j]]))
    _worst(errs, "pairwise_dist")
    _worst(errs_sq, "pairwise_dist(squared=True)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_gyration(dtype: torch.dtype, data: st.DataObject) -> None:
    """gyr[a, b] u for points a, b, u over the full radius."""
    c, d = _setup(data)
    a = data.draw(points(dtype, d, (B,), c=c), label="a")
    b = data.draw(points(dtype, d, (B,), c=c), label="b")
    u = data.draw(points(dtype, d, (B,), c=c), label="u")
    note_tensors(a=a, b=b, u=u)
    # The reference evaluates gyr[a, b]u as three Möbius additions, which cancel catastrophically
    # for a, b near the boundary (1 - |.|^2 ~ 1e-33 in the intermediates): extra digits.
    with mpmath.workdps(3 * ref.DPS):
        exact = [
            ref.gyration(p, q, w, c)  # type: ignore[arg-type]
            for p, q, w in zip(rows(a, 1), rows(b, 1), rows(u, 1), strict=True)
        ]
    h = input_hulps(c, dtype, (B,), points=[a, b, u])
    errs = [
        metrics.point_error(p, e, c, dtype, [hh]) if ref.in_ball(p, c) else 0.0  # type: ignore[arg-type]
        for p, e, hh in zip(rows(poincare.gyration(a, b, u, c=c), 1), exact, h, strict=True)
    ]
    # A rotated shell point may round onto the boundary (gyration does not project); its
    # distance from the exact rotation is then checked through the tangent-style error.
    errs_t = [
        metrics.tangent_error([0.0] * d, p, e, c, dtype, [hh])  # type: ignore[arg-type]
        for p, e, hh in zip(rows(poincare.gyration(a, b, u, c=c), 1), exact, h, strict=True)
    ]
    _worst(errs, "gyration (as a point)")
    _worst(errs_t, "gyration (as a vector)")


def _vectors(data: st.DataObject, d: int, dtype: torch.dtype) -> torch.Tensor:
    u = data.draw(directions(d, (B,)), label="v direction")
    scale = data.draw(st.lists(st.floats(-10.0, 10.0), min_size=B, max_size=B), label="log2|v|")
    return (u * torch.tensor([2.0**s for s in scale], dtype=torch.float64).unsqueeze(-1)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_transport(dtype: torch.dtype, data: st.DataObject) -> None:
    """transp(x, y, v), transp0(y, v) and egrad2rgrad(x, g)."""
    c, d = _setup(data)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    v = _vectors(data, d, dtype)
    note_tensors(x=x, y=y, v=v)
    xs, ys, vs = rows(x, 1), rows(y, 1), rows(v, 1)
    exact = [ref.transp(a, b, w, c) for a, b, w in zip(xs, ys, vs, strict=True)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[x, y], tangents=[(x, v)])
    out = poincare.transp(x, y, v, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "transp", kind="tangent", at=y)
    zero = torch.zeros_like(y)
    exact = [ref.transp0(b, w, c) for b, w in zip(ys, vs, strict=True)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[y], tangents=[(zero, v)])
    out = poincare.transp0(y, v, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "transp0", kind="tangent", at=y)
    got = rows(poincare.egrad2rgrad(x, v, c=c), 1)
    errs = [
        metrics.relative_error(p, ref.egrad2rgrad(a, w, c), dtype, [metrics.hulp(a, c, dtype)])  # type: ignore[arg-type]
        for p, a, w in zip(got, xs, vs, strict=True)
    ]
    _worst(errs, "egrad2rgrad")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_conformal_factor(dtype: torch.dtype, data: st.DataObject) -> None:
    """conformal_factor(x) as a relative error (its log moves by the input's displacement)."""
    c, d = _setup(data)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    note_tensors(x=x)
    got = poincare.conformal_factor(x, c=c).reshape(-1).tolist()
    assert poincare.conformal_factor(x, c=c, keepdim=False).shape == (B,)
    errs = [
        metrics.relative_error(p, ref.conformal_factor(a, c), dtype, [metrics.hulp(a, c, dtype)])  # type: ignore[arg-type]
        for p, a in zip(got, rows(x, 1), strict=True)
    ]
    _worst(errs, "conformal_factor")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_project(dtype: torch.dtype, data: st.DataObject) -> None:
    """project(x): the identity within the radius, the exact projection onto it beyond; and
    max_radius(dtype, c) equals the exact distance of the outermost representable shell."""
    c, d = _setup(data)
    r = poincare.max_radius(dtype, c=c)
    exact_r = ref.max_radius(dtype, c)
    assert metrics.scalar_error(r, exact_r, c, torch.float64) <= HULP_BOUND, "max_radius"
    inside = data.draw(points(dtype, d, (B,), c=c), label="inside")
    u = data.draw(directions(d, (B,)), label="u")
    factor = data.draw(st.lists(st.floats(1.0, 3.0), min_size=B, max_size=B), label="factor")
    outside = (u * torch.tensor(factor, dtype=torch.float64).unsqueeze(-1) / c**0.5).to(dtype)
    note_tensors(inside=inside, outside=outside)
    exact = [ref.project(a, c, dtype) for a in rows(inside, 1)]  # type: ignore[arg-type]
    h = input_hulps(c, dtype, (B,), points=[inside])
    out = poincare.project(inside, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "project (inside)")
    exact = [ref.project(a, c, dtype) for a in rows(outside, 1)]  # type: ignore[arg-type]
    out = poincare.project(outside, c=c)
    assert_matches_reference(out, exact, c, dtype, [0.0] * B, "project (outside)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_einstein_midpoint(dtype: torch.dtype, data: st.DataObject) -> None:
    """einstein_midpoint(x, w); the allowance counts the points of nonzero weight."""
    c, d = _setup(data)
    n = data.draw(st.integers(1, 4), label="n")
    x = data.draw(points(dtype, d, (B, n), c=c), label="x")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(x=x, w=w)
    xs, ws = rows(x, 1), rows(w, 1)
    exact = [ref.einstein_midpoint(p, q, c) for p, q in zip(xs, ws, strict=True)]  # type: ignore[arg-type]
    h = [
        sum(float(metrics.hulp(p, c, dtype)) for p, wv in zip(pts, wr, strict=True) if wv != 0)  # type: ignore[call-overload, arg-type]
        for pts, wr in zip(xs, ws, strict=True)
    ]
    out = poincare.einstein_midpoint(x, w, c=c)
    assert_matches_reference(out, exact, c, dtype, h, "einstein_midpoint")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_klein(dtype: torch.dtype, data: st.DataObject) -> None:
    """poincare_to_klein (scored by mapping the Klein output back exactly, with the Klein
    point's own hULP allowed) and klein_to_poincare (on Klein points rounded from exact ones)."""
    c, d = _setup(data)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    note_tensors(x=x)
    k = poincare.poincare_to_klein(x, c=c)
    errs = []
    for kr, xr in zip(rows(k, 1), rows(x, 1), strict=True):
        if not ref.in_ball(kr, c):  # type: ignore[arg-type]
            errs.append(float("inf"))
            continue
        back = ref.klein_to_poincare(kr, c)  # type: ignore[arg-type]
        exact_k = ref.poincare_to_klein(xr, c)  # type: ignore[arg-type]
        allow = [metrics.hulp_klein(exact_k, c, dtype), metrics.hulp(xr, c, dtype)]  # type: ignore[arg-type]
        errs.append(metrics.point_error(back, xr, c, dtype, allow))  # type: ignore[arg-type]
    _worst(errs, "poincare_to_klein")
    # klein_to_poincare on representable Klein points: the exact images of x, rounded.
    kin = [ref.poincare_to_klein(xr, c) for xr in rows(x, 1)]  # type: ignore[arg-type]
    kt = ref.to_tensor(kin, dtype)
    keep = [i for i, kr in enumerate(rows(kt, 1)) if ref.in_ball(kr, c)]  # type: ignore[arg-type]
    if keep:
        kt = kt[keep]
        exact = [ref.klein_to_poincare(kr, c) for kr in rows(kt, 1)]  # type: ignore[arg-type]
        h = [float(metrics.hulp_klein(kr, c, dtype)) for kr in rows(kt, 1)]  # type: ignore[arg-type]
        out = poincare.klein_to_poincare(kt, c=c)
        assert_matches_reference(out, exact, c, dtype, h, "klein_to_poincare")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_reference_lorentz(dtype: torch.dtype, data: st.DataObject) -> None:
    """poincare_to_lorentz (scored by mapping back exactly, with the hyperboloid point's hULP
    allowed) and lorentz_to_poincare (on hyperboloid points rounded from exact ones)."""
    c, d = _setup(data)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    note_tensors(x=x)
    h = poincare.poincare_to_lorentz(x, c=c)
    errs = []
    for hr, xr in zip(rows(h, 1), rows(x, 1), strict=True):
        try:
            back = ref.lorentz_to_poincare(hr, c)  # type: ignore[arg-type]
        except ValueError:
            errs.append(float("inf"))
            continue
        exact_h = ref.poincare_to_lorentz(xr, c)  # type: ignore[arg-type]
        allow = [metrics.hulp_lorentz(exact_h, c, dtype), metrics.hulp(xr, c, dtype)]  # type: ignore[arg-type]
        errs.append(metrics.point_error(back, xr, c, dtype, allow))  # type: ignore[arg-type]
    _worst(errs, "poincare_to_lorentz")
    # lorentz_to_poincare on hyperboloid points rounded from exact ones; a rounded point far out
    # may lie so far off the hyperboloid that its exact image leaves the ball (not a valid input).
    hin = ref.to_tensor([ref.poincare_to_lorentz(xr, c) for xr in rows(x, 1)], dtype)  # type: ignore[arg-type]
    exact, keep = [], []
    for i, hr in enumerate(rows(hin, 1)):
        try:
            exact.append(ref.lorentz_to_poincare(hr, c))  # type: ignore[arg-type]
            keep.append(i)
        except ValueError:
            continue
    if keep:
        hin = hin[keep]
        allow = [float(metrics.hulp_lorentz(hr, c, dtype)) for hr in rows(hin, 1)]  # type: ignore[arg-type]
        out = poincare.lorentz_to_poincare(hin, c=c)
        assert_matches_reference(out, exact, c, dtype, allow, "lorentz_to_poincare")
