"""Möbius scalar multiplication: its algebra with Möbius addition, in hULP.

Scalars are dyadic (``m / 8``) so that sums and products of them are exact in both dtypes; the
points are drawn within the radius at which the exact results stay representable
(``dist0(r ⊗ x) = |r| dist0(x)``).
"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    HULP_BOUND,
    assert_points_close,
    assert_scalars_close,
    budget,
    eps,
    note_tensors,
    scalar_budget,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification.strategies import curvatures, dims, points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8


def dyadic(max_abs_eighths: int) -> st.SearchStrategy[float]:
    """Scalars ``m / 8`` with ``|m| <= max_abs_eighths`` (exact sums and products)."""
    return st.integers(-max_abs_eighths, max_abs_eighths).map(lambda m: m / 8.0)


def _points_for(data: st.DataObject, dtype: torch.dtype, c: float, stretch: float) -> torch.Tensor:
    d = data.draw(dims(), label="dim")
    r = poincare.max_radius(dtype, c=c) / max(1.0, stretch)
    return data.draw(points(dtype, d, (B,), c=c, max_radius=r), label="x")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_scalar_mul_is_repeated_addition(dtype: torch.dtype, data: st.DataObject) -> None:
    """n ⊗ x = x ⊕ (x ⊕ (... ⊕ x)) (n terms); every partial sum is carried by the isometry
    ``y -> x ⊕ y``, so the budget is the sum over the additions."""
    c = data.draw(curvatures(), label="c")
    n = data.draw(st.integers(1, 5), label="n")
    x = _points_for(data, dtype, c, float(n))
    note_tensors(x=x)
    acc = x
    stages: list[tuple[torch.Tensor, ...]] = []
    for _ in range(n - 1):
        nxt = poincare.mobius_add(x, acc, c=c)
        stages.append((x, acc, nxt))
        acc = nxt
    p = poincare.mobius_scalar_mul(float(n), x, c=c)
    stages.append((x, p))
    assert_points_close(p, acc, c, budget(c, dtype, *stages), f"{n} ⊗ x vs {n}-fold ⊕")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_scalar_mul_distributes(dtype: torch.dtype, data: st.DataObject) -> None:
    """(r1 + r2) ⊗ x = (r1 ⊗ x) ⊕ (r2 ⊗ x): the two terms lie on one geodesic through the origin,
    along which Möbius addition adds hyperbolic radii, so both errors are carried unchanged."""
    c = data.draw(curvatures(), label="c")
    r1 = data.draw(dyadic(24), label="r1")
    r2 = data.draw(dyadic(24), label="r2")
    x = _points_for(data, dtype, c, max(abs(r1), abs(r2), abs(r1 + r2)))
    note_tensors(x=x)
    p = poincare.mobius_scalar_mul(r1 + r2, x, c=c)
    a = poincare.mobius_scalar_mul(r1, x, c=c)
    b = poincare.mobius_scalar_mul(r2, x, c=c)
    q = poincare.mobius_add(a, b, c=c)
    bound = budget(c, dtype, (x, p), (x, a), (x, b), (a, b, q))
    assert_points_close(p, q, c, bound, f"({r1} + {r2}) ⊗ x")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_scalar_mul_associates(dtype: torch.dtype, data: st.DataObject) -> None:
    """(r1 r2) ⊗ x = r1 ⊗ (r2 ⊗ x) with ``|r1| <= 1``.

    ``y -> r1 ⊗ y`` multiplies radial errors by ``|r1|`` and angular ones by
    ``sinh(|r1| d) / sinh(d)``; both are at most 1 when ``|r1| <= 1``, so the error of ``r2 ⊗ x``
    is not enlarged. For ``|r1| > 1`` the identity is ill-conditioned far from the origin (the
    angular error grows like ``exp((|r1| - 1) d)``), which is why ``|r1|`` is bounded here.
    """
    c = data.draw(curvatures(), label="c")
    r1 = data.draw(dyadic(8), label="r1")
    r2 = data.draw(dyadic(24), label="r2")
    x = _points_for(data, dtype, c, max(abs(r2), abs(r1 * r2)))
    note_tensors(x=x)
    p = poincare.mobius_scalar_mul(r1 * r2, x, c=c)
    y = poincare.mobius_scalar_mul(r2, x, c=c)
    q = poincare.mobius_scalar_mul(r1, y, c=c)
    bound = budget(c, dtype, (x, p), (x, y), (y, q))
    assert_points_close(p, q, c, bound, f"({r1}·{r2}) ⊗ x")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_scalar_mul_scaling(dtype: torch.dtype, data: st.DataObject) -> None:
    """Ungar's scaling property: (|r| ⊗ x) / |r ⊗ x| = x / |x| for x != 0 and r != 0.

    ``r ⊗ x`` is ``x`` times a positive factor, so its direction is exact up to a few roundings:
    the bound on each component is ``16 eps`` (directions are unit vectors). For points below
    ``eps`` in norm the contract's floor (``hulp`` uses ``max(|q|, eps)``) applies: an absolute
    error ``16 eps^2``, i.e. a direction error ``16 eps^2 / |r ⊗ x|`` (subnormal points cannot
    keep their direction when scaled).
    """
    c = data.draw(curvatures(), label="c")
    r = data.draw(dyadic(24).map(lambda v: v if v != 0 else 1.0), label="r")
    x = _points_for(data, dtype, c, abs(r))
    note_tensors(x=x)
    a = poincare.mobius_scalar_mul(abs(r), x, c=c).to(torch.float64)
    b = poincare.mobius_scalar_mul(r, x, c=c).to(torch.float64)
    x64 = x.to(torch.float64)
    nx = x64.norm(dim=-1, keepdim=True)
    nb = b.norm(dim=-1, keepdim=True)
    ok = (nx > 0) & (nb > 0)
    lhs = torch.where(ok, a / nb.clamp_min(1e-300), torch.zeros_like(a))
    rhs = torch.where(ok, x64 / nx.clamp_min(1e-300), torch.zeros_like(a))
    err = (lhs - rhs).abs().amax(dim=-1)
    e = eps(dtype)
    bound = HULP_BOUND * e * torch.clamp(e / nb.squeeze(-1).clamp_min(1e-300), min=1.0)
    assert bool((err <= bound).all()), f"direction error {float((err / bound).max()):.2f}x bound"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_scalar_mul_scales_distance(dtype: torch.dtype, data: st.DataObject) -> None:
    """dist0(r ⊗ x) = |r| dist0(x): a radial error of ``k`` hULP in ``x`` becomes ``|r| k``."""
    c = data.draw(curvatures(), label="c")
    r = data.draw(dyadic(24), label="r")
    x = _points_for(data, dtype, c, abs(r))
    note_tensors(x=x)
    y = poincare.mobius_scalar_mul(r, x, c=c)
    dy = poincare.dist0(y, c=c).to(torch.float64)
    dx = poincare.dist0(x, c=c).to(torch.float64)
    # dist0(y) and dist0(x) each err by 16 hULP of their input and output; the error of y as a
    # point adds its own budget; an error of x reaches |r| dist0(x) multiplied by |r|.
    bound = (
        scalar_budget(c, dtype, [dy], [y])
        + abs(r) * scalar_budget(c, dtype, [dx], [x])
        + budget(c, dtype, (x, y))
    )
    assert_scalars_close(dy, abs(r) * dx, bound, f"dist0({r} ⊗ x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_scalar_mul_special_values(dtype: torch.dtype, data: st.DataObject) -> None:
    """1 ⊗ x = x, (-1) ⊗ x = -x and 0 ⊗ x = 0 over the whole representable radius."""
    c = data.draw(curvatures(), label="c")
    x = _points_for(data, dtype, c, 1.0)
    note_tensors(x=x)
    one = poincare.mobius_scalar_mul(1.0, x, c=c)
    assert_points_close(one, x, c, budget(c, dtype, (x, one)), "1 ⊗ x")
    neg = poincare.mobius_scalar_mul(-1.0, x, c=c)
    assert_points_close(neg, -x, c, budget(c, dtype, (x, neg)), "(-1) ⊗ x")
    zero = poincare.mobius_scalar_mul(0.0, x, c=c)
    assert bool((zero == 0).all()), "0 ⊗ x is not exactly the origin"
