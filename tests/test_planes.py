"""Unit tests of the gyroplane distance, the geodesics, ``mobius_fn_apply`` and
``HyperbolicMLR``: known values, shapes, special inputs, bad-input errors, gradients, modules."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import poincare as P
from poincare._geodesic import geodesic, geodesic_unit, mobius_fn_apply
from poincare._gyroplane import dist2plane, unit_direction
from poincare.nn.mlr import HyperbolicMLR
from verification import metrics
from verification import reference as ref
from verification import reference_planes as refp

DTYPES = [torch.float32, torch.float64]


def _points(n: int, d: int, dtype: torch.dtype, radius: float, seed: int = 0) -> Tensor:
    """``n`` points at hyperbolic radius exactly ``radius`` (c = 1) in random directions."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    return P.project((math.tanh(radius / 2) * u).to(dtype))


def _shell(dtype: torch.dtype, n: int = 3, d: int = 4, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return P.project(torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype) * 9)


def _normals(n: int, d: int, dtype: torch.dtype, seed: int = 2) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _point_errors(got: Tensor, exact: list[ref.Vec], c: float, allow: list[list[object]]) -> float:
    """The largest hULP error of the rows of ``got`` against ``exact`` (allowances per row)."""
    rows = ref.to_mp(got.reshape(-1, got.shape[-1]))
    return max(
        metrics.point_error(r, e, c, got.dtype, a)
        for r, e, a in zip(rows, exact, allow, strict=True)
    )


def _grads(fn: Callable[..., Tensor], *inputs: Tensor) -> list[Tensor]:
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    gs = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(gs, leaves, strict=True)]


def _assert_finite_grads(fn: Callable[..., Tensor], *inputs: Tensor) -> None:
    out = fn(*inputs)
    assert bool(torch.isfinite(out).all()), "non-finite output"
    for i, g in enumerate(_grads(fn, *inputs)):
        assert bool(torch.isfinite(g).all()), f"non-finite gradient of input {i}"


# ---------------------------------------------------------------------------------------------
# dist2plane
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_dist2plane_along_the_normal_is_the_radius(dtype: torch.dtype) -> None:
    """The plane through the origin with normal e1: the point tanh(r/2) e1 is at distance r."""
    a = torch.tensor([1.0, 0.0, 0.0], dtype=dtype)
    p = torch.zeros(3, dtype=dtype)
    for r in (0.0, 1e-6, 0.5, 3.0, 10.0):
        x = torch.tensor([math.tanh(r / 2), 0.0, 0.0], dtype=dtype)
        exact = float(refp.dist2plane(x.tolist(), p.tolist(), a.tolist()))
        assert float(dist2plane(x, p, a)) == pytest.approx(exact, rel=4 * _eps(dtype), abs=0)
        assert float(dist2plane(x, p, -a)) == pytest.approx(-exact, rel=4 * _eps(dtype), abs=0)


def test_dist2plane_through_the_origin_closed_form() -> None:
    """p = 0: d = asinh(2 sqrt(c) <x, â> / (1 - c|x|^2)) / sqrt(c)."""
    c = 0.7
    x = _points(6, 4, torch.float64, 2.5) / math.sqrt(c)
    a = _normals(6, 4, torch.float64)
    ahat = a / a.norm(dim=-1, keepdim=True)
    sc = math.sqrt(c)
    expected = torch.asinh(2 * sc * (x * ahat).sum(-1) / (1 - c * (x * x).sum(-1))) / sc
    got = dist2plane(x, torch.zeros_like(x), a, c=c)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dist2plane_matches_the_reference_on_the_shell(dtype: torch.dtype) -> None:
    """Points and planes on the outermost shell: within 16 hULP (with the normal's allowance)."""
    x, p = _shell(dtype, 4, seed=3), _shell(dtype, 4, seed=4)
    p[0] = x[0]
    a = _normals(4, 4, dtype)
    got = dist2plane(x, p, a)
    for i in range(4):
        xs, ps, as_ = x[i].tolist(), p[i].tolist(), a[i].tolist()
        exact = refp.dist2plane(xs, ps, as_)
        allow = refp.dist2plane_allowance(xs, ps, as_, 1.0, dtype)
        assert metrics.scalar_error(float(got[i]), exact, 1.0, dtype, allow) <= 16


def test_reference_dist2plane_normal_gradient_vanishes_on_the_plane_point() -> None:
    """At ``x == p`` the distance is 0 for every normal, so its gradient in ``a`` is exactly 0
    in the reference too (tiny points, where Möbius addition's rounding residue of the working
    precision used to read as a gradient of 1e-247), and the difference form the reference uses
    agrees with the textbook ``(-p) ⊕ x`` form away from the plane point."""
    x = [float.fromhex("-0x1.a354af7eec2fap-241"), float.fromhex("0x1.e5d7066ed38c4p-244")]
    for a in ([1.0, 0.0], [0.9823, -0.1871]):
        assert refp.grad_dist2plane(x, x, a, 1.0)[2] == [0, 0]
    g = torch.Generator().manual_seed(5)
    for c in (1e-4, 1.0, 100.0):
        xs, ps = (0.4 / c**0.5 * torch.randn(3, generator=g, dtype=torch.float64) for _ in "xp")
        a = torch.randn(3, generator=g, dtype=torch.float64).tolist()
        z = ref.mobius_add([-v for v in ps.tolist()], xs.tolist(), c)
        arg = 2 * c**0.5 * ref.dot(z, a) / ((1 - c * ref.dot(z, z)) * ref.norm(a))
        textbook = float(ref.mpmath.asinh(arg)) / c**0.5
        assert float(refp.dist2plane(xs.tolist(), ps.tolist(), a, c)) == pytest.approx(
            textbook, rel=1e-12
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_dist2plane_sign_scale_and_unsigned(dtype: torch.dtype) -> None:
    x, p, a = _points(5, 3, dtype, 4.0), _points(5, 3, dtype, 2.0, seed=1), _normals(5, 3, dtype)
    d = dist2plane(x, p, a)
    assert torch.equal(dist2plane(x, p, -a), -d)
    for k in (2.0**-60, 0.5, 2.0**60):  # powers of two: bit for bit
        assert torch.equal(dist2plane(x, p, a * k), d)
    torch.testing.assert_close(dist2plane(x, p, a * 3.7), d, rtol=4 * _eps(dtype), atol=0)
    assert torch.equal(dist2plane(x, p, a, signed=False), d.abs())


def test_dist2plane_huge_and_tiny_normals_float32() -> None:
    x, p = _points(3, 4, torch.float32, 3.0), _points(3, 4, torch.float32, 1.0, seed=1)
    a = _normals(3, 4, torch.float32)
    d = dist2plane(x, p, a)
    big = torch.full((3, 4), 1e30, dtype=torch.float32) * a.sign()
    for scaled in (a * 1e30, a * 1e-41, big):
        out = dist2plane(x, p, scaled)
        assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(dist2plane(x, p, a * 1e30), d, rtol=1e-6, atol=0)
    _assert_finite_grads(lambda u: dist2plane(x, p, u), a * 1e-41)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dist2plane_zero_normal_gives_zero_with_zero_gradients(dtype: torch.dtype) -> None:
    x, p = _points(3, 4, dtype, 3.0), _points(3, 4, dtype, 1.0, seed=1)
    a = torch.zeros(3, 4, dtype=dtype)
    assert torch.equal(dist2plane(x, p, a), torch.zeros(3, dtype=dtype))
    for signed in (True, False):

        def f(q: Tensor, r: Tensor, s: Tensor, signed: bool = signed) -> Tensor:
            return dist2plane(q, r, s, signed=signed)

        for g in _grads(f, x, p, a):
            assert torch.equal(g, torch.zeros_like(g))


def test_dist2plane_shapes_broadcast_and_keepdim() -> None:
    x = _points(10, 3, torch.float64, 2.0).reshape(5, 2, 3)
    p = _points(2, 3, torch.float64, 1.0, seed=1)
    a = _normals(2, 3, torch.float64)
    assert dist2plane(x, p, a).shape == (5, 2)
    assert dist2plane(x, p, a, keepdim=True).shape == (5, 2, 1)
    per_class = dist2plane(x[:, :1], p, a)  # (5, 1, 3) against 2 planes
    assert per_class.shape == (5, 2)
    torch.testing.assert_close(per_class[:, 1], dist2plane(x[:, 0], p[1], a[1]))


def test_dist2plane_dtypes() -> None:
    x = _points(3, 4, torch.float16, 1.0)
    p = _points(3, 4, torch.float16, 0.5, seed=1)
    a = _normals(3, 4, torch.float16)
    assert dist2plane(x, p, a).dtype == torch.float16
    assert dist2plane(x.float(), p.double(), a.float()).dtype == torch.float64
    with P.upcast(torch.float64):
        assert dist2plane(x.float(), p.float(), a.float()).dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_dist2plane_finite_gradients_at_special_points(dtype: torch.dtype) -> None:
    """At the origin, at x == p, on the shell, on the plane (unsigned: zero subgradient)."""
    shell = _shell(dtype)
    zero = torch.zeros_like(shell)
    a = _normals(3, 4, dtype)
    for signed in (True, False):

        def f(q: Tensor, r: Tensor, s: Tensor, signed: bool = signed) -> Tensor:
            return dist2plane(q, r, s, signed=signed)

        for x, p in ((zero, zero), (shell, shell), (zero, shell), (shell, zero), (shell, -shell)):
            _assert_finite_grads(f, x, p, a)
    # Points on (or outside) the boundary are treated as on the outermost shell: finite.
    outside = shell * 1.5
    _assert_finite_grads(lambda q, r: dist2plane(q, r, a), outside, outside.flip(0))


def test_dist2plane_signed_gradient_on_the_plane_is_the_unit_normal() -> None:
    """At a point of the plane the gradient of d_± is λ_x times the unit normal (Riemannian
    unit length): at p = x = 0 it is 2 â."""
    a = _normals(1, 3, torch.float64)[0]
    (gx,) = _grads(lambda q: dist2plane(q, torch.zeros(3, dtype=torch.float64), a), torch.zeros(3))
    torch.testing.assert_close(gx.double(), 2 * a / a.norm(), rtol=1e-6, atol=0)


def test_dist2plane_bad_inputs() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="a has last dimension 3"):
        dist2plane(x, x, torch.ones(3, 3))
    with pytest.raises(ValueError, match="p has last dimension 5"):
        dist2plane(x, torch.zeros(5), x)
    with pytest.raises(TypeError, match="a must"):
        dist2plane(x, x, [1.0, 0.0, 0.0, 0.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="p must have a real floating dtype"):
        dist2plane(x, torch.zeros(3, 4, dtype=torch.int64), x)
    with pytest.raises(ValueError, match="does not broadcast"):
        dist2plane(torch.zeros(3, 4), torch.zeros(2, 4), torch.ones(4))
    with pytest.raises(ValueError, match="c must be"):
        dist2plane(x, x, x, c=-1.0)
    with pytest.raises(ValueError, match="at least one dimension"):
        dist2plane(torch.tensor(0.0), x, x)


def test_unit_direction() -> None:
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-310, 0.0]], dtype=torch.float64)
    u = unit_direction(a)
    torch.testing.assert_close(u, torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]]).double())


# ---------------------------------------------------------------------------------------------
# geodesic
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_endpoints_and_midpoint(dtype: torch.dtype) -> None:
    x = torch.cat([_points(3, 4, dtype, 5.0), _shell(dtype)])
    y = torch.cat([_points(3, 4, dtype, 2.0, seed=1), -_shell(dtype)])
    exact_x, exact_y = ref.to_mp(x), ref.to_mp(y)
    allow = [
        [metrics.hulp(a, 1, dtype), metrics.hulp(b, 1, dtype)]
        for a, b in zip(exact_x, exact_y, strict=True)
    ]
    assert _point_errors(geodesic(0.0, x, y), exact_x, 1.0, allow) <= 16
    assert _point_errors(geodesic(1.0, x, y), exact_y, 1.0, allow) <= 16
    mid = geodesic(0.5, x, y)
    exact_mid = [refp.geodesic(0.5, a, b) for a, b in zip(exact_x, exact_y, strict=True)]
    assert _point_errors(mid, exact_mid, 1.0, allow) <= 16
    # The midpoint of two opposite shell points is (very nearly) the origin.
    assert float(P.dist0(mid[3:].double()).max()) < 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_equal_points_and_tensor_t(dtype: torch.dtype) -> None:
    x = _points(4, 3, dtype, 3.0)
    t = torch.tensor([[-2.0], [0.0], [0.3], [7.0]], dtype=dtype)
    torch.testing.assert_close(geodesic(t, x, x), x, rtol=4 * _eps(dtype), atol=0)
    y = _points(4, 3, dtype, 1.0, seed=1)
    out = geodesic(t, x, y)
    assert out.shape == (4, 3)
    for i in range(4):
        torch.testing.assert_close(out[i], geodesic(float(t[i]), x[i], y[i]))


def test_geodesic_far_extrapolation_lands_on_the_shell() -> None:
    x = _points(3, 4, torch.float32, 2.0)
    y = _points(3, 4, torch.float32, 1.0, seed=1)
    for t in (50.0, -1e6, 1e30):
        out = geodesic(t, x, y)
        assert bool(torch.isfinite(out).all())
        P.check_point(out)
        radius = P.dist0(out.double())
        assert float(radius.min()) > P.max_radius(torch.float32) - 1
        _assert_finite_grads(lambda q, r, t=t: geodesic(t, q, r), x, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_finite_gradients_at_special_points(dtype: torch.dtype) -> None:
    shell = _shell(dtype)
    zero = torch.zeros_like(shell)
    t = torch.tensor([[0.0], [0.5], [1.5]], dtype=dtype)
    for x, y in ((zero, zero), (shell, shell), (zero, shell), (shell, -shell)):
        _assert_finite_grads(geodesic, t, x, y)


def test_geodesic_gradient_at_equal_points_is_the_interpolation() -> None:
    """d/dy γ_{x,y}(t) at y = x is t·I (and d/dx is (1 - t)·I)."""
    x = _points(1, 3, torch.float64, 1.5)[0]
    t = 0.25
    jy = torch.autograd.functional.jacobian(lambda y: geodesic(t, x, y), x)  # type: ignore[no-untyped-call]
    jx = torch.autograd.functional.jacobian(lambda q: geodesic(t, q, x), x)  # type: ignore[no-untyped-call]
    torch.testing.assert_close(jy, t * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(jx, (1 - t) * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_geodesic_bad_inputs() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="y has last dimension 2"):
        geodesic(0.5, x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="t must be a scalar or broadcast"):
        geodesic(torch.ones(3, 2), x, x)
    with pytest.raises(ValueError, match="t of shape"):
        geodesic(torch.ones(5, 1), x, x)
    with pytest.raises(ValueError, match="t must be finite"):
        geodesic(math.inf, x, x)
    with pytest.raises(TypeError, match="t must be a real number"):
        geodesic(True, x, x)
    with pytest.raises(TypeError, match="t must be a float or a floating tensor"):
        geodesic(torch.ones(3, 1, dtype=torch.int32), x, x)


# ---------------------------------------------------------------------------------------------
# geodesic_unit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_unit_travels_at_unit_speed(dtype: torch.dtype) -> None:
    x = torch.cat([_points(3, 4, dtype, 4.0), _shell(dtype)])
    v = _normals(6, 4, dtype)
    for t in (0.0, 0.75, -3.0, 12.0):
        out = geodesic_unit(t, x, v)
        d = P.dist(x.double(), out.double())
        ulps = [float(metrics.hulp(r, 1, dtype)) for r in ref.to_mp(x)]
        ulps_out = [float(metrics.hulp(r, 1, dtype)) for r in ref.to_mp(out)]
        for i in range(6):
            budget = 16 * (ulps[i] + ulps_out[i] + _eps(dtype) * abs(t))
            assert abs(float(d[i]) - abs(t)) <= budget + 1e-12


@pytest.mark.parametrize("branch_free", [False, True])
def test_geodesic_unit_through_the_origin_from_the_outermost_shell(branch_free: bool) -> None:
    """A float64 start point on the outermost shell, stepping 1000 units straight through the
    origin (x + w rounds to 0 there): the antipodal shell point, with finite gradients (found
    by the thorough profile: the denominator's floor was the smallest float, its gradient
    0 * inf)."""
    c = 31.622776601683793
    hexes = ["-0x1.55dd552324e57p-4", "-0x1.ed457f3dd46adp-4", "-0x1.e204dafa073ccp-5"]
    x = torch.tensor(
        [[float.fromhex(h) for h in [*hexes, "-0x1.4f1099330e5aap-4"]]], dtype=torch.float64
    )
    leaves = [x.clone(), -x.clone(), torch.full((1, 1), 1000.0, dtype=torch.float64)]
    for t in leaves:
        t.requires_grad_(True)
    with P.branch_free() if branch_free else contextlib.nullcontext():
        out = geodesic_unit(leaves[2], leaves[0], leaves[1], c=c)
        grads = torch.autograd.grad(out.sum(), leaves)
    assert torch.allclose(out.detach(), -x, rtol=1e-12, atol=0)
    P.check_point(out.detach(), c=c)
    assert all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_unit_equals_the_exponential_map(dtype: torch.dtype) -> None:
    x, v = _points(4, 3, dtype, 3.0), _normals(4, 3, dtype)
    t = torch.tensor([[0.5], [-1.0], [2.0], [4.0]], dtype=dtype)
    out = geodesic_unit(t, x, v)
    xs, vs = ref.to_mp(x), ref.to_mp(v)
    exact = [refp.geodesic_unit(float(t[i]), xs[i], vs[i]) for i in range(4)]
    allow = [refp.geodesic_unit_allowance(float(t[i]), xs[i], vs[i], 1.0, dtype) for i in range(4)]
    assert _point_errors(out, exact, 1.0, allow) <= 16
    x64, v64, t64 = x.double(), v.double(), t.double()
    lam = P.conformal_factor(x64)
    direct = P.expmap(x64, t64 * v64 / (lam * v64.norm(dim=-1, keepdim=True)))
    torch.testing.assert_close(
        out.double(), direct, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_unit_zero_direction_and_special_points(dtype: torch.dtype) -> None:
    x = torch.cat([_points(2, 4, dtype, 2.0), _shell(dtype, 2), torch.zeros(1, 4, dtype=dtype)])
    zero = torch.zeros_like(x)
    assert torch.equal(geodesic_unit(3.0, x, zero), x)
    v = _normals(5, 4, dtype)
    t = torch.tensor([[0.0], [1e-9], [5.0], [-40.0], [1e30]], dtype=dtype)
    _assert_finite_grads(geodesic_unit, t, x, v)
    _assert_finite_grads(geodesic_unit, t, x, zero)
    P.check_point(geodesic_unit(t, x, v))


def test_geodesic_unit_bad_inputs() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="v has last dimension 3"):
        geodesic_unit(1.0, x, torch.ones(3, 3))
    with pytest.raises(ValueError, match="t of shape"):
        geodesic_unit(torch.ones(2, 1), x, x)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        geodesic_unit(1.0, [0.0, 0.0], x)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# mobius_fn_apply
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_mobius_fn_apply_scalar_linear_identity(dtype: torch.dtype) -> None:
    x = torch.cat([_points(3, 4, dtype, 3.0), torch.zeros(1, 4, dtype=dtype)])
    c = 0.5
    xc = x / math.sqrt(c)
    rtol = 8 * _eps(dtype)
    torch.testing.assert_close(mobius_fn_apply(lambda v: v, xc, c=c), xc, rtol=rtol, atol=0)
    torch.testing.assert_close(
        mobius_fn_apply(lambda v: 0.5 * v, xc, c=c),
        P.mobius_scalar_mul(0.5, xc, c=c),
        rtol=rtol,
        atol=0,
    )
    m = _normals(5, 4, dtype) / 4
    out = mobius_fn_apply(lambda v, w: v @ w.T, xc, m, c=c)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, P.mobius_matvec(m, xc, c=c), rtol=1e-5, atol=1e-7)


def test_mobius_fn_apply_passes_arguments_and_keeps_dtype() -> None:
    x = _points(3, 4, torch.float16, 1.0)
    seen: dict[str, object] = {}

    def fn(v: Tensor, k: float, *, shift: float) -> Tensor:
        seen["dtype"] = v.dtype
        return k * v + shift

    out = mobius_fn_apply(fn, x, 2.0, shift=0.1, c=1.0)
    assert seen["dtype"] == torch.float32 and out.dtype == torch.float16
    P.check_point(out)
    big = mobius_fn_apply(lambda v: v * 1e30, _points(2, 3, torch.float32, 1.0))
    P.check_point(big)
    assert mobius_fn_apply(lambda v: v.double(), x).dtype == torch.float64


def test_mobius_fn_apply_bad_inputs() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="fn must be callable"):
        mobius_fn_apply(3, x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must return a floating tensor"):
        mobius_fn_apply(lambda v: v.long(), x)
    with pytest.raises(TypeError, match="fn must return a floating tensor"):
        mobius_fn_apply(lambda v: 1.0, x)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="at least one dimension"):
        mobius_fn_apply(lambda v: v.sum(), x)
    with pytest.raises(TypeError, match="x must"):
        mobius_fn_apply(lambda v: v, [0.0])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# HyperbolicMLR
# ---------------------------------------------------------------------------------------------


def test_mlr_shapes_repr_and_parameters() -> None:
    m = HyperbolicMLR(3, 5)
    assert "in_features=3, num_classes=5" in repr(m)
    assert m.weight.shape == (5, 3) and m.bias.shape == (5, 3)
    assert torch.equal(m.bias, torch.zeros(5, 3))
    x = _points(8, 3, torch.float32, 2.0).reshape(2, 4, 3)
    assert m(x).shape == (2, 4, 5)
    assert m(x[0, 0]).shape == (5,)
    p, a = m.planes()
    assert p.shape == a.shape == (5, 3)
    assert m.c == 1.0


def test_mlr_equals_the_formula() -> None:
    """eq. 25 of Ganea et al. (2018), in mpmath, on float64 parameters and points; on the
    outermost shell within the contract (the distance part, with its allowances)."""
    torch.manual_seed(0)
    c = 0.8
    m = HyperbolicMLR(3, 4, c=c).double()
    with torch.no_grad():
        m.bias.normal_(0, 0.7)
    x = torch.cat([_points(4, 3, torch.float64, 3.0), _shell(torch.float64, 1, 3)]) / math.sqrt(c)
    x = P.project(x, c=c)
    got = m(x).detach()
    b, w = ref.to_mp(m.bias), ref.to_mp(m.weight)
    p = ref.to_mp(m.planes()[0].detach())
    for i, xi in enumerate(ref.to_mp(x)):
        exact = refp.mlr_logits(xi, b, w, c)
        for k in range(4):
            scale = 2 * float(m.weight[k].detach().norm())
            allow = refp.dist2plane_allowance(xi, p[k], w[k], c, torch.float64)
            allow.append(metrics.hulp(p[k], c, torch.float64))  # the rounding of p = exp_0(b)
            err = metrics.scalar_error(
                float(got[i, k]) / scale, exact[k] / scale, c, torch.float64, allow
            )
            assert err <= 16, f"point {i}, class {k}: {err:.3g} hULP"
            if i < 4:
                assert float(got[i, k]) == pytest.approx(float(exact[k]), rel=1e-12, abs=1e-12)


def test_mlr_near_the_origin_is_a_linear_layer() -> None:
    m = HyperbolicMLR(4, 3).double()
    x = _points(5, 4, torch.float64, 1e-6)
    torch.testing.assert_close(m(x), 4 * x @ m.weight.T, rtol=1e-9, atol=0)


def test_mlr_gradients_finite() -> None:
    m = HyperbolicMLR(4, 3)
    with torch.no_grad():
        m.bias.normal_(0, 3.0)
        m.weight[0] = 0.0  # a degenerate class: zero logit, zero gradient
    x = torch.cat([_shell(torch.float32), torch.zeros(1, 4), m.planes()[0].detach()])
    x.requires_grad_(True)
    m(x).sum().backward()
    for t in (x.grad, m.weight.grad, m.bias.grad):
        assert t is not None and bool(torch.isfinite(t).all())


def test_mlr_learns_a_separable_problem() -> None:
    """Three clusters in the ball, at distance ~3 from the origin: 60 Adam steps suffice."""
    g = torch.Generator().manual_seed(0)
    centres = P.expmap0(torch.tensor([[1.5, 0.0], [-0.75, 1.3], [-0.75, -1.3]]))
    labels = torch.arange(3).repeat_interleave(40)
    noise = P.expmap0(0.15 * torch.randn(120, 2, generator=g))
    x = P.mobius_add(centres[labels], noise)
    torch.manual_seed(0)
    m = HyperbolicMLR(2, 3)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    acc = (m(x).detach().argmax(-1) == labels).float().mean()
    assert float(acc) >= 0.95 and float(loss.detach()) < 0.3


def test_mlr_shared_learnable_ball_and_dtypes() -> None:
    ball = P.PoincareBall(0.5, learnable=True)
    m = HyperbolicMLR(3, 2, c=ball)
    assert m.ball is ball
    x = _points(4, 3, torch.float32, 1.0)
    m(x).sum().backward()
    assert ball.log_c.grad is not None and bool(torch.isfinite(ball.log_c.grad))
    assert m(x.half()).dtype == torch.float16
    assert m(x.double()).dtype == torch.float64
    with P.upcast(torch.float64):
        assert m(x).dtype == torch.float32


def test_mlr_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes must be > 0"):
        HyperbolicMLR(3, 0)
    with pytest.raises(TypeError, match="in_features must be an int"):
        HyperbolicMLR(2.0, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="c must be"):
        HyperbolicMLR(3, 2, c=0.0)
    m = HyperbolicMLR(3, 2)
    with pytest.raises(ValueError, match="x must have last dimension 3"):
        m(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        m(torch.zeros(4, 3, dtype=torch.int64))


def test_ops_compile_and_vmap() -> None:
    """fullgraph torch.compile and vmap run the ops and the module as eager code does. The
    ``eager`` backend traces with Dynamo (a graph break fails ``fullgraph``); AOTAutograd
    (``aot_eager``) only for ``dist2plane``, to keep the test short."""
    x = _points(3, 4, torch.float32, 3.0)
    p = _points(3, 4, torch.float32, 1.0, seed=1)
    a = _normals(3, 4, torch.float32)
    t = torch.tensor([[0.2], [0.7], [1.4]])
    m = HyperbolicMLR(4, 5)
    cases: list[tuple[Callable[..., Tensor], tuple[Tensor, ...], str]] = [
        (dist2plane, (x, p, a), "aot_eager"),
        (geodesic, (t, x, p), "eager"),
        (geodesic_unit, (t, x, a), "eager"),
        (lambda q: mobius_fn_apply(torch.tanh, q), (x,), "eager"),
        (m, (x,), "eager"),
    ]
    for fn, args, backend in cases:
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
        leaves = [q.clone().requires_grad_(True) for q in args]
        out = compiled(*leaves)
        out.sum().backward()  # type: ignore[no-untyped-call]
        torch.testing.assert_close(out, fn(*args))
        torch.testing.assert_close(torch.func.vmap(fn)(*args), fn(*args))


def test_report_rows_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report rows of verification.report_planes draw, call and score (two samples per
    band, float32), and pass the contract at every band."""
    from verification import report, report_planes

    for spec in report_planes.SPECS:
        monkeypatch.setitem(report.OPS, spec.name, spec)
    names = [s.name for s in report_planes.SPECS]
    result = report.measure(ops=names, dtypes=[torch.float32], samples=2)
    for name in names:
        assert report.format_report(result).count(name) >= 2
        top = result.max_radius["float32"][1]
        assert result.usable("poincare", name, "float32") >= top * (1 - 1e-9), name
