"""Gradients: finite everywhere, and equal to the mpmath derivatives.

Finiteness is checked at every drawn input (over the full representable radius, with the
origin, equal points and the outermost shell drawn often) and at the special points themselves.
Values are checked against ``verification.reference``'s derivatives within ``1e-6`` relative
(of the gradient's norm) for points up to hyperbolic radius ``10 / sqrt(c)``, where the
derivatives are well conditioned in both dtypes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import DTYPE_PARAMS, HULP_BOUND, examples, hulp, note_tensors, rows
from hypothesis import given, note
from hypothesis import strategies as st

import poincare
from verification import reference as ref
from verification.strategies import (
    curvatures,
    dims,
    directions,
    matrices,
    nearly_equal_pairs,
    point_and_tangent,
    points,
    scalars,
    weights,
)

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 4
#: Largest hyperbolic radius (in units of the curvature radius) of the reference comparisons.
REFERENCE_RADIUS = 10.0
#: Relative tolerance of a float64 gradient against the mpmath derivative.
GRAD_RTOL = 1e-6


def _rtol(dtype: torch.dtype, c: float, *inputs: torch.Tensor) -> torch.Tensor:
    """Per-row relative tolerance, float64 ``(B,)``: ``1e-6`` in float64 (where the hULP of every
    point within radius 10 is below ``1e-11``); in float32 the gradient of a backward-stable
    computation is the exact gradient at inputs a few float steps away, whose relative change is
    the inputs' hULP, so ``max(1e-6, 16 (eps + Σ hulp(inputs)))``."""
    n = inputs[0].shape[0] if inputs else B
    if dtype == torch.float64:
        return torch.full((n,), GRAD_RTOL, dtype=torch.float64)
    total = torch.full((n,), float(torch.finfo(dtype).eps), dtype=torch.float64)
    for t in inputs:
        total = total + hulp(t, c, dtype).reshape(n, -1).sum(-1)
    return torch.clamp(HULP_BOUND * total, min=GRAD_RTOL)


def _grads(
    fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], w: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Gradients of ``sum(w * fn(*inputs))`` (``w`` all ones by default) w.r.t. every input."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    weight = torch.ones_like(out) if w is None else w
    gs = torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(gs, leaves, strict=True)]


def _assert_finite(name: str, fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor]) -> None:
    out = fn(*inputs)
    assert bool(torch.isfinite(out).all()), f"{name}: non-finite output"
    for i, g in enumerate(_grads(fn, inputs)):
        assert bool(torch.isfinite(g).all()), f"{name}: non-finite gradient of input {i}"


def _draw(data: st.DataObject, dtype: torch.dtype) -> tuple[float, int]:
    return data.draw(curvatures(), label="c"), data.draw(dims(max_dim=5), label="dim")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gradients_finite_algebra(dtype: torch.dtype, data: st.DataObject) -> None:
    """mobius_add/sub, scalar_mul, matvec, gyration, project: finite gradients everywhere."""
    c, d = _draw(data, dtype)
    x, y = data.draw(nearly_equal_pairs(dtype, d, (B,), c=c), label="x, y")
    z = data.draw(points(dtype, d, (B,), c=c), label="z")
    r = data.draw(scalars(max_abs=5.0), label="r")
    m = data.draw(matrices(d, d, dtype), label="m")
    note_tensors(x=x, y=y, z=z, m=m)
    _assert_finite("mobius_add", lambda a, b: poincare.mobius_add(a, b, c=c), [x, z])
    _assert_finite("mobius_add(x, -x)", lambda a, b: poincare.mobius_add(-a, b, c=c), [x, y])
    _assert_finite("mobius_sub", lambda a, b: poincare.mobius_sub(a, b, c=c), [x, y])
    rt = torch.full((B, 1), r, dtype=dtype)
    _assert_finite("mobius_scalar_mul", lambda s, a: poincare.mobius_scalar_mul(s, a, c=c), [rt, x])
    _assert_finite("mobius_matvec", lambda mm, a: poincare.mobius_matvec(mm, a, c=c), [m, x])
    _assert_finite("gyration", lambda a, b, u: poincare.gyration(a, b, u, c=c), [x, y, z])
    _assert_finite("project", lambda a: poincare.project(a * 4.0, c=c), [x])


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gradients_finite_maps(dtype: torch.dtype, data: st.DataObject) -> None:
    """expmap0, logmap0, expmap, logmap: finite gradients, also at x == y and v == 0."""
    c, d = _draw(data, dtype)
    x, v = data.draw(point_and_tangent(dtype, d, (B,), c=c), label="x, v")
    _, y = data.draw(nearly_equal_pairs(dtype, d, (B,), c=c), label="_, y")
    y = x if data.draw(st.booleans(), label="y is x") else y
    note_tensors(x=x, v=v, y=y)
    _assert_finite("expmap0", lambda a: poincare.expmap0(a, c=c), [v])
    _assert_finite("logmap0", lambda a: poincare.logmap0(a, c=c), [x])
    _assert_finite("expmap", lambda a, b: poincare.expmap(a, b, c=c), [x, v])
    _assert_finite("logmap", lambda a, b: poincare.logmap(a, b, c=c), [x, y])


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gradients_finite_distances(dtype: torch.dtype, data: st.DataObject) -> None:
    """dist, dist0, pairwise_dist (plain and squared): finite gradients, also at x == y."""
    c, d = _draw(data, dtype)
    x, y = data.draw(nearly_equal_pairs(dtype, d, (B,), c=c), label="x, y")
    note_tensors(x=x, y=y)
    _assert_finite("dist", lambda a, b: poincare.dist(a, b, c=c), [x, y])
    _assert_finite("dist(x, x)", lambda a: poincare.dist(a, a, c=c), [x])
    _assert_finite("dist0", lambda a: poincare.dist0(a, c=c), [x])
    _assert_finite("pairwise_dist", lambda a, b: poincare.pairwise_dist(a, b, c=c), [x, y])
    _assert_finite(
        "pairwise_dist(squared)",
        lambda a, b: poincare.pairwise_dist(a, b, c=c, squared=True),
        [x, x],
    )


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gradients_finite_transport(dtype: torch.dtype, data: st.DataObject) -> None:
    """transp, transp0, egrad2rgrad, conformal_factor and the model conversions."""
    c, d = _draw(data, dtype)
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    v = data.draw(directions(d, (B,)), label="v").to(dtype)
    note_tensors(x=x, y=y, v=v)
    _assert_finite("transp", lambda a, b, u: poincare.transp(a, b, u, c=c), [x, y, v])
    _assert_finite("transp0", lambda b, u: poincare.transp0(b, u, c=c), [y, v])
    _assert_finite("egrad2rgrad", lambda a, g: poincare.egrad2rgrad(a, g, c=c), [x, v])
    _assert_finite("conformal_factor", lambda a: poincare.conformal_factor(a, c=c), [x])
    _assert_finite(
        "klein round trip",
        lambda a: poincare.klein_to_poincare(poincare.poincare_to_klein(a, c=c), c=c),
        [x],
    )
    _assert_finite(
        "lorentz round trip",
        lambda a: poincare.lorentz_to_poincare(poincare.poincare_to_lorentz(a, c=c), c=c),
        [x],
    )


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gradients_finite_midpoint(dtype: torch.dtype, data: st.DataObject) -> None:
    """einstein_midpoint: finite gradients in the points and the weights (zeros included)."""
    c, d = _draw(data, dtype)
    n = data.draw(st.integers(1, 4), label="n")
    x = data.draw(points(dtype, d, (B, n), c=c), label="x")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(x=x, w=w)
    _assert_finite("einstein_midpoint", lambda a, b: poincare.einstein_midpoint(a, b, c=c), [x, w])
    same = x[:, :1].expand(B, n, d).contiguous()
    _assert_finite(
        "einstein_midpoint(identical)",
        lambda a, b: poincare.einstein_midpoint(a, b, c=c),
        [same, w],
    )


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_gradients_finite_at_special_points(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """At the origin, at x == y and on the outermost shell, for every op that takes points."""
    c, d = _draw(data, dtype)
    u = data.draw(directions(d, (B,)), label="u")
    shell = poincare.project((u * 2.0 / c**0.5).to(dtype), c=c)
    zero = torch.zeros((B, d), dtype=dtype)
    for name, p in (("origin", zero), ("shell", shell)):
        _assert_finite(f"mobius_add({name}, {name})", lambda a: poincare.mobius_add(a, a, c=c), [p])
        _assert_finite(f"dist({name}, {name})", lambda a: poincare.dist(a, a, c=c), [p])
        _assert_finite(f"dist0({name})", lambda a: poincare.dist0(a, c=c), [p])
        _assert_finite(f"logmap({name}, {name})", lambda a: poincare.logmap(a, a, c=c), [p])
        _assert_finite(f"logmap0({name})", lambda a: poincare.logmap0(a, c=c), [p])
        _assert_finite(
            f"expmap({name}, 0)", lambda a, v: poincare.expmap(a, v, c=c), [p, torch.zeros_like(p)]
        )
        _assert_finite(
            f"mobius_scalar_mul(0.5, {name})",
            lambda a: poincare.mobius_scalar_mul(0.5, a, c=c),
            [p],
        )
        _assert_finite(f"pairwise_dist({name})", lambda a: poincare.pairwise_dist(a, a, c=c), [p])
        _assert_finite(
            f"einstein_midpoint({name} x2)",
            lambda a: poincare.einstein_midpoint(torch.stack([a, a], dim=-2), c=c),
            [p],
        )
        _assert_finite(
            f"mobius_matvec(I, {name})",
            lambda a: poincare.mobius_matvec(torch.eye(d, dtype=dtype), a, c=c),
            [p],
        )
    _assert_finite("expmap0(0)", lambda v: poincare.expmap0(v, c=c), [zero])
    _assert_finite("mobius_add(shell, -shell)", lambda a: poincare.mobius_add(a, -a, c=c), [shell])


# ---------------------------------------------------------------------------------------------
# Against the mpmath derivatives
# ---------------------------------------------------------------------------------------------


def _assert_grad_close(
    got: torch.Tensor, exact: list[Any], rtol: torch.Tensor, what: str, floor: float = 0.0
) -> None:
    """Each row of ``got`` within ``rtol[row]`` of ``exact``, relative to ``max(|exact row|,
    floor)`` (``floor``: the natural size of the gradient where the exact one vanishes)."""
    for i, (g, e) in enumerate(zip(rows(got, got.dim() - 1), exact, strict=True)):
        n = max(ref.norm(e), floor)
        err = ref.norm([a - b for a, b in zip(g, e, strict=True)])  # type: ignore[call-overload]
        tol = float(rtol[i]) * n
        if err > tol:
            note(f"{what}: row {i}: got {[float(a) for a in g]}, exact {[float(a) for a in e]}")  # type: ignore[attr-defined]
        assert err <= tol, (
            f"{what}: relative gradient error {float(err / n) if n else err} > {float(rtol[i])}"
        )


def _ref_points(
    data: st.DataObject, dtype: torch.dtype, c: float, d: int, label: str
) -> torch.Tensor:
    return data.draw(points(dtype, d, (B,), c=c, max_radius=REFERENCE_RADIUS / c**0.5), label=label)


def _weight(data: st.DataObject, d: int, dtype: torch.dtype) -> torch.Tensor:
    return data.draw(directions(d, (B,)), label="w").to(dtype)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_gradients_match_reference_dist(dtype: torch.dtype, data: st.DataObject) -> None:
    """∇dist(x, y) and ∇dist0(x) equal the mpmath gradients (off x == y and the origin, where
    the reference returns the zero subgradient and only finiteness is asked)."""
    c, d = _draw(data, dtype)
    x = _ref_points(data, dtype, c, d, "x")
    y = _ref_points(data, dtype, c, d, "y")
    note_tensors(x=x, y=y)
    gx, gy = _grads(lambda a, b: poincare.dist(a, b, c=c), [x, y])
    xs, ys = rows(x, 1), rows(y, 1)
    ex = [ref.grad_dist(a, b, c) for a, b in zip(xs, ys, strict=True)]  # type: ignore[arg-type]
    keep = [i for i in range(B) if xs[i] != ys[i]]
    rtol = _rtol(dtype, c, x, y)
    if keep:
        _assert_grad_close(gx[keep], [ex[i][0] for i in keep], rtol[keep], "∇_x dist")
        _assert_grad_close(gy[keep], [ex[i][1] for i in keep], rtol[keep], "∇_y dist")
    (g0,) = _grads(lambda a: poincare.dist0(a, c=c), [x])
    keep = [i for i in range(B) if any(v != 0 for v in xs[i])]  # type: ignore[attr-defined]
    if keep:
        e0 = [ref.grad_dist0(xs[i], c) for i in keep]  # type: ignore[arg-type]
        _assert_grad_close(g0[keep], e0, _rtol(dtype, c, x)[keep], "∇dist0")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_gradients_match_reference_mobius_add(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """∇<w, x ⊕ y> in x and y equals the mpmath quotient-rule gradient."""
    c, d = _draw(data, dtype)
    x = _ref_points(data, dtype, c, d, "x")
    y = _ref_points(data, dtype, c, d, "y")
    w = _weight(data, d, dtype)
    note_tensors(x=x, y=y, w=w)
    gx, gy = _grads(lambda a, b: poincare.mobius_add(a, b, c=c), [x, y], w)
    ex = [
        ref.grad_mobius_add(a, b, ww, c)  # type: ignore[arg-type]
        for a, b, ww in zip(rows(x, 1), rows(y, 1), rows(w, 1), strict=True)
    ]
    # Rows whose exact sum lies beyond the representable radius are projected (whose radial
    # derivative is 0): only finiteness is asked of them.
    top = ref.max_radius(dtype, c)
    keep = [
        i
        for i, (a, b) in enumerate(zip(rows(x, 1), rows(y, 1), strict=True))
        if ref.dist0(ref.mobius_add(a, b, c), c) < top  # type: ignore[arg-type]
    ]
    rtol = _rtol(dtype, c, x, y)[keep]
    _assert_grad_close(gx[keep], [ex[i][0] for i in keep], rtol, "∇_x <w, x ⊕ y>")
    _assert_grad_close(gy[keep], [ex[i][1] for i in keep], rtol, "∇_y <w, x ⊕ y>")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_gradients_match_reference_maps0(dtype: torch.dtype, data: st.DataObject) -> None:
    """∇<w, expmap0(v)> and ∇<w, logmap0(y)> equal the mpmath gradients."""
    c, d = _draw(data, dtype)
    y = _ref_points(data, dtype, c, d, "y")
    w = _weight(data, d, dtype)
    v = poincare.logmap0(y, c=c).detach()
    note_tensors(y=y, v=v, w=w)
    (gv,) = _grads(lambda a: poincare.expmap0(a, c=c), [v], w)
    ev = [ref.grad_expmap0(a, b, c) for a, b in zip(rows(v, 1), rows(w, 1), strict=True)]  # type: ignore[arg-type]
    rtol = _rtol(dtype, c, y)
    _assert_grad_close(gv, ev, rtol, "∇ expmap0")
    (gy,) = _grads(lambda a: poincare.logmap0(a, c=c), [y], w)
    ey = [ref.grad_logmap0(a, b, c) for a, b in zip(rows(y, 1), rows(w, 1), strict=True)]  # type: ignore[arg-type]
    _assert_grad_close(gy, ey, rtol, "∇ logmap0")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.25)
@given(data=st.data())
def test_property_gradients_match_reference_maps(dtype: torch.dtype, data: st.DataObject) -> None:
    """∇<w, expmap(x, v)> and ∇<w, logmap(x, y)> equal the mpmath numerical derivatives
    (x, y within the reference radius, v = logmap(x, y) nonzero)."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=3), label="dim")
    x = _ref_points(data, dtype, c, d, "x")
    y = _ref_points(data, dtype, c, d, "y")
    w = _weight(data, d, dtype)
    note_tensors(x=x, y=y, w=w)
    xs, ys, ws = rows(x, 1), rows(y, 1), rows(w, 1)
    keep = [i for i in range(B) if xs[i] != ys[i]]
    if not keep:
        return
    x, y, w = x[keep], y[keep], w[keep]
    xs, ys, ws = [xs[i] for i in keep], [ys[i] for i in keep], [ws[i] for i in keep]
    rtol = _rtol(dtype, c, x, y)
    gx, gy = _grads(lambda a, b: poincare.logmap(a, b, c=c), [x, y], w)
    e = [ref.grad_logmap(a, b, ww, c) for a, b, ww in zip(xs, ys, ws, strict=True)]  # type: ignore[arg-type]
    _assert_grad_close(gx, [t[0] for t in e], rtol, "∇_x logmap")
    _assert_grad_close(gy, [t[1] for t in e], rtol, "∇_y logmap")
    v = poincare.logmap(x, y, c=c).detach()
    gx, gv = _grads(lambda a, b: poincare.expmap(a, b, c=c), [x, v], w)
    e = [ref.grad_expmap(a, b, ww, c) for a, b, ww in zip(xs, rows(v, 1), ws, strict=True)]  # type: ignore[arg-type]
    _assert_grad_close(gx, [t[0] for t in e], rtol, "∇_x expmap")
    _assert_grad_close(gv, [t[1] for t in e], rtol, "∇_v expmap")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.25)
@given(data=st.data())
def test_property_gradients_match_reference_midpoint(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """∇<w, einstein_midpoint(x; a)> in the points and the (positive) weights."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=3), label="dim")
    n = data.draw(st.integers(1, 3), label="n")
    x = data.draw(points(dtype, d, (B, n), c=c, max_radius=REFERENCE_RADIUS / c**0.5), label="x")
    a = data.draw(st.lists(st.floats(0.125, 8.0), min_size=B * n, max_size=B * n), label="weights")
    wts = torch.tensor(a, dtype=dtype).reshape(B, n)
    w = _weight(data, d, dtype)
    note_tensors(x=x, wts=wts, w=w)
    gx, ga = _grads(lambda p, q: poincare.einstein_midpoint(p, q, c=c), [x, wts], w)
    rtol = _rtol(dtype, c, x)
    for i, (pts, ws, ww) in enumerate(zip(rows(x, 1), rows(wts, 1), rows(w, 1), strict=True)):
        dp, dw = ref.grad_einstein_midpoint(pts, ws, ww, c)  # type: ignore[arg-type]
        _assert_grad_close(gx[i], dp, rtol[i].expand(len(dp)), f"∇_x midpoint[{i}]")
        # d m / d a_i vanishes for one point (or equal points); its natural size is that of
        # the point gradient times the spread of the points over the smallest weight.
        # (points below eps in norm count as eps: the contract's floor, as in hulp).
        spread = max(max(float(ref.norm(p)) for p in pts), float(torch.finfo(dtype).eps))  # type: ignore[arg-type]
        size = sum(float(ref.norm(g)) for g in dp) * spread
        floor = size / min(float(v) for v in ws)  # type: ignore[attr-defined]
        _assert_grad_close(ga[i : i + 1], [dw], rtol[i : i + 1], f"∇_weights midpoint[{i}]", floor)
