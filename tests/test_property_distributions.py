"""Properties of the wrapped normal distribution (:mod:`poincare.distributions`).

Means and points are drawn by hyperbolic radius up to the representable one (the outermost
shell included), scales log-uniformly over six orders of magnitude, isotropic or diagonal. The
accuracy of ``log_prob`` is measured as in :func:`verification.report_distributions.log_prob_error`:
relative to the rounding of each term of the log-density plus what one float step of each input
moves it by.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from conftest import DTYPE_PARAMS, HULP_BOUND, assert_in_ball, examples, note_tensors
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import poincare
from poincare.distributions import WrappedNormal
from verification import metrics
from verification import reference as ref
from verification import reference_distributions as refd
from verification.report_distributions import log_prob_error
from verification.strategies import curvatures, dims, nearly_equal_pairs, points

#: Every property runs on both paths of the ops (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("path")

B = 3


def _scale(data: st.DataObject, dtype: torch.dtype, dim: int, c: float) -> Tensor:
    width = data.draw(st.sampled_from([1, dim]), label="scale width")
    logs = data.draw(
        st.lists(st.floats(-3.0, 3.0), min_size=B * width, max_size=B * width), label="log σ"
    )
    return (
        (torch.tensor(logs, dtype=torch.float64).exp() / math.sqrt(c)).reshape(B, width).to(dtype)
    )


def _pair(
    data: st.DataObject, dtype: torch.dtype, dim: int, c: float, max_radius: float | None = None
) -> tuple[Tensor, Tensor]:
    """``(loc, x)``: independent points, or equal and nearly equal ones."""
    if data.draw(st.booleans(), label="near"):
        return data.draw(nearly_equal_pairs(dtype, dim, (B,), c=c, max_radius=max_radius))
    loc = data.draw(points(dtype, dim, (B,), c=c, max_radius=max_radius), label="loc")
    x = data.draw(points(dtype, dim, (B,), c=c, max_radius=max_radius), label="x")
    return loc, x


def _allowance(x: Tensor, loc: Tensor, scale: Tensor, c: float, dtype: torch.dtype) -> list[float]:
    """One unit of :func:`log_prob_error` per row: ``eps·M + L_x h(x) + L_loc h(loc) + eps·S``."""
    out = []
    eps = metrics.machine_eps(dtype)
    for xi, li, si in zip(
        x.double().tolist(), loc.double().tolist(), scale.double().tolist(), strict=True
    ):
        with mpmath.workdps(ref.DPS):
            size = mpmath.fsum(abs(t) for t in refd.log_prob_terms(xi, li, si, c))
            lx, lloc, s_term = refd.log_prob_sensitivity(xi, li, si, c)
            sc = mpmath.sqrt(c)
            h = metrics.hulp(xi, c, dtype) / sc, metrics.hulp(li, c, dtype) / sc
            out.append(float(eps * size + lx * h[0] + lloc * h[1] + eps * s_term))
    return out


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_log_prob_matches_reference(dtype: torch.dtype, data: st.DataObject) -> None:
    """log_prob is within 16 units of the mpmath density, at every radius, curvature, scale."""
    c = data.draw(curvatures(), label="c")
    dim = data.draw(dims(1, 5), label="dim")
    loc, x = _pair(data, dtype, dim, c)
    scale = _scale(data, dtype, dim, c)
    note_tensors(loc=loc, x=x, scale=scale)
    out = WrappedNormal(loc, scale, c=c).log_prob(x)
    assert out.shape == (B,) and out.dtype == dtype
    for p, xi, li, si in zip(
        out.tolist(),
        x.double().tolist(),
        loc.double().tolist(),
        scale.double().tolist(),
        strict=True,
    ):
        assert log_prob_error(p, xi, li, si, c, dtype) <= HULP_BOUND


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
@examples(0.6)
def test_property_isotropic_density_invariant_under_translation(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """With an isotropic scale the density is invariant under the isometries of the ball:
    ``p_{a⊕μ}(a⊕x) = p_μ(x)``, up to the contract's errors of both densities and of the
    translated points (16 float steps of each, one allowance unit per step)."""
    c = data.draw(curvatures(), label="c")
    dim = data.draw(dims(2, 4), label="dim")
    half = poincare.max_radius(dtype, c=c) / 2
    loc, x = _pair(data, dtype, dim, c, max_radius=half)
    a = data.draw(points(dtype, dim, (B,), c=c, max_radius=half), label="a")
    sigma = _scale(data, dtype, 1, c)
    note_tensors(loc=loc, x=x, a=a, sigma=sigma)
    ta, tx = poincare.mobius_add(a, loc, c=c), poincare.mobius_add(a, x, c=c)
    before = WrappedNormal(loc, sigma, c=c).log_prob(x).double()
    after = WrappedNormal(ta, sigma, c=c).log_prob(tx).double()
    unit = torch.tensor(_allowance(x, loc, sigma, c, dtype)) + torch.tensor(
        _allowance(tx, ta, sigma, c, dtype)
    )
    assert bool(((after - before).abs() <= 2 * HULP_BOUND * unit).all())


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_equal_diagonal_scale_is_isotropic(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """A diagonal scale with equal entries (the logmap/transp path) gives the density of the
    isotropic scale (the distance path), within the two contracts."""
    c = data.draw(curvatures(), label="c")
    dim = data.draw(dims(1, 5), label="dim")
    loc, x = _pair(data, dtype, dim, c)
    sigma = _scale(data, dtype, 1, c)
    iso = WrappedNormal(loc, sigma, c=c).log_prob(x).double()
    diag = WrappedNormal(loc, sigma.expand(B, dim), c=c).log_prob(x).double()
    unit = torch.tensor(_allowance(x, loc, sigma, c, dtype))
    assert bool(((iso - diag).abs() <= 2 * HULP_BOUND * unit).all())


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_mode_is_loc(dtype: torch.dtype, data: st.DataObject) -> None:
    """The density is largest at its mean, where it is the Gaussian's at 0:
    ``log p(x) <= log p(μ) = -Σ log σ_i - D/2 log 2π``."""
    c = data.draw(curvatures(), label="c")
    dim = data.draw(dims(1, 6), label="dim")
    loc, x = _pair(data, dtype, dim, c)
    scale = _scale(data, dtype, dim, c)
    d = WrappedNormal(loc, scale, c=c)
    at_mode = d.log_prob(d.mode).double()
    full = scale.double().expand(B, dim)
    peak = -torch.log(full).sum(-1) - dim / 2 * math.log(2 * math.pi)
    tol = 4 * float(torch.finfo(dtype).eps) * (torch.log(full).abs().sum(-1) + dim * 1.0)
    assert bool(((at_mode - peak).abs() <= tol).all())
    assert bool((d.log_prob(x).double() <= peak + tol).all())


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_rsample_in_ball_with_finite_gradients(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """Samples are finite and strictly inside the ball for every mean (the outermost shell
    included) and scale, with finite gradients for loc and scale; so is log_prob at them."""
    c = data.draw(curvatures(), label="c")
    dim = data.draw(dims(1, 5), label="dim")
    loc = data.draw(points(dtype, dim, (B,), c=c), label="loc").requires_grad_(True)
    scale = _scale(data, dtype, dim, c).requires_grad_(True)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        d = WrappedNormal(loc, scale, c=c)
        z = d.rsample((4,))
    assert z.shape == (4, B, dim) and z.dtype == dtype
    assert_in_ball(z, c, "samples")
    lp = d.log_prob(z)
    assert bool(torch.isfinite(lp).all())
    (z.sum() + lp.sum()).backward()  # type: ignore[no-untyped-call]
    for t in (loc, scale):
        assert t.grad is not None and bool(torch.isfinite(t.grad).all())


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@given(data=st.data())
def test_property_log_prob_gradients_finite(dtype: torch.dtype, data: st.DataObject) -> None:
    """Finite gradients of log_prob for value, loc and scale, x == loc included."""
    c = data.draw(curvatures(), label="c")
    dim = data.draw(dims(1, 5), label="dim")
    loc, x = _pair(data, dtype, dim, c)
    scale = _scale(data, dtype, dim, c)
    leaves = [t.clone().requires_grad_(True) for t in (x, loc, scale)]
    WrappedNormal(leaves[1], leaves[2], c=c).log_prob(leaves[0]).sum().backward()  # type: ignore[no-untyped-call]
    for t in leaves:
        assert t.grad is not None and bool(torch.isfinite(t.grad).all())
