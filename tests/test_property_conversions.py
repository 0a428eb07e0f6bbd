"""Conversions between the Poincaré ball, the Klein model and the hyperboloid, in hULP.

A float step of a Klein point near the boundary is much longer than one of the Poincaré point
it comes from (``1 - sqrt(c)|k| ≈ (1 - sqrt(c)|x|)^2 / 2``): the Klein model represents only
about half the hyperbolic radius, and a round trip through it can lose what the Klein grid
cannot hold. The round-trip budgets therefore count the hULP of the intermediate point in its own
model (``verification.metrics.hulp_klein``, ``hulp_lorentz``).
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from conftest import (
    DTYPE_PARAMS,
    HULP_BOUND,
    assert_points_close,
    budget,
    eps,
    note_tensors,
    rows,
)
from hypothesis import given
from hypothesis import strategies as st

import poincare
from verification import metrics
from verification import reference as ref
from verification.strategies import curvatures, dims, points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 8


def _model_ulp_length(h: torch.Tensor, c: float, dtype: torch.dtype, model: str) -> torch.Tensor:
    """The hyperbolic length of one float step at ``h`` in ``model`` ("klein" or "lorentz")."""
    fn = metrics.hulp_klein if model == "klein" else metrics.hulp_lorentz
    vals = [float(fn(r, c, dtype)) / math.sqrt(c) for r in rows(h, h.dim() - 1)]
    return torch.tensor(vals, dtype=torch.float64).reshape(h.shape[:-1])


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_klein_roundtrip(dtype: torch.dtype, data: st.DataObject) -> None:
    """klein_to_poincare(poincare_to_klein(x)) = x, for x within half the representable radius.

    Beyond about half the radius the Klein point rounds onto the boundary of the Klein ball (it
    cannot be represented), so the round trip is intrinsically lossy there and the radius is
    bounded; within it the budget includes the Klein point's own hULP (up to about 1 at the bound).
    """
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    r = 0.5 * poincare.max_radius(dtype, c=c)
    x = data.draw(points(dtype, d, (B,), c=c, max_radius=r), label="x")
    note_tensors(x=x)
    k = poincare.poincare_to_klein(x, c=c)
    p = poincare.klein_to_poincare(k, c=c)
    klein = HULP_BOUND * _model_ulp_length(k, c, dtype, "klein")
    bound = budget(c, dtype, (x,), (p,)) + 2 * klein
    assert_points_close(p, x, c, bound, "Poincaré -> Klein -> Poincaré")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_lorentz_roundtrip(dtype: torch.dtype, data: st.DataObject) -> None:
    """lorentz_to_poincare(poincare_to_lorentz(x)) = x over the full representable radius."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    note_tensors(x=x)
    h = poincare.poincare_to_lorentz(x, c=c)
    assert h.shape == (B, d + 1)
    p = poincare.lorentz_to_poincare(h, c=c)
    lorentz = HULP_BOUND * _model_ulp_length(h, c, dtype, "lorentz")
    bound = budget(c, dtype, (x,), (p,)) + 2 * lorentz
    assert_points_close(p, x, c, bound, "Poincaré -> Lorentz -> Poincaré")


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_lorentz_on_hyperboloid(dtype: torch.dtype, data: st.DataObject) -> None:
    """-h_0^2 + |h_s|^2 = -1/c, to ``16 eps |h|^2`` (the rounding of each coordinate moves the
    form by ``2 eps h_i^2``), evaluated exactly on the float coordinates; and h_0 >= 1/sqrt(c)."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    x = data.draw(points(dtype, d, (B,), c=c), label="x")
    note_tensors(x=x)
    h = poincare.poincare_to_lorentz(x, c=c)
    with mpmath.workdps(ref.DPS):
        for i, row in enumerate(rows(h, 1)):
            hs = [mpmath.mpf(v) for v in row]  # type: ignore[attr-defined]
            form = -(hs[0] ** 2) + mpmath.fsum(v * v for v in hs[1:]) + 1 / mpmath.mpf(c)
            size = mpmath.fsum(v * v for v in hs)
            bound = HULP_BOUND * eps(dtype) * size
            assert abs(form) <= bound, (
                f"point {i}: Minkowski form off by {float(abs(form) / bound):.2f}x the bound"
            )
            assert hs[0] * mpmath.sqrt(c) >= 1 - 4 * eps(dtype), f"point {i}: h_0 < 1/sqrt(c)"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_klein_is_radial_rescaling(dtype: torch.dtype, data: st.DataObject) -> None:
    """The Klein point has the direction of x and the same hyperbolic radius:
    2/sqrt(c) artanh(sqrt(c)|x|) = 1/sqrt(c) artanh(sqrt(c)|k|), within half the radius."""
    c = data.draw(curvatures(), label="c")
    d = data.draw(dims(), label="dim")
    r = 0.5 * poincare.max_radius(dtype, c=c)
    x = data.draw(points(dtype, d, (B,), c=c, max_radius=r), label="x")
    note_tensors(x=x)
    k = poincare.poincare_to_klein(x, c=c)
    sc = math.sqrt(c)
    with mpmath.workdps(ref.DPS):
        for i, (xr, kr) in enumerate(zip(rows(x, 1), rows(k, 1), strict=True)):
            rx = 2 / sc * mpmath.atanh(sc * ref.norm(xr))  # type: ignore[arg-type]
            rk = 1 / sc * mpmath.atanh(sc * ref.norm(kr))  # type: ignore[arg-type]
            allow = (
                HULP_BOUND
                * (
                    float(metrics.hulp(xr, c, dtype))  # type: ignore[arg-type]
                    + float(metrics.hulp_klein(kr, c, dtype))  # type: ignore[arg-type]
                )
                / sc
            )
            assert abs(rx - rk) <= allow, f"point {i}: Klein radius off by {float(abs(rx - rk))}"
            nx, nk = ref.norm(xr), ref.norm(kr)  # type: ignore[arg-type]
            if nx > 0 and nk > 0:
                turn = ref.norm([a / nx - b / nk for a, b in zip(xr, kr, strict=True)])  # type: ignore[call-overload]
                assert turn <= HULP_BOUND * eps(dtype), f"point {i}: direction changed"
