"""Inputs of every finite magnitude, from subnormal to near overflow, in both dtypes.

Tangent vectors, matrices, scalars and weights are drawn as a direction times ``2^e`` with ``e``
anywhere in the dtype's exponent range. The results must be finite, strictly inside the ball,
and within 16 hULP of mpmath on the exact inputs (where the exact result is representable;
beyond, on the outermost shell in the exact result's direction).
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import pytest
import torch
from conftest import DTYPE_PARAMS, HULP_BOUND, assert_in_ball, examples, input_hulps, rows
from hypothesis import given, note
from hypothesis import strategies as st

import poincare
from verification import metrics
from verification import reference as ref
from verification.strategies import curvatures, dims, directions, points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 3


def _exponents(dtype: torch.dtype, top: int = 4) -> st.SearchStrategy[int]:
    """Binary exponents from the smallest subnormal to ``top`` below the largest float."""
    info = torch.finfo(dtype)
    nmant = {torch.float32: 23, torch.float64: 52}[dtype]
    low = math.frexp(info.smallest_normal)[1] - nmant - 1  # exponent of the least subnormal
    high = math.frexp(info.max)[1] - top
    return st.integers(low + 8, high)


def _scaled(direction: torch.Tensor, exps: list[int], dtype: torch.dtype) -> torch.Tensor:
    """``direction`` (float64, ``(B, D)``) times ``2^e`` per row, rounded to ``dtype``, never 0."""
    rowsd = []
    for row, e in zip(direction, exps, strict=True):
        r = torch.ldexp(row / row.abs().max(), torch.tensor(e)).to(dtype)
        if not bool((r != 0).any()):
            r = torch.zeros_like(r)
            r[0] = torch.finfo(dtype).smallest_normal * 2.0**-8
        rowsd.append(r)
    return torch.stack(rowsd)


def _check(
    out: torch.Tensor, exact: list[Any], c: float, dtype: torch.dtype, hulps: list[float], what: str
) -> None:
    """Finite and in the ball everywhere; within the contract where the exact point lies within
    the representable radius, on the outermost shell (to a few hULP of the exact point's own
    projection) beyond it."""
    assert_in_ball(out, c, what)
    radius = ref.max_radius(dtype, c)
    shell = mpmath.mpf(1) - mpmath.mpf(torch.finfo(dtype).eps) / 2
    for i, (p, e, h) in enumerate(zip(rows(out, 1), exact, hulps, strict=True)):
        if ref.in_ball(e, c) and ref.dist0(e, c) <= radius:
            target = e
        else:  # the exact point beyond the representable radius: its outermost-shell image
            with mpmath.workdps(ref.DPS):
                k = shell / (mpmath.sqrt(mpmath.mpf(c)) * ref.norm(e))
                target = [k * a for a in e]
        err = metrics.point_error(p, target, c, dtype, [h])  # type: ignore[arg-type]
        note(f"{what}[{i}]: {err:.3f} hULP")
        assert err <= HULP_BOUND, f"{what}[{i}]: {err:.2f} hULP > {HULP_BOUND:g}"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
@examples(0.6)
def test_property_magnitudes_expmap0(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    exps = data.draw(st.lists(_exponents(dtype), min_size=B, max_size=B), label="log2|v|")
    v = _scaled(data.draw(directions(d, (B,)), label="u"), exps, dtype)
    out = poincare.expmap0(v, c=c)
    exact = [ref.expmap0(r, c) for r in rows(v, 1)]
    _check(out, exact, c, dtype, [0.0] * B, "expmap0")
    # and back: logmap0 of a tiny point is the point itself
    tiny = v * 0 + torch.where(v.abs() < 1e-30, v, torch.zeros_like(v))
    assert bool((poincare.logmap0(tiny, c=c) == tiny).all())


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
@examples(0.6)
def test_property_magnitudes_scalar_mul(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=5), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    e = data.draw(_exponents(dtype, top=2), label="log2|r|")
    sign = data.draw(st.sampled_from([-1.0, 1.0]), label="sign")
    r = sign * math.ldexp(1.0, e) * data.draw(st.floats(1.0, 1.99), label="mantissa")
    r = float(torch.tensor(r, dtype=dtype))
    out = poincare.mobius_scalar_mul(r, x, c=c)
    exact = [ref.mobius_scalar_mul(mpmath.mpf(r), p, c) for p in rows(x, 1)]
    _check(out, exact, c, dtype, input_hulps(c, dtype, (B,), points=[x]), "mobius_scalar_mul")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
@examples(0.6)
def test_property_magnitudes_matvec(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=4), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c, max_radius=8.0 / math.sqrt(c)), label="x")
    e = data.draw(_exponents(dtype, top=8), label="log2|M|")
    m = _scaled(data.draw(directions(d, (d,)), label="M"), [e] * d, dtype)
    out = poincare.mobius_matvec(m, x, c=c)
    mm = [list(r) for r in rows(m, 1)]
    exact = [ref.mobius_matvec(mm, p, c) for p in rows(x, 1)]
    _check(out, exact, c, dtype, input_hulps(c, dtype, (B,), points=[x]), "mobius_matvec")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
@examples(0.6)
def test_property_magnitudes_expmap(dtype: torch.dtype, data: st.DataObject) -> None:
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=4), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c, max_radius=6.0 / math.sqrt(c)), label="x")
    exps = data.draw(st.lists(_exponents(dtype), min_size=B, max_size=B), label="log2|v|")
    v = _scaled(data.draw(directions(d, (B,)), label="u"), exps, dtype)
    out = poincare.expmap(x, v, c=c)
    exact = [ref.expmap(p, t, c) for p, t in zip(rows(x, 1), rows(v, 1), strict=True)]
    h = input_hulps(c, dtype, (B,), points=[x], tangents=[(x, v)])
    _check(out, exact, c, dtype, h, "expmap")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
@examples(0.6)
def test_property_magnitudes_midpoint_weights(dtype: torch.dtype, data: st.DataObject) -> None:
    """The midpoint of weights scaled by any power of two is the midpoint of the weights."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(max_dim=4), label="dim")
    n = data.draw(st.integers(1, 5), label="n")
    x = data.draw(points(dtype, d, (B, n), c=c), label="x")
    w = torch.tensor(
        data.draw(st.lists(st.floats(0.0625, 1.0), min_size=B * n, max_size=B * n), label="w"),
        dtype=dtype,
    ).reshape(B, n)
    e = data.draw(_exponents(dtype), label="log2 scale")
    base = poincare.einstein_midpoint(x, w, c=c)
    scaled = torch.ldexp(w.double(), torch.tensor(e)).to(dtype)
    exact_w = torch.ldexp(scaled.double(), torch.tensor(-e))  # the weights as stored, rescaled
    assume_same = bool((exact_w == w.double()).all())
    got = poincare.einstein_midpoint(x, scaled, c=c)
    assert_in_ball(got, c, "einstein_midpoint")
    if assume_same:  # no weight was rounded (not subnormal): bit for bit the same midpoint
        assert bool((got == base).all()), "the midpoint depends on the scale of the weights"
