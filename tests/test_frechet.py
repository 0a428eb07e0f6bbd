"""The weighted Fréchet mean (:func:`poincare._frechet.frechet_mean`): accuracy against the mpmath
mean by radius band in both dtypes, shapes and errors, degenerate inputs, gradients (``gradcheck``
and the mpmath implicit derivative), and the program transforms (``torch.compile``, ``vmap``).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DTYPE_PARAMS, HULP_BOUND

import poincare
from poincare import frechet_mean
from poincare._frechet import NEWTON_STEPS
from verification import metrics
from verification import reference as ref
from verification import reference_means as ref_means


def _points(
    shape: tuple[int, ...], dtype: torch.dtype, radius: float, c: float = 1.0, seed: int = 0
) -> torch.Tensor:
    """Points at hyperbolic radii uniform in ``[0, radius]`` (the first of every set exactly at
    ``radius``), projected in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(shape, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    r = torch.rand((*shape[:-1], 1), generator=g, dtype=torch.float64) * radius
    r[..., 0, :] = radius
    x = poincare.expmap0(u * r / 2, c=c).to(dtype)
    return poincare.project(x, c=c)


def _score(
    m: torch.Tensor, x: torch.Tensor, w: torch.Tensor, c: float, dtype: torch.dtype
) -> float:
    """The largest error in hULP of the means ``m`` (B, D) of ``x`` (B, N, D) against mpmath
    (allowance: the hULP of every point of nonzero weight, as the report scores it)."""
    worst = 0.0
    for mr, xr, wr in zip(ref.to_mp(m), ref.to_mp(x), ref.to_mp(w), strict=True):
        exact = ref_means.frechet_mean(xr, wr, c)
        allow = [metrics.hulp(p, c, dtype) for p, v in zip(xr, wr, strict=True) if v != 0]
        worst = max(worst, metrics.point_error(mr, exact, c, dtype, allow))
    return worst


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.6, 1.0])
def test_matches_mpmath_by_radius(dtype: torch.dtype, fraction: float) -> None:
    """Within 16 hULP of the mpmath mean, points up to the representable radius (weights with
    a zero, a tiny and a huge one)."""
    c = 1.0
    radius = poincare.max_radius(dtype, c=c) * fraction
    x = _points((3, 4, 3), dtype, radius, seed=int(fraction * 100))
    w = torch.tensor([[1.0, 0.0, 0.5, 0.25], [1e-6, 1.0, 1.0, 1.0], [3.0, 1e5, 0.1, 1.0]])
    m = frechet_mean(x, w.to(dtype), c=c)
    assert m.dtype == dtype
    assert _score(m, x, w.to(dtype), c, dtype) <= HULP_BOUND


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("c", [1e-4, 0.3, 100.0])
def test_matches_mpmath_across_curvatures(dtype: torch.dtype, c: float) -> None:
    """The contract at curvatures from 1e-4 to 100, on the outermost shells of the dtype."""
    x = _points((2, 3, 2), dtype, poincare.max_radius(dtype, c=c), c=c, seed=3)
    w = torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, 0.01]], dtype=dtype)
    m = frechet_mean(x, w, c=c)
    assert _score(m, x, w, c, dtype) <= HULP_BOUND


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_shell_points_unequal_weights(dtype: torch.dtype) -> None:
    """Points on the outermost shell with unequal weights: the case where the Einstein midpoint
    lies tens of curvature radii from the mean (the line search and the geodesic tree start
    bring it back within the fixed step count)."""
    r = poincare.max_radius(dtype)
    x = _points((2, 4, 2), dtype, r, seed=11)
    x = poincare.project(x / x.norm(dim=-1, keepdim=True) * 2, c=1.0)  # all on the shell
    w = torch.tensor([[0.0, 0.0708, 0.0178, 0.712], [1.0, 5.8e-6, 0.0, 0.0]], dtype=dtype)
    m = frechet_mean(x, w)
    assert _score(m, x, w, 1.0, dtype) <= HULP_BOUND


def test_iteration_counts() -> None:
    """The documented step counts (a fixed Python number per result dtype)."""
    assert NEWTON_STEPS[torch.float64] == 8
    assert NEWTON_STEPS[torch.float32] == 5


# ---------------------------------------------------------------------------------------------
# Shapes, dtypes, errors
# ---------------------------------------------------------------------------------------------


def test_shapes_dim_keepdim_and_broadcast() -> None:
    x = _points((2, 5, 3), torch.float64, 3.0)
    w = torch.rand(2, 5, dtype=torch.float64)
    m = frechet_mean(x, w)
    assert m.shape == (2, 3)
    mt = frechet_mean(x.transpose(0, 1), w.transpose(0, 1), dim=0, keepdim=True)
    assert mt.shape == (1, 2, 3)
    torch.testing.assert_close(mt[0], m, rtol=0, atol=1e-15)
    assert frechet_mean(x, keepdim=True).shape == (2, 1, 3)
    torch.testing.assert_close(frechet_mean(x), frechet_mean(x, torch.ones(5)), rtol=0, atol=0)
    # weights with an extra leading dimension: one mean per weight row
    ww = torch.rand(4, 1, 5, dtype=torch.float64)
    mb = frechet_mean(x, ww)
    assert mb.shape == (4, 2, 3)
    torch.testing.assert_close(mb[1], frechet_mean(x, ww[1].expand(2, 5)), rtol=0, atol=0)
    assert frechet_mean(x, ww, keepdim=True).shape == (4, 2, 1, 3)
    # a tensor curvature per mean
    c = torch.tensor([[0.5], [2.0]], dtype=torch.float64)
    xc = poincare.project(x, c=c.unsqueeze(-1))
    mc = frechet_mean(xc, w, c=c)
    torch.testing.assert_close(mc[1], frechet_mean(xc[1], w[1], c=2.0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    x = _points((2, 3, 2), torch.float64, 2.0).to(dtype)
    m = frechet_mean(x)
    assert m.dtype == dtype
    assert bool(torch.isfinite(m).all())
    m2 = frechet_mean(x, torch.ones(2, 3, dtype=torch.float64))
    assert m2.dtype == torch.float64


def test_errors() -> None:
    x = _points((2, 3, 2), torch.float64, 2.0)
    with pytest.raises(ValueError, match="dim"):
        frechet_mean(x, dim=-1)
    with pytest.raises(ValueError, match="dim"):
        frechet_mean(x, dim=3)
    with pytest.raises(TypeError, match="dim"):
        frechet_mean(x, dim=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x must have shape"):
        frechet_mean(x[0, 0])
    with pytest.raises(TypeError, match="x"):
        frechet_mean(x.long())
    with pytest.raises(ValueError, match="weights"):
        frechet_mean(x, torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="weights"):
        frechet_mean(x, torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="weights"):
        frechet_mean(x, torch.tensor([1.0, math.nan, 1.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="weights"):
        frechet_mean(x, torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="c must be"):
        frechet_mean(x, c=-1.0)
    with pytest.raises(ValueError, match="c of shape"):
        frechet_mean(x, c=torch.ones(3, 1, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Degenerate inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_degenerate_inputs(dtype: torch.dtype) -> None:
    """All-zero weights give the origin with zero gradients; one nonzero weight selects its
    point; equal points give that point; a single point is its own mean. Gradients finite."""
    x = _points((4, 3, 2), dtype, poincare.max_radius(dtype), seed=5)
    x[2] = x[2, :1]  # three equal points (on the outermost shell)
    w = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 1.0, 3.0], [1.0, 1.0, 1.0]])
    w = w.to(dtype)
    xl, wl = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    m = frechet_mean(xl, wl)
    assert torch.equal(m[0], torch.zeros(2, dtype=dtype))
    assert _score(m[1:2], x[1:2], w[1:2], 1.0, dtype) <= 1.0
    assert _score(m[2:3], x[2:3], w[2:3], 1.0, dtype) <= 1.0
    (m * torch.arange(1.0, 9.0, dtype=dtype).reshape(4, 2)).sum().backward()  # type: ignore[no-untyped-call]
    assert xl.grad is not None and wl.grad is not None
    assert bool(torch.isfinite(xl.grad).all()) and bool(torch.isfinite(wl.grad).all())
    assert torch.equal(xl.grad[0], torch.zeros_like(xl.grad[0]))
    assert torch.equal(wl.grad[0], torch.zeros_like(wl.grad[0]))
    single = frechet_mean(x[:, :1])
    assert _score(single, x[:, :1], torch.ones(4, 1, dtype=dtype), 1.0, dtype) <= 1.0


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


def test_gradcheck_float64() -> None:
    """Points, weights and a per-mean tensor curvature, at moderate radius."""
    c = torch.tensor([[0.7], [1.3]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = poincare.expmap0(torch.randn(2, 4, 3, generator=g, dtype=torch.float64) * 0.8, c=c[:, None])
    w = torch.rand(2, 4, generator=g, dtype=torch.float64) + 0.05

    def fn(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return frechet_mean(a, b, c=k)

    leaves = (x.requires_grad_(True), w.requires_grad_(True), c.requires_grad_(True))
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gradients_match_mpmath(dtype: torch.dtype) -> None:
    """The implicit backward pass against the mpmath implicit derivative (numerical Jacobians of
    the textbook ``Σ w log_m x``), far out and with a zero weight, for a tensor ``c``."""
    c = torch.tensor([[0.7], [1.3]], dtype=dtype)
    radius = 0.8 * poincare.max_radius(dtype, c=1.3)
    x = torch.cat([_points((1, 4, 3), dtype, radius, c=float(c[i]), seed=20 + i) for i in range(2)])
    w = torch.tensor([[1.0, 0.0, 0.3, 2.0], [0.5, 0.5, 1.0, 1e-3]], dtype=dtype)
    gm = torch.tensor([[0.3, -1.0, 0.5], [1.0, 0.2, -0.7]], dtype=dtype)
    xl, wl, cl = (t.clone().requires_grad_(True) for t in (x, w, c))
    (frechet_mean(xl, wl, c=cl) * gm).sum().backward()  # type: ignore[no-untyped-call]
    assert xl.grad is not None and wl.grad is not None and cl.grad is not None
    # float32: the gradient is exact for inputs a few float steps away (their hULP)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for b in range(2):
        cb = ref.to_mp(c[b, 0])
        dp, dw, dc = ref_means.grad_frechet_mean(
            ref.to_mp(x[b]), ref.to_mp(w[b]), ref.to_mp(gm[b]), cb
        )
        ex = torch.tensor([[float(v) for v in r] for r in dp], dtype=torch.float64)
        ew = torch.tensor([float(v) for v in dw], dtype=torch.float64)
        assert float((xl.grad[b].double() - ex).norm() / ex.norm()) <= tol
        assert float((wl.grad[b].double() - ew).norm() / ew.norm()) <= tol
        assert abs(float(cl.grad[b, 0]) - float(dc)) <= tol * abs(float(dc))


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_gradients_finite_on_the_shell(dtype: torch.dtype) -> None:
    """Finite gradients for points on the outermost shell (antipodal pairs included)."""
    x = _points((3, 4, 3), dtype, poincare.max_radius(dtype), seed=9)
    x = poincare.project(x / x.norm(dim=-1, keepdim=True) * 2)
    x[1, 1] = -x[1, 0]
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [1e-8, 1.0, 0.0, 3.0]])
    xl, wl = x.clone().requires_grad_(True), w.to(dtype).requires_grad_(True)
    m = frechet_mean(xl, wl)
    m.sum().backward()  # type: ignore[no-untyped-call]
    assert xl.grad is not None and wl.grad is not None
    assert bool(torch.isfinite(xl.grad).all()) and bool(torch.isfinite(wl.grad).all())


# ---------------------------------------------------------------------------------------------
# Program transforms
# ---------------------------------------------------------------------------------------------


def test_compile_fullgraph_forward_and_backward() -> None:
    """One graph (``fullgraph=True``) forward and backward, with the eager results."""
    x = _points((3, 5, 4), torch.float32, 10.0, seed=1)
    w = torch.rand(3, 5, generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(frechet_mean, fullgraph=True, backend="eager")
    xe, we = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    eager = frechet_mean(xe, we)
    eager.sum().backward()  # type: ignore[no-untyped-call]
    xc, wc = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = compiled(xc, wc)
    out.sum().backward()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(out, eager, rtol=0, atol=1e-7)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(wc.grad, we.grad, rtol=1e-6, atol=1e-6)


def test_vmap_and_grad() -> None:
    """``torch.func.vmap`` over a batch dimension the op never sees, and ``vmap(grad)``."""
    x = _points((3, 5, 4), torch.float64, 20.0, seed=4)
    w = torch.rand(3, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = torch.func.vmap(lambda a, b: frechet_mean(a, b))(x, w)
    torch.testing.assert_close(got, frechet_mean(x, w), rtol=0, atol=1e-15)
    gx = torch.func.vmap(torch.func.grad(lambda a, b: frechet_mean(a, b).sum()))(x, w)
    xl = x.clone().requires_grad_(True)
    frechet_mean(xl, w).sum().backward()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(gx, xl.grad, rtol=1e-12, atol=1e-12)
