"""Unit tests of the ``poincare`` core: known values, containment, dtypes, errors, gradients."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import mpmath
import pytest
import torch
from torch import Tensor

import poincare as P
from verification import metrics
from verification import reference as ref

DTYPES = [torch.float32, torch.float64]


def _points(n: int, d: int, dtype: torch.dtype, radius: float, seed: int = 0) -> Tensor:
    """``n`` points of hyperbolic radius exactly ``radius`` (c = 1) in random directions."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    return P.project((math.tanh(radius / 2) * u).to(dtype))


def _shell(dtype: torch.dtype, d: int = 4, n: int = 3) -> Tensor:
    return P.project(torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 9)


# ---------------------------------------------------------------------------------------------
# Known values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_dist0_of_tanh_half_is_one(dtype: torch.dtype) -> None:
    x = torch.tensor([math.tanh(0.5), 0.0], dtype=dtype)
    assert P.dist0(x).item() == pytest.approx(1.0, rel=4 * torch.finfo(dtype).eps)
    assert P.dist(torch.zeros(2, dtype=dtype), x).item() == pytest.approx(
        1.0, rel=4 * torch.finfo(dtype).eps
    )


def test_curvature_scales_distances() -> None:
    x = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)
    y = torch.tensor([-0.2, 0.25, 0.05], dtype=torch.float64)
    c = 4.0
    # Scaling points by 1/sqrt(c) maps the unit ball isometrically up to a factor 1/sqrt(c).
    d1 = P.dist(x, y, c=1.0)
    dc = P.dist(x / 2, y / 2, c=c)
    assert torch.allclose(dc, d1 / 2, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_identities_at_the_origin(dtype: torch.dtype) -> None:
    x = _points(5, 3, dtype, 2.0)
    zero = torch.zeros_like(x)
    ulp2 = 2 * torch.finfo(dtype).eps
    assert torch.allclose(P.mobius_add(x, zero), x, rtol=ulp2, atol=0)
    assert torch.allclose(P.mobius_add(zero, x), x, rtol=ulp2, atol=0)
    assert torch.all(P.dist(x, x) == 0)
    assert torch.all(P.pairwise_dist(x, x).diagonal() == 0)
    assert torch.allclose(P.conformal_factor(zero), torch.full((5, 1), 2.0, dtype=dtype))
    assert torch.equal(P.logmap0(zero), zero)
    assert torch.equal(P.expmap0(zero), zero)
    assert torch.equal(
        P.mobius_matvec(torch.zeros(2, 3, dtype=dtype), x), torch.zeros(5, 2, dtype=dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_maps_round_trip(dtype: torch.dtype) -> None:
    tol = 64 * torch.finfo(dtype).eps
    x = _points(6, 4, dtype, 1.5, seed=2)
    y = _points(6, 4, dtype, 2.5, seed=3)
    assert torch.allclose(P.expmap0(P.logmap0(y)), y, atol=tol)
    assert torch.allclose(P.expmap(x, P.logmap(x, y)), y, atol=tol)
    v = P.logmap(x, y)
    lam = P.conformal_factor(x, keepdim=False)
    assert torch.allclose(lam * v.norm(dim=-1), P.dist(x, y), rtol=tol)
    assert torch.allclose(P.expmap(torch.zeros_like(v), v), P.expmap0(v), atol=tol)


def test_max_radius_values() -> None:
    assert P.max_radius(torch.float32) == pytest.approx(17.33, abs=0.01)
    assert P.max_radius(torch.float64) == pytest.approx(37.43, abs=0.01)
    assert P.max_radius(torch.float64, c=4.0) == pytest.approx(37.43 / 2, abs=0.01)
    assert P.max_radius(torch.float16) < P.max_radius(torch.float32)


def test_lorentz_point_is_on_the_hyperboloid() -> None:
    x = _points(8, 3, torch.float64, 6.0)
    for c in (1.0, 0.3):
        h = P.poincare_to_lorentz(x / math.sqrt(c), c=c)
        minkowski = -(h[..., 0] ** 2) + (h[..., 1:] ** 2).sum(-1)
        assert torch.allclose(minkowski * c, torch.full((8,), -1.0, dtype=torch.float64), rtol=1e-9)
        assert torch.all(h[..., 0] > 0)


def test_einstein_midpoint_basic_cases() -> None:
    x = _points(4, 3, torch.float64, 3.0)
    assert torch.allclose(P.einstein_midpoint(x[:1]), x[0], atol=1e-15)
    one_hot = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(P.einstein_midpoint(x, one_hot), x[2], atol=1e-14)
    assert torch.equal(
        P.einstein_midpoint(x, torch.zeros(4, dtype=torch.float64)),
        torch.zeros(3, dtype=torch.float64),
    )
    # dim and keepdim: points along dim 0 of a (N, B, D) tensor.
    stacked = torch.stack([x, x.flip(0)], dim=1)  # (4, 2, 3)
    m = P.einstein_midpoint(stacked, dim=0, keepdim=True)
    assert m.shape == (1, 2, 3)
    assert torch.allclose(m[0, 0], m[0, 1], atol=1e-14)
    # two points, equal weights: equidistant from both
    a, b = x[0], x[1]
    mid = P.einstein_midpoint(torch.stack([a, b]))
    assert torch.allclose(P.dist(mid, a), P.dist(mid, b), rtol=1e-12)
    assert torch.allclose(P.dist(mid, a) * 2, P.dist(a, b), rtol=1e-12)


def test_gyration_and_transport_are_isometries() -> None:
    a, b = _points(5, 4, torch.float64, 4.0, 5), _points(5, 4, torch.float64, 3.0, 6)
    u = torch.randn(5, 4, dtype=torch.float64)
    v = torch.randn(5, 4, dtype=torch.float64)
    assert torch.allclose(P.gyration(a, b, u).norm(dim=-1), u.norm(dim=-1), rtol=1e-13)
    tu, tv = P.transp(a, b, u), P.transp(a, b, v)
    ball = P.PoincareBall()
    assert torch.allclose(ball.inner(b, tu, tv), ball.inner(a, u, v), rtol=1e-9)
    assert torch.allclose(P.transp0(b, u), P.transp(torch.zeros_like(b), b, u), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Containment and projection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_reaches_the_outermost_shell(dtype: torch.dtype) -> None:
    x = torch.randn(2000, 7, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 3
    p = P.project(x)
    P.check_point(p)  # exact containment test
    r = P.dist0(p)
    # Off the axes, rounding of the coordinates decides how close to 1 the norm can get: each
    # doubling of 1 - |x| costs ln 2 of radius. Most points land within one such step.
    assert float(r.min()) > P.max_radius(dtype) - 2.0
    assert float(r.median()) > P.max_radius(dtype) - 0.75
    # axis-aligned points land exactly on the largest float below 1
    e = P.project(torch.tensor([5.0, 0.0], dtype=dtype))
    assert e[0].item() == 1 - torch.finfo(dtype).eps / 2
    assert P.dist0(e).item() == pytest.approx(P.max_radius(dtype), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_eager_and_branch_free_agree_bit_for_bit(dtype: torch.dtype) -> None:
    """The eager projection (which retries only the rows still beyond the shell) and the
    branch-free one (every step on every row) give the same bits: a batch of shape (3, 200, D)
    with a per-row curvature, rows inside, on the shell and far beyond."""
    g = torch.Generator().manual_seed(3)
    c = torch.rand(3, 200, 1, generator=g, dtype=torch.float64) * 10 + 1e-3
    x = torch.randn(3, 200, 9, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True) / c.sqrt()
    x = (x * torch.tensor([0.5, 1.0, 1.0 + 1e-9, 7.0]).repeat(50)[:, None]).to(dtype)
    x[0, :4] = P.project(x[0, :4], c=c[0, :4])  # already on the shell
    eager = P.project(x, c=c)
    with P.branch_free():
        traced = P.project(x, c=c)
    assert torch.equal(eager, traced)
    assert torch.equal(P.project(eager, c=c), eager)
    assert not torch.equal(eager, x)  # the batch did hold rows beyond the shell


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_leaves_interior_points_unchanged(dtype: torch.dtype) -> None:
    x = _points(100, 5, dtype, 10.0)
    assert torch.equal(P.project(x), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1.0, 0.1])
def test_point_ops_stay_strictly_inside(dtype: torch.dtype, c: float) -> None:
    s = _shell(dtype) / math.sqrt(c)
    s = P.project(s, c=c)
    x = _points(3, 4, dtype, 5.0) / math.sqrt(c)
    big_v = torch.randn(3, 4, dtype=dtype) * 50
    outs = [
        P.mobius_add(s, s, c=c),
        P.mobius_add(s, x, c=c),
        P.mobius_sub(s, x, c=c),
        P.mobius_scalar_mul(3.0, s, c=c),
        P.mobius_matvec(torch.eye(4, dtype=dtype) * 5, s, c=c),
        P.expmap0(big_v, c=c),
        P.expmap(s, big_v, c=c),
        P.expmap(x, big_v, c=c),
        P.einstein_midpoint(torch.stack([s, s]), c=c),
        P.klein_to_poincare(P.poincare_to_klein(s, c=c), c=c),
        P.lorentz_to_poincare(P.poincare_to_lorentz(s, c=c), c=c),
        P.gyration(s, x, s, c=c),
    ]
    for o in outs:
        assert o.dtype == dtype
        P.check_point(o, c=c)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_returns_its_dtype(dtype: torch.dtype) -> None:
    x = P.project(torch.randn(10, 4) * 3).to(dtype)
    x = P.project(x)
    y = P.mobius_add(x, x)
    assert y.dtype == dtype
    P.check_point(y)
    assert P.dist(x, y).dtype == dtype
    ref = P.dist(x.float(), y.float())
    assert torch.allclose(P.dist(x, y).float(), ref, rtol=1e-2)


# ---------------------------------------------------------------------------------------------
# upcast
# ---------------------------------------------------------------------------------------------


def test_upcast_computes_in_float64_and_returns_float32() -> None:
    x = _points(50, 4, torch.float32, 12.0, 1)
    y = _points(50, 4, torch.float32, 12.0, 2)
    with P.upcast(torch.float64):
        d = P.dist(x, y)
        a = P.mobius_add(x, y)
    assert d.dtype == torch.float32 and a.dtype == torch.float32
    assert torch.equal(d, P.dist(x.double(), y.double()).float())
    assert torch.equal(a, P.project(P.mobius_add(x.double(), y.double()).float()))
    # outside the scope the float32 path is used again: the policy is restored, and at radius
    # 12 the float32 computation differs from the float64 one in some of the 50 pairs
    assert P.current_upcast() is None and P.compute_dtype(torch.float32) == torch.float32
    assert not torch.equal(P.dist(x, y), d)

    @P.upcast(torch.float64)
    def f(p: Tensor, q: Tensor) -> Tensor:
        return P.dist(p, q)

    assert torch.equal(f(x, y), d)


def test_upcast_nests_and_restores() -> None:
    from poincare._precision import current_upcast

    assert current_upcast() is None
    with P.upcast(torch.float64):
        with P.upcast(torch.float32):
            assert current_upcast() == torch.float32
        assert current_upcast() == torch.float64
    assert current_upcast() is None


def test_upcast_gradients_flow_back_in_input_dtype() -> None:
    x = _points(4, 3, torch.float32, 8.0).requires_grad_()
    with P.upcast(torch.float64):
        P.dist0(x).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------
# pairwise_dist
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_dist_matches_dist_including_close_pairs(dtype: torch.dtype) -> None:
    x = _points(20, 6, dtype, 9.0, 3)
    close = x + torch.randn_like(x) * (1e-6 if dtype == torch.float32 else 1e-13) * x.abs()
    y = P.project(torch.cat([close, _points(5, 6, dtype, 4.0, 4)]))
    pw = P.pairwise_dist(x, y)
    ref = P.dist(x[:, None, :], y[None, :, :])
    eps = torch.finfo(dtype).eps
    lam = P.conformal_factor(x)  # (N, 1)
    # error bound in units of the hyperbolic ulp of the inputs (see DESIGN.md)
    assert torch.all((pw - ref).abs() <= 4 * eps * (ref + 2 * lam * x.norm(dim=-1, keepdim=True)))
    assert torch.allclose(P.pairwise_dist(x, y, squared=True), pw * pw, rtol=8 * eps)


def test_pairwise_dist_broadcasts_leading_dims() -> None:
    x = _points(12, 3, torch.float64, 2.0).reshape(2, 1, 6, 3)
    y = _points(15, 3, torch.float64, 2.0, 9).reshape(3, 5, 3)
    out = P.pairwise_dist(x, y)
    assert out.shape == (2, 3, 6, 5)
    assert torch.allclose(out[1, 2], P.dist(x[1, 0][:, None], y[2][None]), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mobius_add": lambda x, y: P.mobius_add(x, y),
    "mobius_sub": lambda x, y: P.mobius_sub(x, y),
    "dist": lambda x, y: P.dist(x, y),
    "dist0": lambda x, y: P.dist0(x),
    "pairwise_dist": lambda x, y: P.pairwise_dist(x, y),
    "pairwise_dist_sq": lambda x, y: P.pairwise_dist(x, y, squared=True),
    "mobius_scalar_mul": lambda x, y: P.mobius_scalar_mul(0.5, x),
    "mobius_matvec": lambda x, y: P.mobius_matvec(torch.eye(4, dtype=x.dtype)[:3], x),
    "expmap0": lambda x, y: P.expmap0(x),
    "logmap0": lambda x, y: P.logmap0(x),
    "expmap": lambda x, y: P.expmap(x, y),
    "logmap": lambda x, y: P.logmap(x, y),
    "gyration": lambda x, y: P.gyration(x, y, y),
    "transp": lambda x, y: P.transp(x, y, y),
    "transp0": lambda x, y: P.transp0(x, y),
    "egrad2rgrad": lambda x, y: P.egrad2rgrad(x, y),
    "einstein_midpoint": lambda x, y: P.einstein_midpoint(torch.cat([x, y])),
    "klein": lambda x, y: P.klein_to_poincare(P.poincare_to_klein(x)),
    "lorentz": lambda x, y: P.lorentz_to_poincare(P.poincare_to_lorentz(x)),
    "conformal_factor": lambda x, y: P.conformal_factor(x),
    "project": lambda x, y: P.project(x * 1.5),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPS))
def test_gradients_are_finite_at_origin_equal_points_and_shell(
    name: str, dtype: torch.dtype
) -> None:
    pts = {
        "origin": torch.zeros(1, 4, dtype=dtype),
        "shell": P.project(torch.tensor([[0.6, 0.8, 0.0, 0.0]], dtype=dtype) * 2),
        "inner": P.expmap0(torch.tensor([[0.3, -0.2, 0.1, 0.5]], dtype=dtype)),
    }
    for a in pts.values():
        for b in pts.values():
            x = a.clone().requires_grad_()
            y = b.clone().requires_grad_()
            out = OPS[name](x, y)
            out.sum().backward()
            assert torch.isfinite(out).all()
            for t in (x, y):
                assert t.grad is None or torch.isfinite(t.grad).all()


def test_gradient_of_logmap_at_equal_points_is_the_identity() -> None:
    x = _points(1, 3, torch.float64, 3.0)[0]
    jac = torch.autograd.functional.jacobian(lambda y: P.logmap(x, y), x.clone())
    assert torch.allclose(jac, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_dist_gradient_matches_finite_differences() -> None:
    x = _points(3, 4, torch.float64, 5.0, 11).requires_grad_()
    y = _points(3, 4, torch.float64, 6.0, 12).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: P.dist(a, b), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: P.mobius_add(a, b), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: P.logmap(a, b), (x, y))
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, ww: P.einstein_midpoint(a, ww), (x, w))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_curvature_is_rejected(c: float) -> None:
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="c must be"):
        P.mobius_add(x, x, c=c)
    with pytest.raises(ValueError, match="c must be"):
        P.dist0(x, c=torch.tensor([c]))
    with pytest.raises(ValueError, match="c must be"):
        P.PoincareBall(c=c)
    with pytest.raises(ValueError, match="c must be"):
        P.max_radius(torch.float32, c=c)


def test_bad_types_are_rejected() -> None:
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        P.dist0(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="y must have a real floating dtype"):
        P.mobius_add(torch.zeros(3), torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"v must be a torch\.Tensor"):
        P.expmap0([0.0, 1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="c must be"):
        P.dist0(torch.zeros(3), c="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype must be"):
        P.upcast(torch.float16)
    with pytest.raises(TypeError, match="dtype must be"):
        P.max_radius(torch.int32)


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="y has last dimension 2"):
        P.mobius_add(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="m has 2 input columns"):
        P.mobius_matvec(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="m must be a 2-D"):
        P.mobius_matvec(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="x must have shape"):
        P.pairwise_dist(torch.zeros(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="dim=5 is out of range"):
        P.einstein_midpoint(torch.zeros(2, 3), dim=5)
    with pytest.raises(ValueError, match="not the last"):
        P.einstein_midpoint(torch.zeros(2, 3), dim=-1)
    with pytest.raises(ValueError, match="weights of shape"):
        P.einstein_midpoint(torch.zeros(4, 3), torch.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        P.einstein_midpoint(torch.zeros(2, 3), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="r must be finite"):
        P.mobius_scalar_mul(float("nan"), torch.zeros(3))
    with pytest.raises(ValueError, match="c must be a scalar or broadcast"):
        P.dist0(torch.zeros(4, 3), c=torch.ones(4))


def test_check_point() -> None:
    P.check_point(torch.tensor([0.6, 0.79]))
    with pytest.raises(ValueError, match="on or outside"):
        P.check_point(torch.tensor([0.6, 0.8]))  # |x| = 1 exactly in float64? (rounded) -> out
    with pytest.raises(ValueError, match="on or outside"):
        P.check_point(torch.tensor([1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="on or outside"):
        P.check_point(torch.tensor([0.5, 0.0]), c=4.0)
    with pytest.raises(ValueError, match="non-finite"):
        P.check_point(torch.tensor([float("nan"), 0.0]))
    # the outermost representable point passes, in both dtypes
    for dtype in DTYPES:
        P.check_point(torch.tensor([1 - torch.finfo(dtype).eps / 2, 0.0], dtype=dtype))


def test_points_outside_give_finite_results() -> None:
    out = torch.tensor([[2.0, 0.0]])
    for f in (P.dist0, P.logmap0, P.conformal_factor):
        assert torch.isfinite(f(out)).all()
    assert torch.isfinite(P.dist(out, -out)).all()
    P.check_point(P.mobius_add(out, out))


# ---------------------------------------------------------------------------------------------
# PoincareBall and geoopt
# ---------------------------------------------------------------------------------------------


def test_poincare_ball_methods_match_functions() -> None:
    ball = P.PoincareBall(c=0.5)
    x = _points(3, 4, torch.float64, 2.0) / math.sqrt(0.5)
    y = _points(3, 4, torch.float64, 3.0, 2) / math.sqrt(0.5)
    x, y = ball.project(x), ball.project(y)
    assert torch.equal(ball.mobius_add(x, y), P.mobius_add(x, y, c=ball.c))
    assert torch.equal(ball.dist(x, y), P.dist(x, y, c=ball.c))
    assert ball.max_radius(torch.float64) == pytest.approx(P.max_radius(torch.float64, c=0.5))
    assert "c=0.5" in repr(ball)


def test_learnable_curvature_stays_positive_and_gets_gradients() -> None:
    ball = P.PoincareBall(c=1.0, learnable=True)
    assert isinstance(ball.log_c, torch.nn.Parameter)
    opt = torch.optim.SGD(ball.parameters(), lr=10.0)
    x = torch.tensor([[0.3, 0.2]])
    y = torch.tensor([[-0.3, 0.1]])
    for _ in range(20):
        opt.zero_grad()
        loss = ball.dist(x, y).sum()  # larger c -> larger distance: pushes c down
        loss.backward()
        assert ball.log_c.grad is not None and torch.isfinite(ball.log_c.grad)
        opt.step()
        assert float(ball.c.detach()) > 0
    assert float(ball.c.detach()) < 1.0
    assert not P.PoincareBall(2.0).learnable and len(list(P.PoincareBall(2.0).parameters())) == 0


def test_geoopt_riemannian_adam_reaches_a_point_near_the_boundary() -> None:
    geoopt = pytest.importorskip("geoopt")
    ball = P.PoincareBall(c=1.0)
    target = _points(1, 5, torch.float64, 12.0, 7)
    start = _points(1, 5, torch.float64, 1.0, 8)
    p = geoopt.ManifoldParameter(start.clone(), manifold=ball)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.2)
    first = float(ball.dist(p.detach(), target))
    for _ in range(300):
        opt.zero_grad()
        loss = ball.dist(p, target).sum()
        loss.backward()
        opt.step()
        P.check_point(p.detach())
    final = float(ball.dist(p.detach(), target))
    assert first > 10
    assert final < 0.05 * first


def test_lorentz_point_of_the_outermost_float32_shell_maps_back_inside() -> None:
    # At c = 0.1 the float steps of the hyperboloid coordinates exceed 1/sqrt(c) near the
    # boundary; the stored point must still be time-like and map back strictly inside.
    c = float(torch.tensor(0.1, dtype=torch.float32))
    hexes = ["-0x1.4e28640000000p+0", "-0x1.d2eba00000000p+0", "-0x1.d6014a0000000p-1"]
    hexes.append("-0x1.0407180000000p+1")
    x = torch.tensor([float.fromhex(h) for h in hexes], dtype=torch.float32)
    h = P.poincare_to_lorentz(x, c=c)
    hd = h.double()
    assert float(-(hd[0] ** 2) + (hd[1:] ** 2).sum()) <= -1 / c
    back = P.lorentz_to_poincare(h, c=c)
    P.check_point(back, c=c)
    assert float(P.dist(back, x, c=c)) < 1.0  # one float step there is worth ~0.7


# ---------------------------------------------------------------------------------------------
# regressions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("free", [False, True], ids=["eager", "branch-free"])
def test_mobius_matvec_of_a_subnormal_point_keeps_its_bits(free: bool) -> None:
    """M x of a subnormal x (48 bits) and a huge M: the row is scaled by an exact power of two
    before the product, so the result is the exact one (it was 17 hULP off)."""
    x = torch.tensor([[-1.1125e-309]], dtype=torch.float64)
    m = torch.tensor([[2.0**977]], dtype=torch.float64)
    with P.branch_free() if free else contextlib.nullcontext():
        y = P.mobius_matvec(m, x)
    with mpmath.workdps(60):
        t = mpmath.mpf(2) ** 977 * mpmath.atanh(mpmath.mpf(x.item()))
        exact = float(mpmath.tanh(t))
    assert y.item() == exact


@pytest.mark.parametrize("free", [False, True], ids=["eager", "branch-free"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expmap0_of_a_vector_near_the_largest_float_lands_on_the_shell(
    free: bool, dtype: torch.dtype
) -> None:
    """At c = 100, s_c |v| of a vector near the largest float overflows: the point is still on
    the outermost shell in the direction of v (it was the origin)."""
    u = torch.tensor([-0.3197, 0.0976, -0.4591, 0.5898, -0.5741], dtype=torch.float64)
    top = {torch.float32: 126, torch.float64: 1020}[dtype]
    v = torch.ldexp(u / u.abs().max(), torch.tensor(top)).to(dtype)
    with P.branch_free() if free else contextlib.nullcontext():
        y = P.expmap0(v, c=100.0)
    shell = 1 - torch.finfo(dtype).eps / 2
    radius = float(y.double().norm()) * 10.0
    assert shell - 4 * torch.finfo(dtype).eps <= radius <= shell
    cos = float((y.double() @ u) / (y.double().norm() * u.norm()))
    assert cos > 1 - 1e-6


@pytest.mark.parametrize("free", [False, True], ids=["eager", "branch-free"])
def test_float32_expmap_uses_the_exact_curvature(free: bool) -> None:
    """A long step from a far-out point at c = 0.1 (not a float32 number): computed in float64
    with the float32 rounding of c, the result lay 11.8 units of distance from the exact one."""
    y = torch.tensor(
        [-0.49882733821868896, 2.9031147956848145, -1.096462368965149, 0.3465273380279541]
    )
    v = torch.tensor(
        [
            0.0004179767274763435,
            -0.0024323456455022097,
            0.0009187171817757189,
            -0.0002902679261751473,
        ]
    )
    with P.branch_free() if free else contextlib.nullcontext():
        out = P.expmap(y, v, c=0.1)
    y_mp, v_mp = ref.to_mp(y.double()), ref.to_mp(v.double())
    budget = metrics.hulp(y_mp, 0.1, torch.float32) + metrics.hulp_tangent(
        y_mp, v_mp, 0.1, torch.float32
    )
    exact = ref.expmap(y_mp, v_mp, 0.1)
    err = metrics.point_error(ref.to_mp(out.double()), exact, 0.1, torch.float32, [budget])
    assert err <= 16, f"{err:.1f} hULP"


@pytest.mark.parametrize("free", [False, True], ids=["eager", "branch-free"])
def test_speed_of_a_far_out_geodesic_keeps_its_relative_accuracy(free: bool) -> None:
    """∂_t of the unit-speed geodesic 30 curvature radii out is sech²(15)/2 = 1.9e-13: taken
    from the rounded tanh as 1 - tanh², it was off by 1.7e-4 relatively."""
    c = 100.0
    t = torch.full((1, 1), 3.0, dtype=torch.float64, requires_grad=True)
    x = torch.zeros(1, 1, dtype=torch.float64)
    v = torch.ones(1, 1, dtype=torch.float64)
    with P.branch_free() if free else contextlib.nullcontext():
        (out,) = torch.autograd.grad(P.geodesic_unit(t, x, v, c=c).sum(), t)
    exact = mpmath.sech(mpmath.mpf(15)) ** 2 / 2
    assert abs(float(out) / float(exact) - 1) < 1e-12
