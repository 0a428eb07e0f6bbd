"""Agreement with geoopt 0.5.1 (``geoopt.PoincareBall``) where geoopt is accurate.

geoopt forms ``1 - c|x|^2`` and ``artanh`` near 1 with cancellation, so its own error grows with
the radius; the points are kept within hyperbolic radius ``5 / sqrt(c)``, where it is small.
geoopt's error is measured against the mpmath reference on the same inputs, and the budget of the
comparison is ours (16 hULP of every point involved) plus geoopt's measured error: a difference
of convention (layout of the matrix, order of the transport's arguments, the weights of the
midpoint, the parametrisation of ``c``) shows up as an O(1) disagreement far beyond it.

geoopt stores ``c`` through a softplus in the dtype of its parameter; it is built here with ``c``
as a tensor of the inputs' dtype, so that it computes at (the rounding of) the same curvature.

The last properties check ``PoincareBall``'s side of geoopt's manifold contract, the methods its
optimisers call at every step (``component_inner``, the retractions and transports), over the
whole ball up to the representable radius.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import DTYPE_PARAMS, HULP_BOUND, examples, hulp, note_tensors, rows
from hypothesis import given, note
from hypothesis import strategies as st

import poincare
from verification import metrics
from verification import reference as ref
from verification.strategies import curvatures, dims, directions, matrices, points, weights

#: The curvatures of the comparisons with geoopt: where geoopt's own float32 ops are finite (its
#: curvature is held in the points' dtype, and beyond this range its float32 formulas overflow to
#: NaN near the boundary). This library's accuracy over the whole verified range is the subject
#: of the reference properties; here the two libraries are compared where both give numbers.
GEOOPT_CURVATURES = curvatures(0.05, 5.0)

with warnings.catch_warnings():
    # geoopt 0.5.1 decorates functions with the deprecated torch.jit.script at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import geoopt

B = 4
#: Largest hyperbolic radius (in units of the curvature radius) of the comparison.
GEOOPT_RADIUS = 5.0


def _ball(c: float, dtype: torch.dtype) -> Any:
    return geoopt.PoincareBall(c=torch.tensor(c, dtype=dtype))


def _pts(data: st.DataObject, dtype: torch.dtype, c: float, d: int, label: str) -> torch.Tensor:
    r = GEOOPT_RADIUS / math.sqrt(c)
    return data.draw(points(dtype, d, (B,), c=c, max_radius=r, shell=False), label=label)


def _check_points(
    what: str,
    ours: torch.Tensor,
    theirs: torch.Tensor,
    exact: list[Any],
    c: float,
    dtype: torch.dtype,
    inputs: list[torch.Tensor],
) -> None:
    """d(ours, theirs) <= 16 Σ hulp(output and inputs) + d(theirs, exact), per row (lengths)."""
    sc = math.sqrt(c)
    h_in = sum((hulp(t, c, dtype).reshape(ours.shape[0], -1).sum(-1) for t in inputs), start=0)
    for i, (o, t, e) in enumerate(zip(rows(ours, 1), rows(theirs, 1), exact, strict=True)):
        assert ref.in_ball(o, c), f"{what}: our point {i} is not in the ball"  # type: ignore[arg-type]
        assert ref.in_ball(t, c), f"{what}: geoopt's point {i} is not in the ball"  # type: ignore[arg-type]
        allow = HULP_BOUND * (float(metrics.hulp(e, c, dtype)) + float(h_in[i])) / sc
        theirs_err = float(ref.dist(t, e, c))  # type: ignore[arg-type]
        gap = float(ref.dist(o, t, c))  # type: ignore[arg-type]
        if gap > allow + theirs_err:
            note(
                f"{what}[{i}]: gap {gap:.3e}, ours allowed {allow:.3e}, geoopt off {theirs_err:.3e}"
            )
        assert gap <= allow + theirs_err, f"{what}: disagrees with geoopt beyond both errors"


def _check_tangents(
    what: str,
    base: torch.Tensor,
    ours: torch.Tensor,
    theirs: torch.Tensor,
    exact: list[Any],
    c: float,
    dtype: torch.dtype,
    inputs: list[torch.Tensor],
    relative: bool = False,
) -> None:
    """Riemannian gap λ|ours - theirs| at ``base`` <= 16 (eps|e| + Σ hulp) + geoopt's own gap;
    with ``relative`` the input allowance scales with |e| (ops linear in the vector)."""
    sc = math.sqrt(c)
    eps = float(torch.finfo(dtype).eps)
    h_in = sum((hulp(t, c, dtype).reshape(ours.shape[0], -1).sum(-1) for t in inputs), start=0)
    for i, (b, o, t, e) in enumerate(
        zip(rows(base, 1), rows(ours, 1), rows(theirs, 1), exact, strict=True)
    ):
        lam = float(ref.conformal_factor(b, c))  # type: ignore[arg-type]
        size = lam * float(ref.norm(e))
        inputs_allow = float(h_in[i]) * (size if relative else 1.0 / sc)
        allow = HULP_BOUND * (eps * size + inputs_allow)
        theirs_err = lam * float(ref.norm([x - y for x, y in zip(t, e, strict=True)]))  # type: ignore[call-overload]
        gap = lam * float(ref.norm([x - y for x, y in zip(o, t, strict=True)]))  # type: ignore[call-overload]
        if gap > allow + theirs_err:
            note(
                f"{what}[{i}]: gap {gap:.3e}, ours allowed {allow:.3e}, geoopt off {theirs_err:.3e}"
            )
        assert gap <= allow + theirs_err, f"{what}: disagrees with geoopt beyond both errors"


def _exact(fn: Callable[..., Any], *ts: torch.Tensor) -> list[Any]:
    return [fn(*args) for args in zip(*(rows(t, 1) for t in ts), strict=True)]


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_geoopt_algebra(dtype: torch.dtype, data: st.DataObject) -> None:
    """mobius_add, mobius_sub, mobius_scalar_mul, mobius_matvec and gyration."""
    c = data.draw(GEOOPT_CURVATURES, label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    x, y, u = (_pts(data, dtype, c, d, n) for n in ("x", "y", "u"))
    r = data.draw(st.floats(-1.0, 1.0), label="r")
    m = data.draw(
        matrices(d, d, dtype, kinds=("generic", "orthogonal", "rank_deficient")), label="m"
    )
    m = (m.double() / max(1.0, float(torch.linalg.matrix_norm(m.double(), ord=2)))).to(dtype)
    note_tensors(x=x, y=y, u=u, m=m)
    ball = _ball(c, dtype)
    rr = float(torch.tensor(r, dtype=dtype))
    _check_points(
        "mobius_add", poincare.mobius_add(x, y, c=c), ball.mobius_add(x, y),
        _exact(lambda a, b: ref.mobius_add(a, b, c), x, y), c, dtype, [x, y],
    )  # fmt: skip
    _check_points(
        "mobius_sub", poincare.mobius_sub(x, y, c=c), ball.mobius_sub(x, y),
        _exact(lambda a, b: ref.mobius_sub(a, b, c), x, y), c, dtype, [x, y],
    )  # fmt: skip
    _check_points(
        "mobius_scalar_mul", poincare.mobius_scalar_mul(rr, x, c=c),
        ball.mobius_scalar_mul(torch.tensor(rr, dtype=dtype), x),
        _exact(lambda a: ref.mobius_scalar_mul(rr, a, c), x), c, dtype, [x],
    )  # fmt: skip
    mm = rows(m, 0)[0]
    _check_points(
        "mobius_matvec", poincare.mobius_matvec(m, x, c=c), ball.mobius_matvec(m, x),
        _exact(lambda a: ref.mobius_matvec(mm, a, c), x), c, dtype, [x],
    )  # fmt: skip
    _check_points(
        "gyration", poincare.gyration(x, y, u, c=c), ball.gyration(x, y, u),
        _exact(lambda a, b, w: ref.gyration(a, b, w, c), x, y, u), c, dtype, [x, y, u],
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_geoopt_maps(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap0, logmap0, expmap and logmap (v = the exact logmap, rounded)."""
    c = data.draw(GEOOPT_CURVATURES, label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    x, y = (_pts(data, dtype, c, d, n) for n in ("x", "y"))
    note_tensors(x=x, y=y)
    ball = _ball(c, dtype)
    zero = torch.zeros_like(x)
    v0 = ref.to_tensor(_exact(lambda a: ref.logmap0(a, c), y), dtype)
    v = ref.to_tensor(_exact(lambda a, b: ref.logmap(a, b, c), x, y), dtype)
    _check_points(
        "expmap0", poincare.expmap0(v0, c=c), ball.expmap0(v0),
        _exact(lambda a: ref.expmap0(a, c), v0), c, dtype, [y],
    )  # fmt: skip
    _check_points(
        "expmap", poincare.expmap(x, v, c=c), ball.expmap(x, v),
        _exact(lambda a, b: ref.expmap(a, b, c), x, v), c, dtype, [x, y],
    )  # fmt: skip
    _check_tangents(
        "logmap0", zero, poincare.logmap0(y, c=c), ball.logmap0(y),
        _exact(lambda a: ref.logmap0(a, c), y), c, dtype, [y],
    )  # fmt: skip
    _check_tangents(
        "logmap", x, poincare.logmap(x, y, c=c), ball.logmap(x, y),
        _exact(lambda a, b: ref.logmap(a, b, c), x, y), c, dtype, [x, y],
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_geoopt_distances(dtype: torch.dtype, data: st.DataObject) -> None:
    """dist and dist0: |ours - geoopt| <= 16 (eps d + Σ hulp) + |geoopt - exact|."""
    c = data.draw(GEOOPT_CURVATURES, label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    x, y = (_pts(data, dtype, c, d, n) for n in ("x", "y"))
    note_tensors(x=x, y=y)
    ball = _ball(c, dtype)
    sc = math.sqrt(c)
    eps = float(torch.finfo(dtype).eps)
    for what, ours, theirs, exact, inputs in (
        ("dist", poincare.dist(x, y, c=c), ball.dist(x, y),
         _exact(lambda a, b: ref.dist(a, b, c), x, y), [x, y]),
        ("dist0", poincare.dist0(x, c=c), ball.dist0(x), _exact(lambda a: ref.dist0(a, c), x), [x]),
    ):  # fmt: skip
        h_in = sum((hulp(t, c, dtype) for t in inputs), start=torch.zeros(B, dtype=torch.float64))
        for i in range(B):
            e = float(exact[i])
            allow = HULP_BOUND * (eps * e + float(h_in[i]) / sc)
            theirs_err = abs(float(theirs[i]) - e)
            gap = abs(float(ours[i]) - float(theirs[i]))
            assert gap <= allow + theirs_err, f"{what}[{i}]: disagrees with geoopt ({gap:.3e})"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_geoopt_transport(dtype: torch.dtype, data: st.DataObject) -> None:
    """transp, transp0 and egrad2rgrad (linear in the vector: relative input allowances)."""
    c = data.draw(GEOOPT_CURVATURES, label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    x, y = (_pts(data, dtype, c, d, n) for n in ("x", "y"))
    v = data.draw(directions(d, (B,)), label="v").to(dtype)
    note_tensors(x=x, y=y, v=v)
    ball = _ball(c, dtype)
    _check_tangents(
        "transp", y, poincare.transp(x, y, v, c=c), ball.transp(x, y, v),
        _exact(lambda a, b, w: ref.transp(a, b, w, c), x, y, v), c, dtype, [x, y], relative=True,
    )  # fmt: skip
    _check_tangents(
        "transp0", y, poincare.transp0(y, v, c=c), ball.transp0(y, v),
        _exact(lambda b, w: ref.transp0(b, w, c), y, v), c, dtype, [y], relative=True,
    )  # fmt: skip
    _check_tangents(
        "egrad2rgrad", x, poincare.egrad2rgrad(x, v, c=c), ball.egrad2rgrad(x, v),
        _exact(lambda a, w: ref.egrad2rgrad(a, w, c), x, v), c, dtype, [x], relative=True,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_geoopt_midpoint(dtype: torch.dtype, data: st.DataObject) -> None:
    """einstein_midpoint equals geoopt's weighted_midpoint (the Möbius gyromidpoint)."""
    c = data.draw(GEOOPT_CURVATURES, label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    n = data.draw(st.integers(1, 4), label="n")
    x = data.draw(
        points(dtype, d, (B, n), c=c, max_radius=GEOOPT_RADIUS / math.sqrt(c), shell=False),
        label="x",
    )
    w = data.draw(weights((B, n), dtype, max_log10_ratio=6.0), label="w")
    note_tensors(x=x, w=w)
    ball = _ball(c, dtype)
    ours = poincare.einstein_midpoint(x, w, c=c)
    theirs = ball.weighted_midpoint(x, w, reducedim=[-2])
    exact = [
        ref.einstein_midpoint(p, q, c)  # type: ignore[arg-type]
        for p, q in zip(rows(x, 1), rows(w, 1), strict=True)
    ]
    _check_points("einstein_midpoint", ours, theirs, exact, c, dtype, [x])


def _tangents(data: st.DataObject, dtype: torch.dtype, d: int, label: str) -> torch.Tensor:
    """Tangent vectors of norms 10^k: k in [-10, 4] in float32, [-30, 30] in float64."""
    lo, hi = (-10.0, 4.0) if dtype == torch.float32 else (-30.0, 30.0)
    k = data.draw(st.lists(st.floats(lo, hi), min_size=B, max_size=B), label=f"log10|{label}|")
    u = data.draw(directions(d, (B,)), label=label) * 10.0 ** torch.tensor(k).unsqueeze(-1)
    return u.to(dtype)


def _point_and_tangents(
    data: st.DataObject, dtype: torch.dtype
) -> tuple[float, poincare.PoincareBall, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A curvature and its ball, ``B`` points up to the representable radius, two tangents."""
    c = data.draw(GEOOPT_CURVATURES, label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    u, v = (_tangents(data, dtype, d, n) for n in ("u", "v"))
    note_tensors(x=x, u=u, v=v)
    return c, poincare.PoincareBall(c), x, u, v


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_component_inner_is_the_inner_product_per_point(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """geoopt's contract: ``component_inner(x, u, v)`` is ``inner(x, u, v, keepdim=True)``, one
    value per point, ``(B, 1)``, within a few eps of the exact λ²<u, v>; RiemannianAdam
    broadcasts it over the coordinates of its second moment, so that ``u / sqrt(...)`` has
    Riemannian norm 1 wherever ``x`` is (the ball's radius included)."""
    c, ball, x, u, v = _point_and_tangents(data, dtype)
    d = x.shape[-1]
    got = ball.component_inner(x, u, v)
    assert got.shape == (B, 1) and got.dtype == dtype
    assert torch.equal(got, ball.inner(x, u, v, keepdim=True))
    assert torch.equal(got.squeeze(-1), ball.inner(x, u, v))
    assert torch.equal(ball.component_inner(x, u), ball.inner(x, u, u, keepdim=True))
    eps = float(torch.finfo(dtype).eps)
    for i, (xr, ur, vr) in enumerate(zip(rows(x, 1), rows(u, 1), rows(v, 1), strict=True)):
        lam2 = ref.conformal_factor(xr, c) ** 2  # type: ignore[arg-type]
        exact = lam2 * ref.dot(ur, vr)  # type: ignore[arg-type]
        scale = lam2 * sum(abs(a * b) for a, b in zip(ur, vr, strict=True))  # type: ignore[call-overload]
        err = abs(float(got[i, 0]) - float(exact))
        assert err <= 4 * (d + 2) * eps * float(scale), f"component_inner[{i}] off by {err:.3e}"
    second_moment = torch.zeros_like(x).add_(ball.component_inner(x, u))
    assert torch.equal(second_moment, ball.inner(x, u, keepdim=True).expand_as(x))
    unit = ball.norm(x, u / second_moment.sqrt())
    assert torch.allclose(unit.double(), torch.ones(B, dtype=torch.float64), rtol=8 * d * eps)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_retractions_are_the_exponential_map_and_transport(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """``retr``, ``retr_transp``, ``expmap_transp`` and ``transp_follow_*`` are ``expmap`` and
    ``transp`` (bit for bit), ``proju`` is the identity broadcast to the point's shape, and
    ``egrad2rgrad`` is :func:`poincare.egrad2rgrad`."""
    c, ball, x, u, v = _point_and_tangents(data, dtype)
    y = poincare.expmap(x, u, c=c)
    w = poincare.transp(x, y, v, c=c)
    assert torch.equal(ball.retr(x, u), y)
    for name in ("retr_transp", "expmap_transp"):
        got_y, got_w = getattr(ball, name)(x, u, v)
        assert torch.equal(got_y, y) and torch.equal(got_w, w), name
    for name in ("transp_follow_retr", "transp_follow_expmap"):
        assert torch.equal(getattr(ball, name)(x, u, v), w), name
    assert torch.equal(ball.proju(x, v[:1]), v[:1].expand_as(x))
    assert torch.equal(ball.egrad2rgrad(x, v), poincare.egrad2rgrad(x, v, c=c))
    assert torch.equal(ball.projx(x), x)
    assert ball.check_point_on_manifold(y, atol=0.0, rtol=0.0)
