"""Parallel transport and the Riemannian gradient, in hULP.

Transport is linear in the vector and an isometry between tangent spaces for *any* pair of base
points, so perturbing a base point by ``k`` hULP changes a transported vector by about ``k`` hULP
*relative to its length*: the budgets below are relative to the Riemannian length of the vector,
``16 |v|_x (eps + Σ hulp(base points))`` per op, with ``hulp`` in units of the curvature radius.
"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    HULP_BOUND,
    assert_scalars_close,
    eps,
    hulp,
    note_tensors,
    rows,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification import reference as ref
from verification.strategies import curvatures, dims, directions, points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8


def _lam(x: torch.Tensor, c: float) -> torch.Tensor:
    """λ_x in float64 ``(...)``, from the exact values (mpmath)."""
    return torch.tensor(
        [float(ref.conformal_factor(r, c)) for r in rows(x, x.dim() - 1)], dtype=torch.float64
    ).reshape(x.shape[:-1])


def _vectors(data: st.DataObject, d: int, dtype: torch.dtype, label: str) -> torch.Tensor:
    u = data.draw(directions(d, (B,)), label=label)
    scale = data.draw(
        st.lists(st.floats(-20.0, 20.0), min_size=B, max_size=B), label=f"log2|{label}|"
    )
    return (u * torch.tensor([2.0**s for s in scale], dtype=torch.float64).unsqueeze(-1)).to(dtype)


def _draw(data: st.DataObject, dtype: torch.dtype) -> tuple[float, torch.Tensor, torch.Tensor]:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    return c, x, y


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_transp_preserves_inner_product(dtype: torch.dtype, data: st.DataObject) -> None:
    """λ_y^2 <P u, P v> = λ_x^2 <u, v> for P = transp(x, y, .)."""
    c, x, y = _draw(data, dtype)
    u = _vectors(data, x.shape[-1], dtype, "u")
    v = _vectors(data, x.shape[-1], dtype, "v")
    note_tensors(x=x, y=y, u=u, v=v)
    pu = poincare.transp(x, y, u, c=c).to(torch.float64)
    pv = poincare.transp(x, y, v, c=c).to(torch.float64)
    lx, ly = _lam(x, c), _lam(y, c)
    lhs = ly**2 * (pu * pv).sum(-1)
    rhs = lx**2 * (u.to(torch.float64) * v.to(torch.float64)).sum(-1)
    size = lx**2 * u.to(torch.float64).norm(dim=-1) * v.to(torch.float64).norm(dim=-1)
    rel = HULP_BOUND * (4 * eps(dtype) + 2 * (hulp(x, c, dtype) + hulp(y, c, dtype)))
    assert_scalars_close(lhs, rhs, rel * size, "<Pu, Pv>_y vs <u, v>_x")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_transp0_is_transp_from_origin(dtype: torch.dtype, data: st.DataObject) -> None:
    """transp0(y, v) = transp(0, y, v)."""
    c, _, y = _draw(data, dtype)
    v = _vectors(data, y.shape[-1], dtype, "v")
    note_tensors(y=y, v=v)
    a = poincare.transp0(y, v, c=c).to(torch.float64)
    b = poincare.transp(torch.zeros_like(y), y, v, c=c).to(torch.float64)
    ly = _lam(y, c)
    gap = ly * (a - b).norm(dim=-1)
    length = 2.0 * v.to(torch.float64).norm(dim=-1)  # |v|_0
    bound = 2 * HULP_BOUND * length * (2 * eps(dtype) + hulp(y, c, dtype))
    assert_scalars_close(gap, torch.zeros_like(gap), bound, "transp0 vs transp(0, .)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_transp_roundtrip(dtype: torch.dtype, data: st.DataObject) -> None:
    """transp(y, x, transp(x, y, v)) = v; the first transport's error is carried by the second
    (a linear isometry), so the two budgets add."""
    c, x, y = _draw(data, dtype)
    v = _vectors(data, x.shape[-1], dtype, "v")
    note_tensors(x=x, y=y, v=v)
    pv = poincare.transp(x, y, v, c=c)
    back = poincare.transp(y, x, pv, c=c)
    lx = _lam(x, c)
    gap = lx * (back.to(torch.float64) - v.to(torch.float64)).norm(dim=-1)
    length = lx * v.to(torch.float64).norm(dim=-1)
    bound = 2 * HULP_BOUND * length * (2 * eps(dtype) + hulp(x, c, dtype) + hulp(y, c, dtype))
    assert_scalars_close(gap, torch.zeros_like(gap), bound, "transp round trip")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_transp_along_itself(dtype: torch.dtype, data: st.DataObject) -> None:
    """transp(x, x, v) = v, and the transported initial velocity of the geodesic is (minus) the
    final one: transp(x, y, logmap_x(y)) = -logmap_y(x)."""
    c, x, y = _draw(data, dtype)
    v = _vectors(data, x.shape[-1], dtype, "v")
    note_tensors(x=x, y=y, v=v)
    same = poincare.transp(x, x, v, c=c).to(torch.float64)
    lx = _lam(x, c)
    gap = lx * (same - v.to(torch.float64)).norm(dim=-1)
    length = lx * v.to(torch.float64).norm(dim=-1)
    bound = HULP_BOUND * length * (2 * eps(dtype) + 2 * hulp(x, c, dtype))
    assert_scalars_close(gap, torch.zeros_like(gap), bound, "transp(x, x, v)")
    lxy = poincare.logmap(x, y, c=c)
    lyx = poincare.logmap(y, x, c=c).to(torch.float64)
    moved = poincare.transp(x, y, lxy, c=c).to(torch.float64)
    ly = _lam(y, c)
    gap = ly * (moved + lyx).norm(dim=-1)
    dxy = ly * lyx.norm(dim=-1)
    h = hulp(x, c, dtype) + hulp(y, c, dtype)
    # Each logmap is within 16 (eps d + ulp(x) + ulp(y)) (tangent contract, in lengths), and the
    # transport adds its own relative error.
    bound = HULP_BOUND * (2 * (eps(dtype) * dxy + h / c**0.5) + dxy * (2 * eps(dtype) + h))
    assert_scalars_close(gap, torch.zeros_like(gap), bound, "transp(x, y, log_x y) vs -log_y x")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_egrad2rgrad_scales_by_inverse_metric(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """egrad2rgrad(x, g) = g / λ_x^2, with λ_x from the exact values of x.

    A perturbation of ``x`` by ``k`` hULP changes ``log λ_x`` by at most ``k`` hULP (in units of
    the curvature radius), so the relative bound is ``16 (2 eps + 2 hulp(x))``.
    """
    c, x, _ = _draw(data, dtype)
    g = _vectors(data, x.shape[-1], dtype, "g")
    note_tensors(x=x, g=g)
    r = poincare.egrad2rgrad(x, g, c=c).to(torch.float64)
    lx = _lam(x, c)
    expect = g.to(torch.float64) / (lx**2).unsqueeze(-1)
    rel = HULP_BOUND * (2 * eps(dtype) + 2 * hulp(x, c, dtype))
    err = (r - expect).norm(dim=-1)
    assert_scalars_close(err, torch.zeros_like(err), rel * expect.norm(dim=-1), "egrad2rgrad")
