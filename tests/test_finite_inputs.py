"""Finite inputs of any magnitude give finite, documented, correct results or a clear error.

One test per case that once returned the origin, NaN or an unnamed error: huge and tiny
vectors, matrices, weights and scalars, extreme curvatures, half-precision points on the
boundary, points of the wrong sheet, degenerate weights, shapes that do not fit, meta tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import poincare

F32, F64 = torch.float32, torch.float64


def _assert_on_shell(p: Tensor, direction: Tensor, c: float = 1.0) -> None:
    assert bool(torch.isfinite(p).all())
    poincare.check_point(p, c=c)
    r = poincare.dist0(p.to(F64), c=c)
    assert bool((r > poincare.max_radius(p.dtype, c=c) - 1.0).all()), r
    cos = (p.to(F64) * direction.to(F64)).sum(-1) / (
        p.to(F64).norm(dim=-1) * direction.to(F64).norm(dim=-1)
    )
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-6)


V = torch.tensor([[0.3, -0.2, 0.5, 0.1], [1.0, 2.0, -1.0, 0.5]])
X = poincare.expmap0(V * 0.4)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("scale", [1e20, 1e30, 3e37])
def test_expmap0_of_long_vectors_lands_on_the_shell(dtype: torch.dtype, scale: float) -> None:
    v = V.to(dtype) * scale
    _assert_on_shell(poincare.expmap0(v), v)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_expmap0_of_tiny_vectors_is_the_vector(dtype: torch.dtype) -> None:
    tiny = torch.finfo(dtype).tiny
    v = V.to(dtype) * tiny * 2.0**-10  # subnormal coordinates
    assert bool((poincare.expmap0(v) == v).all())
    torch.testing.assert_close(poincare.logmap0(v), v, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_mobius_matvec_of_huge_matrices(dtype: torch.dtype) -> None:
    m = torch.tensor([[1.0, 0.5, -0.2, 0.0], [0.3, -1.0, 0.2, 0.7], [0.0, 0.1, 0.2, 0.3]])
    m, x = m.to(dtype), X.to(dtype)
    big = torch.finfo(dtype).max / 8
    for scale in (1e20, big):
        out = poincare.mobius_matvec(m * scale, x)
        _assert_on_shell(out, x.to(F64) @ m.to(F64).T)
    # tiny matrices: M (x) x = exp_0(M log_0 x), which is M log_0 x itself when it is tiny
    tiny = poincare.mobius_matvec(m * 1e-30, x)
    want = (poincare.logmap0(x).to(F64) @ m.to(F64).T * 1e-30).to(dtype)
    torch.testing.assert_close(tiny, want)


def test_expmap_float64_of_huge_tangents() -> None:
    x, v = X.to(F64), V.to(F64)
    far = poincare.expmap(x, v * 1e200)
    assert bool(torch.isfinite(far).all())
    poincare.check_point(far)
    # every step long enough to saturate lands on the same boundary point
    unit = v / v.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(far, poincare.expmap(x, unit * 1e3))
    torch.testing.assert_close(poincare.expmap(x.float(), (v * 1e30).float()), far.float())


@pytest.mark.parametrize("dtype", [F32, F64])
def test_dist_of_points_far_outside_is_finite(dtype: torch.dtype) -> None:
    x = torch.tensor([1e20, 0.0, 0.0, 0.0], dtype=dtype)
    d = poincare.dist(x, torch.zeros(4, dtype=dtype))
    # documented: finite, with the gap of an outside point taken at the outermost shell
    assert bool(torch.isfinite(d)) and float(d) >= poincare.max_radius(dtype), d
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(poincare.dist(x, torch.zeros(4, dtype=dtype)), x)
    assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("scale", [1e20, 1e-23, 3e38, 1e-40])
def test_midpoint_does_not_depend_on_the_scale_of_the_weights(
    dtype: torch.dtype, scale: float
) -> None:
    g = torch.Generator().manual_seed(0)
    x = poincare.expmap0(torch.randn(3, 5, 4, generator=g, dtype=F64)).to(dtype)
    w = torch.rand(3, 5, generator=g, dtype=F64).to(dtype)
    scaled = (w.to(F64) * scale).to(dtype)
    # (the exact midpoint of the weights as stored: subnormal float32 weights are rounded)
    want = poincare.einstein_midpoint(x.to(F64), scaled.to(F64) / scale).to(dtype)
    got = poincare.einstein_midpoint(x, scaled)
    assert bool(torch.isfinite(got).all())
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got, want, rtol=16 * eps, atol=16 * eps)


def test_curvature_outside_the_dtype_range_is_an_error() -> None:
    x, y = X.float(), X.flip(0).float()
    with pytest.raises(ValueError, match=r"c must be a curvature in \[.*\] for float32"):
        poincare.dist(x, y, c=1e-300)
    with pytest.raises(ValueError, match="for float32"):
        poincare.expmap0(V, c=1e39)
    with pytest.raises(ValueError, match="for float32"):
        poincare.dist(x, y, c=torch.tensor(1e-30))
    # float64 points take a far wider range
    d = poincare.dist(x.double(), y.double(), c=1e-100)
    assert bool(torch.isfinite(d).all())
    lo, hi = poincare.curvature_range(F32)
    for c in (lo, hi):
        out = poincare.mobius_add(x * (1 / math.sqrt(c)), y * (1 / math.sqrt(c)), c=c)
        poincare.check_point(out, c=c)
    with pytest.raises(ValueError, match="too large for a float"):
        poincare.dist(x, y, c=10**400)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_mobius_scalar_mul_by_huge_and_tiny_factors(dtype: torch.dtype) -> None:
    x = X.to(dtype)
    _assert_on_shell(poincare.mobius_scalar_mul(1e39, x), x)
    _assert_on_shell(poincare.mobius_scalar_mul(10**400, x), x)
    _assert_on_shell(poincare.mobius_scalar_mul(torch.tensor(3e38, dtype=dtype), x), x)
    _assert_on_shell(poincare.mobius_scalar_mul(-1e39, x), -x)
    tiny = poincare.mobius_scalar_mul(1e-30, x)
    want = (poincare.logmap0(x).to(F64) * 1e-30).to(dtype)
    torch.testing.assert_close(tiny, want)
    assert bool((poincare.mobius_scalar_mul(0.0, x) == 0).all())


def test_non_finite_scalars_are_errors() -> None:
    with pytest.raises(ValueError, match="r must be finite"):
        poincare.mobius_scalar_mul(torch.tensor(float("nan")), X)
    with pytest.raises(ValueError, match="r must be finite"):
        poincare.mobius_scalar_mul(float("inf"), X)


def test_half_precision_points_on_the_boundary() -> None:
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]], dtype=dtype)  # |x| = 1
        y = torch.tensor([[0.0, 0.5], [-0.3, 0.1], [0.2, 0.2]], dtype=dtype)
        v = torch.tensor([[1.0, 1.0], [0.5, -2.0], [3.0, 0.0]], dtype=dtype)
        lam = poincare.conformal_factor(x)
        eps = torch.finfo(dtype).eps
        assert bool(torch.isfinite(lam).all()) and float(lam.max()) <= 4 / eps * 1.01
        for out in (
            poincare.transp(x, y, v),
            poincare.transp(y, x, v),
            poincare.poincare_to_lorentz(x),
            poincare.logmap(y, x),
            poincare.logmap(x, y),
        ):
            assert out.dtype == dtype and bool(torch.isfinite(out).all()), out
        h = poincare.poincare_to_lorentz(x).double()
        assert bool((h[..., 0] > 0).all())


def test_lorentz_points_of_the_lower_sheet_are_an_error() -> None:
    h = poincare.poincare_to_lorentz(X)
    with pytest.raises(ValueError, match="upper sheet"):
        poincare.lorentz_to_poincare(-h)
    # traced code does not check: the mirror image
    traced = torch.func.vmap(poincare.lorentz_to_poincare)(
        torch.stack([h * torch.tensor([-1.0, 1, 1, 1, 1])])
    )
    torch.testing.assert_close(traced[0], poincare.lorentz_to_poincare(h))


# ---------------------------------------------------------------------------------------------
# Degenerate weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64])
def test_midpoint_of_zero_weights_has_finite_zero_gradients(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = poincare.expmap0(torch.randn(3, 4, 2, generator=g, dtype=F64) * 3).to(dtype)
    w = torch.rand(3, 4, generator=g, dtype=F64).to(dtype)
    w[1] = 0  # one all-zero row in the batch
    ball = poincare.PoincareBall(1.3, learnable=True)
    for weights in (w, torch.zeros_like(w)):
        xl = x.clone().requires_grad_(True)
        wl = weights.clone().requires_grad_(True)
        m = poincare.einstein_midpoint(xl, wl, c=ball.curvature)
        assert bool((m[1] == 0).all())
        ball.zero_grad()
        (m * torch.arange(1.0, 3.0, dtype=dtype)).sum().backward()
        for name, grad in (("x", xl.grad), ("weights", wl.grad), ("c", ball.log_c.grad)):
            assert grad is not None and bool(torch.isfinite(grad).all()), name
        assert xl.grad is not None and wl.grad is not None
        assert bool((xl.grad[1] == 0).all()) and bool((wl.grad[1] == 0).all())
    assert ball.log_c.grad is not None and float(ball.log_c.grad) == 0.0


# ---------------------------------------------------------------------------------------------
# Errors that name the argument
# ---------------------------------------------------------------------------------------------


def test_shapes_that_do_not_broadcast_name_the_arguments() -> None:
    x, y = torch.zeros(3, 4), torch.zeros(5, 4)
    with pytest.raises(ValueError, match=r"y of shape \(5, 4\) does not broadcast against x"):
        poincare.mobius_add(x, y)
    with pytest.raises(ValueError, match=r"v of shape"):
        poincare.transp(x, x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"c of shape \(5, 1\) does not broadcast"):
        poincare.dist(x, x, c=torch.ones(5, 1))


def test_bad_tensors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        poincare.dist0(torch.tensor(0.5))
    with pytest.raises(ValueError, match="y must have at least one dimension"):
        poincare.dist(torch.zeros(2), torch.tensor(0.5))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got list"):
        poincare.dist0([0.1, 0.2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"v must be a torch\.Tensor"):
        poincare.expmap0([0.1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty last dimension"):
        poincare.pairwise_dist(torch.zeros(3, 0), torch.zeros(2, 0))
    with pytest.raises(ValueError, match="non-empty last dimension"):
        poincare.mobius_add(torch.zeros(3, 0), torch.zeros(3, 0))


def test_meta_tensors_propagate_shapes() -> None:
    x = torch.empty(7, 3, 4, device="meta")
    w = torch.empty(7, 3, device="meta")
    assert poincare.mobius_add(x, x).shape == (7, 3, 4)
    assert poincare.dist(x, x).shape == (7, 3)
    assert poincare.pairwise_dist(x, x).shape == (7, 3, 3)
    assert poincare.einstein_midpoint(x, w).shape == (7, 4)
    assert poincare.expmap(x, x, c=torch.ones((), device="meta")).shape == (7, 3, 4)
    assert poincare.lorentz_to_poincare(x).shape == (7, 3, 3)


def test_project_keeps_a_point_inside_the_outermost_shell() -> None:
    """A point with ``c x^2 = 1 - 2.27e-16`` (inside the ball and the shell) is unchanged."""
    c = 1.5859375
    x = torch.tensor([[float.fromhex("0x1.968fe7fcbc549p-1")], [5.0], [-0.1]], dtype=F64)
    p = poincare.project(x, c=c)
    assert p[0].item() == x[0].item() and p[2].item() == x[2].item()
    poincare.check_point(p, c=c)


def test_midpoint_weights_with_more_leading_dimensions() -> None:
    """Weights may carry batch dimensions that the points do not have (one midpoint each)."""
    g = torch.Generator().manual_seed(2)
    x = poincare.expmap0(torch.randn(5, 4, 3, generator=g))
    w = torch.rand(2, 5, 4, generator=g)
    m = poincare.einstein_midpoint(x, w, dim=0)
    assert m.shape == (2, 4, 3)
    torch.testing.assert_close(m[1], poincare.einstein_midpoint(x, w[1], dim=0))
