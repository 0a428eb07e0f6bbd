"""The weighted Einstein midpoint, in hULP of the points involved.

Points are drawn over the full representable radius, ``N`` of them per midpoint, with weights that
include zeros, one-hot rows and ratios up to ``10**12`` (float32) or ``10**24`` (float64). A
midpoint's inputs are all its points, so its budget counts the hULP of every one of them.
"""

from __future__ import annotations

import mpmath
import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    assert_in_ball,
    assert_matches_reference,
    assert_points_close,
    assert_scalars_close,
    budget,
    examples,
    input_hulps,
    note_tensors,
    rows,
    scalar_budget,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification import reference as ref
from verification.strategies import curvatures, dims, points, translated_points, weights

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 4


def _draw(
    data: st.DataObject, dtype: torch.dtype, n_min: int = 1
) -> tuple[float, torch.Tensor, torch.Tensor]:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    n = data.draw(st.integers(n_min, 5), label="n")
    x = data.draw(points(dtype, d, (B, n), c=c), label="x")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(x=x, w=w)
    return c, x, w


def _all_points(c: float, dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    """16 hULP of every point of each midpoint's input (``x``: ``(..., N, D)``), summed over N."""
    return budget(c, dtype, (x,)).sum(-1)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_midpoint_in_ball_and_dim(dtype: torch.dtype, data: st.DataObject) -> None:
    """The midpoint is strictly inside the ball, and ``dim``/``keepdim`` place the N axis."""
    c, x, w = _draw(data, dtype)
    m = poincare.einstein_midpoint(x, w, c=c)
    assert m.shape == (B, x.shape[-1])
    assert_in_ball(m, c, "einstein_midpoint")
    xt = x.transpose(0, 1)  # (N, B, D), the points along dim 0
    mt = poincare.einstein_midpoint(xt, w.transpose(0, 1), c=c, dim=0, keepdim=True)
    assert mt.shape == (1, B, x.shape[-1])
    assert_points_close(
        mt[0], m, c, budget(c, dtype, (m,), (m,)) + _all_points(c, dtype, x), "dim=0"
    )


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_midpoint_of_identical_points(dtype: torch.dtype, data: st.DataObject) -> None:
    """m(x, x, ..., x; w) = x for any admissible weights."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    n = data.draw(st.integers(1, 5), label="n")
    p = data.draw(points(dtype, d, (B,), c=c), label="p")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(p=p, w=w)
    x = p.unsqueeze(-2).expand(B, n, d)
    m = poincare.einstein_midpoint(x, w, c=c)
    assert_points_close(m, p, c, budget(c, dtype, (m,)) + _all_points(c, dtype, x), "m(x, ..., x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_midpoint_permutation_invariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """Permuting the points together with their weights does not move the midpoint."""
    c, x, w = _draw(data, dtype)
    n = x.shape[-2]
    perm = data.draw(st.permutations(list(range(n))), label="perm")
    m1 = poincare.einstein_midpoint(x, w, c=c)
    m2 = poincare.einstein_midpoint(x[:, perm], w[:, perm], c=c)
    bound = budget(c, dtype, (m1,), (m2,)) + 2 * _all_points(c, dtype, x)
    assert_points_close(m1, m2, c, bound, "permuted midpoint")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_midpoint_weight_scale_invariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """m(x; s w) = m(x; w) for s > 0 (powers of two, so the scaled weights are exact), and no
    weights means equal weights."""
    c, x, w = _draw(data, dtype)
    k = data.draw(st.integers(-20, 20), label="log2 s")
    m1 = poincare.einstein_midpoint(x, w, c=c)
    m2 = poincare.einstein_midpoint(x, w * 2.0**k, c=c)
    bound = budget(c, dtype, (m1,), (m2,)) + 2 * _all_points(c, dtype, x)
    assert_points_close(m1, m2, c, bound, f"midpoint with weights * 2**{k}")
    m3 = poincare.einstein_midpoint(x, c=c)
    m4 = poincare.einstein_midpoint(x, torch.ones_like(w), c=c)
    bound = budget(c, dtype, (m3,), (m4,)) + 2 * _all_points(c, dtype, x)
    assert_points_close(m3, m4, c, bound, "weights=None vs ones")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_midpoint_one_hot_selects(dtype: torch.dtype, data: st.DataObject) -> None:
    """A one-hot weight row selects its point: the other points (whatever their radius) do not
    count, so the budget is 16 hULP of the selected point and of the result only."""
    c, x, _ = _draw(data, dtype)
    n = x.shape[-2]
    j = data.draw(st.lists(st.integers(0, n - 1), min_size=B, max_size=B), label="j")
    w = torch.zeros((B, n), dtype=dtype)
    w[torch.arange(B), j] = 1.0
    m = poincare.einstein_midpoint(x, w, c=c)
    sel = x[torch.arange(B), j]
    assert_points_close(m, sel, c, budget(c, dtype, (sel, m)), "one-hot midpoint")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_midpoint_of_two_is_geodesic_midpoint(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """With equal weights on two points, the midpoint is equidistant from both and lies on the
    geodesic between them: d(m, x) = d(m, y) and d(x, m) + d(m, y) = d(x, y)."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    note_tensors(x=x, y=y)
    m = poincare.einstein_midpoint(torch.stack([x, y], dim=-2), c=c)
    dmx = poincare.dist(m, x, c=c).to(torch.float64)
    dmy = poincare.dist(m, y, c=c).to(torch.float64)
    dxy = poincare.dist(x, y, c=c).to(torch.float64)
    m_err = budget(c, dtype, (m, x, y))
    bound = scalar_budget(c, dtype, [dmx, dmy], [m, x, m, y]) + 2 * m_err
    assert_scalars_close(dmx, dmy, bound, "d(m, x) vs d(m, y)")
    # Off the geodesic by h, the detour d(x,m) + d(m,y) - d(x,y) is second order in h; on a
    # float grid it is bounded by the distance errors plus twice m's error.
    bound = scalar_budget(c, dtype, [dmx, dmy, dxy], [m, x, m, y, x, y]) + 2 * m_err
    assert_scalars_close(dmx + dmy, dxy, bound, "d(x, m) + d(m, y) vs d(x, y)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_midpoint_gyro_equivariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """a ⊕ m(x_i; w) = m(a ⊕ x_i; w): left gyrotranslations commute with the midpoint.

    The points are drawn as ``x_i = (-a) ⊕ t_i`` for drawn ``t_i``, so that every ``a ⊕ x_i`` is
    representable. The errors of the ``a ⊕ x_i`` enter the right-hand midpoint, which moves by
    at most the largest of them (a weighted barycentre), so their budgets are summed.
    """
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    n = data.draw(st.integers(1, 4), label="n")
    a = data.draw(points(dtype, d, (B,), c=c), label="a")
    ab = a.unsqueeze(-2).expand(B, n, d)
    x = data.draw(translated_points(ab, c=c), label="x")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(a=a, x=x, w=w)
    ax = poincare.mobius_add(ab, x, c=c)
    m = poincare.einstein_midpoint(x, w, c=c)
    lhs = poincare.mobius_add(a, m, c=c)
    rhs = poincare.einstein_midpoint(ax, w, c=c)
    bound = (
        budget(c, dtype, (m,), (a, m, lhs), (rhs,))
        + _all_points(c, dtype, x)
        + 2 * _all_points(c, dtype, ax)
        + budget(c, dtype, (ab,)).sum(-1)
    )
    assert_points_close(lhs, rhs, c, bound, "a ⊕ m(x) vs m(a ⊕ x)")


def _mobius_gyromidpoint(pts: list[object], ws: list[object], c: float) -> list[object]:
    """Ungar's Möbius gyromidpoint in mpmath:
    ``m = ½ ⊗ (Σ w_i λ_i x_i / Σ w_i (λ_i - 1))`` with ``λ_i = 2 / (1 - c|x_i|^2)``."""
    with mpmath.workdps(ref.DPS):
        lam = [ref.conformal_factor(p, c) for p in pts]  # type: ignore[arg-type]
        den = mpmath.fsum(w * (lm - 1) for w, lm in zip(ws, lam, strict=True))
        dim = len(pts[0])  # type: ignore[arg-type]
        z = [
            mpmath.fsum(w * lm * p[j] for w, lm, p in zip(ws, lam, pts, strict=True)) / den  # type: ignore[index]
            for j in range(dim)
        ]
        return ref.mobius_scalar_mul(mpmath.mpf(1) / 2, z, c)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.5)
@given(data=st.data())
def test_property_midpoint_is_mobius_gyromidpoint(dtype: torch.dtype, data: st.DataObject) -> None:
    """The Einstein midpoint (through the Klein model) equals Ungar's Möbius gyromidpoint
    ``½ ⊗ (Σ w_i λ_i x_i / Σ w_i (λ_i - 1))`` evaluated exactly, within 16 hULP.

    (The equality of the two exact formulas holds for every ``c``: both are the same point of the
    hyperboloid, normalised differently.)
    """
    c, x, w = _draw(data, dtype)
    m = poincare.einstein_midpoint(x, w, c=c)
    exact = [
        _mobius_gyromidpoint(list(pts), list(ws), c)  # type: ignore[arg-type]
        for pts, ws in zip(rows(x, 1), rows(w, 1), strict=True)
    ]
    hulps = input_hulps(c, dtype, (B,), points=[x])
    assert_matches_reference(m, exact, c, dtype, hulps, "midpoint vs Möbius gyromidpoint")
