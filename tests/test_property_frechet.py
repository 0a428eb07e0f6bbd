"""The weighted Fréchet mean, as identities, in hULP of the points involved.

Points are drawn over the full representable radius (the origin and the outermost shell
included), ``N`` of them per mean, with weights that include zeros, one-hot rows and ratios up
to ``10**12`` (float32) or ``10**24`` (float64). A mean's inputs are all its points, so its
budget counts the hULP of every one of them (the mean moves by at most a weighted average of
its points' displacements).
"""

from __future__ import annotations

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
from poincare import frechet_mean
from verification import reference_means as ref_means
from verification.strategies import curvatures, dims, points, seeds, translated_points, weights

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 3


def _draw(
    data: st.DataObject, dtype: torch.dtype, n_max: int = 4
) -> tuple[float, torch.Tensor, torch.Tensor]:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    n = data.draw(st.integers(1, n_max), label="n")
    x = data.draw(points(dtype, d, (B, n), c=c), label="x")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(x=x, w=w)
    return c, x, w


def _all_points(c: float, dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    """16 hULP of every point of each mean's input (``x``: ``(..., N, D)``), summed over N."""
    return budget(c, dtype, (x,)).sum(-1)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.4)
@given(data=st.data())
def test_property_frechet_matches_reference(dtype: torch.dtype, data: st.DataObject) -> None:
    """Within 16 hULP of the mpmath mean (Newton's method at 80 digits), strictly inside."""
    c, x, w = _draw(data, dtype)
    m = frechet_mean(x, w, c=c)
    assert_in_ball(m, c, "frechet_mean")
    exact: list[object] = [
        ref_means.frechet_mean(pts, ws, c)  # type: ignore[arg-type]
        for pts, ws in zip(rows(x, 1), rows(w, 1), strict=True)
    ]
    # the allowance of the points of nonzero weight (a zero weight's point does not count)
    hulps = input_hulps(c, dtype, (B,), points=[x * (w != 0).unsqueeze(-1).to(dtype)])
    assert_matches_reference(m, exact, c, dtype, hulps, "frechet_mean vs mpmath")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.6)
@given(data=st.data())
def test_property_frechet_of_identical_points(dtype: torch.dtype, data: st.DataObject) -> None:
    """m(x, x, ..., x; w) = x for any admissible weights."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    n = data.draw(st.integers(1, 4), label="n")
    p = data.draw(points(dtype, d, (B,), c=c), label="p")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(p=p, w=w)
    x = p.unsqueeze(-2).expand(B, n, d)
    m = frechet_mean(x, w, c=c)
    assert_points_close(m, p, c, budget(c, dtype, (m, p)), "m(x, ..., x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.6)
@given(data=st.data())
def test_property_frechet_of_two_is_geodesic_midpoint(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """Two equally weighted points: the mean is the point at half their distance on their
    geodesic, d(m, x) = d(m, y) = d(x, y)/2."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    y = data.draw(points(dtype, d, (B,), c=c), label="y")
    note_tensors(x=x, y=y)
    m = frechet_mean(torch.stack([x, y], dim=-2), c=c)
    dmx = poincare.dist(m, x, c=c).to(torch.float64)
    dmy = poincare.dist(m, y, c=c).to(torch.float64)
    dxy = poincare.dist(x, y, c=c).to(torch.float64)
    m_err = budget(c, dtype, (m, x, y))
    bound = scalar_budget(c, dtype, [dmx, dmy], [m, x, m, y]) + 2 * m_err
    assert_scalars_close(dmx, dmy, bound, "d(m, x) vs d(m, y)")
    bound = scalar_budget(c, dtype, [dmx, dxy], [m, x, x, y]) + 2 * m_err
    assert_scalars_close(2 * dmx, dxy, bound, "2 d(m, x) vs d(x, y)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.6)
@given(data=st.data())
def test_property_frechet_weight_scale_invariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """m(x; s w) = m(x; w) for s > 0 (powers of two, so the scaled weights are exact), and no
    weights means equal weights."""
    c, x, w = _draw(data, dtype)
    k = data.draw(st.integers(-20, 20), label="log2 s")
    m1 = frechet_mean(x, w, c=c)
    m2 = frechet_mean(x, w * 2.0**k, c=c)
    bound = budget(c, dtype, (m1, m2)) + 2 * _all_points(c, dtype, x)
    assert_points_close(m1, m2, c, bound, f"mean with weights * 2**{k}")
    m3 = frechet_mean(x, c=c)
    m4 = frechet_mean(x, torch.ones_like(w), c=c)
    bound = budget(c, dtype, (m3, m4)) + 2 * _all_points(c, dtype, x)
    assert_points_close(m3, m4, c, bound, "weights=None vs ones")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.6)
@given(data=st.data())
def test_property_frechet_gyro_equivariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """a ⊕ m(x_i; w) = m(a ⊕ x_i; w): left gyrotranslations are isometries, and the mean of
    isometric images is the image of the mean.

    The points are drawn as ``x_i = (-a) ⊕ t_i`` so that every ``a ⊕ x_i`` is representable;
    the rounding of the ``a ⊕ x_i`` moves the right-hand mean by at most the largest of them.
    """
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    n = data.draw(st.integers(1, 3), label="n")
    a = data.draw(points(dtype, d, (B,), c=c), label="a")
    ab = a.unsqueeze(-2).expand(B, n, d)
    x = data.draw(translated_points(ab, c=c), label="x")
    w = data.draw(weights((B, n), dtype), label="w")
    note_tensors(a=a, x=x, w=w)
    ax = poincare.mobius_add(ab, x, c=c)
    m = frechet_mean(x, w, c=c)
    lhs = poincare.mobius_add(a, m, c=c)
    rhs = frechet_mean(ax, w, c=c)
    bound = (
        budget(c, dtype, (m,), (a, m, lhs), (rhs,))
        + _all_points(c, dtype, x)
        + 2 * _all_points(c, dtype, ax)
        + budget(c, dtype, (ab,)).sum(-1)
    )
    assert_points_close(lhs, rhs, c, bound, "a ⊕ m(x) vs m(a ⊕ x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.6)
@given(data=st.data())
def test_property_frechet_rotation_equivariant(dtype: torch.dtype, data: st.DataObject) -> None:
    """m(Q x_i; w) = Q m(x_i; w) for an orthogonal Q (a rotation about the origin: an
    isometry). The rotated points are rounded, which costs their hULP."""
    c, x, w = _draw(data, dtype)
    d = x.shape[-1]
    gen = torch.Generator().manual_seed(data.draw(seeds(), label="seed"))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    qx = poincare.project((x.to(torch.float64) @ q.T).to(dtype), c=c)
    m = frechet_mean(x, w, c=c)
    qm = poincare.project((m.to(torch.float64) @ q.T).to(dtype), c=c)
    rhs = frechet_mean(qx, w, c=c)
    bound = (
        budget(c, dtype, (m, qm), (rhs,)) + _all_points(c, dtype, x) + 2 * _all_points(c, dtype, qx)
    )
    assert_points_close(qm, rhs, c, bound, "Q m(x) vs m(Q x)")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@examples(0.6)
@given(data=st.data())
def test_property_frechet_gradients_finite(dtype: torch.dtype, data: st.DataObject) -> None:
    """Finite gradients in the points and the weights at every drawn input (the outermost shell,
    zero and one-hot weights, equal points included), and zero gradients of all-zero rows."""
    c, x, w = _draw(data, dtype)
    if data.draw(st.booleans(), label="equal points"):
        x = x[:, :1].expand_as(x).contiguous()
    w = w.clone()
    w[0] = 0.0
    xl, wl = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    m = frechet_mean(xl, wl, c=c)
    weight = torch.linspace(0.5, 1.5, m.numel(), dtype=torch.float64).reshape(m.shape)
    (m * weight.to(dtype)).sum().backward()  # type: ignore[no-untyped-call]
    assert xl.grad is not None and wl.grad is not None
    assert bool(torch.isfinite(xl.grad).all()), "non-finite gradient of x"
    assert bool(torch.isfinite(wl.grad).all()), "non-finite gradient of the weights"
    assert bool((xl.grad[0] == 0).all()) and bool((wl.grad[0] == 0).all())
    assert bool((m[0] == 0).all())
