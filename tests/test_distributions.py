"""The wrapped normal distribution of :mod:`poincare.distributions`.

* its density: the closed form against the push-forward of the Gaussian by the sampler (both in
  mpmath), ``log_prob`` against mpmath up to the representable radius in both dtypes;
* statistics with fixed seeds: the radial law of the samples (Kolmogorov–Smirnov against the
  exact chi law), the law of their tangent coordinates for a diagonal scale, the radial law
  integrated from ``log_prob``, the integral of the density over the ball (quasi-Monte Carlo
  with respect to the Lebesgue measure of the coordinates) and an importance-sampling estimate;
* gradients of ``rsample`` and ``log_prob`` (against finite differences, finite everywhere);
* the ``torch.distributions`` interface, argument errors, dtypes, ``vmap`` and ``torch.compile``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mpmath
import pytest
import torch
from conftest import DTYPE_PARAMS, HULP_BOUND, assert_in_ball, eps
from torch import Tensor

import poincare
from poincare.distributions import PoincareBallConstraint, WrappedNormal, log_sinhc_sq
from verification import reference as ref
from verification import reference_distributions as refd
from verification.report_distributions import log_prob_error

F64 = torch.float64


def _point(direction: list[float], radius: float, dtype: torch.dtype, c: float = 1.0) -> Tensor:
    """The point at hyperbolic distance ``radius`` from the origin along ``direction``
    (``inf``: the outermost representable shell), in ``dtype``."""
    u = torch.tensor(direction, dtype=F64)
    u = u / torch.linalg.vector_norm(u)
    if math.isinf(radius):
        return poincare.project((u * 2 / math.sqrt(c)).to(dtype), c=c)
    return poincare.project(poincare.expmap0(u * radius / 2, c=c).to(dtype), c=c)


def _directions(n: int, dim: int, seed: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=F64).tolist()


def _ks(samples: Tensor, cdf: Callable[[Tensor], Tensor]) -> float:
    """The Kolmogorov–Smirnov statistic of ``samples`` (1-D) against a continuous ``cdf``."""
    x, _ = torch.sort(samples.to(F64))
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=F64)
    return float(torch.maximum((i / n - f).max(), (f - (i - 1) / n).max()))


def _ks_bound(n: int) -> float:
    """The 0.1% critical value of the one-sample KS statistic (asymptotic, 1.949/sqrt(n))."""
    return 1.949 / math.sqrt(n)


def _chi_cdf(sigma: float, dim: int) -> Callable[[Tensor], Tensor]:
    def cdf(r: Tensor) -> Tensor:
        a = torch.full_like(r, dim / 2)
        out: Tensor = torch.special.gammainc(a, r * r / (2 * sigma * sigma))
        return out

    return cdf


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _tangent_coordinates(d: WrappedNormal, z: Tensor) -> Tensor:
    """The orthonormal coordinates ``v = 2 P_{loc→0}(log_loc z)`` of samples ``z``."""
    w = poincare.logmap(d.loc, z, c=d.c)
    return 2 * poincare.transp(d.loc, torch.zeros_like(d.loc), w, c=d.c)


# ---------------------------------------------------------------------------------------------
# The density
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_log_sinhc_sq_matches_mpmath(dtype: torch.dtype) -> None:
    """log(sinh(s)/s) of t = s^2 to a few ulps on both sides of each switch of form, from 0 to
    far beyond the float32 overflow of sinh; its derivative to a few ulps too."""
    values = [0.0, 1e-30, 1e-8, 0.01, 0.5, 1.0, 3.999, 4.0, 4.001, 10.0, 100.0, 255.99]
    values += [256.0, 256.01, 1000.0, 8000.0, 1e5, 1e7]
    t = torch.tensor(values, dtype=dtype, requires_grad=True)
    out = log_sinhc_sq(t)
    (grad,) = torch.autograd.grad(out.sum(), t)
    with mpmath.workdps(ref.DPS):
        for ti, oi, gi in zip(t.tolist(), out.tolist(), grad.tolist(), strict=True):
            tm = mpmath.mpf(ti)
            if tm == 0:
                assert oi == 0.0
                assert gi == pytest.approx(1 / 6, rel=eps(dtype))
                continue
            s = mpmath.sqrt(tm)
            exact = refd.log_sinhc(s)
            d_exact = (mpmath.coth(s) - 1 / s) / (2 * s)
            assert abs(oi - exact) <= 4 * eps(dtype) * exact, (ti, oi, exact)
            assert abs(gi - d_exact) <= 16 * eps(dtype) * d_exact, (ti, gi, d_exact)


@pytest.mark.parametrize(
    ("x", "loc", "scale", "c"),
    [
        ([0.3], [-0.5], [0.7], 1.0),
        ([0.3, 0.1], [0.1, -0.4], [0.5], 1.0),
        ([0.3, 0.1, 0.2], [0.1, -0.4, 0.5], [0.5, 2.0, 0.1], 1.0),
        ([0.9, 0.1, 0.2], [-0.1, -0.4, 0.5], [0.5, 2.0, 0.1], 0.7),
        ([0.999999, 0.0], [-0.99999, 0.0], [3.0, 0.2], 1.0),
        ([0.3, 0.1, 0.2], [0.3, 0.1, 0.2], [0.5, 2.0, 0.1], 3.0),
        ([1.0, 2.0, -0.5, 0.1], [-2.0, 0.5, 0.3, 0.0], [4.0], 0.1),
    ],
)
def test_closed_form_is_the_push_forward_density(
    x: list[float], loc: list[float], scale: list[float], c: float
) -> None:
    """The closed form (Gaussian density over the volume distortion (sinh(√c r)/(√c r))^(D-1))
    is the density of the sampler's push-forward, ``N(v)/(λ_z^D |det ∂z/∂v|)``, with respect to
    the Riemannian volume: the convention's factors of 2 and √c are consistent."""
    closed = refd.log_prob(x, loc, scale, c)
    pushed = refd.log_prob_from_jacobian(x, loc, scale, c)
    assert abs(closed - pushed) <= mpmath.mpf(10) ** -60 * (1 + abs(closed))
    # and the distance of x from loc is the norm of its tangent coordinates
    v = refd.tangent_coordinates(x, loc, c)
    assert abs(ref.norm(v) - ref.dist(loc, x, c)) <= mpmath.mpf(10) ** -60


def _pairs(dtype: torch.dtype, dim: int, c: float) -> tuple[Tensor, Tensor]:
    """Means and points at radii from 0 to the outermost shell, with x == loc, x a few float
    steps from loc and far pairs among them."""
    radii = [0.0, 0.5, 2.0, 8.0, poincare.max_radius(dtype, c=c) / 2, math.inf]
    locs, xs = [], []
    dirs = _directions(4 * len(radii) ** 2, dim, seed=dim)
    k = 0
    for rl in radii:
        for rx in radii:
            loc = _point(dirs[k], rl / math.sqrt(c), dtype, c)
            locs.append(loc)
            xs.append(_point(dirs[k + 1], rx / math.sqrt(c), dtype, c))
            k += 2
        locs += [loc, loc]
        xs += [loc, torch.nextafter(loc, torch.zeros_like(loc))]
    return torch.stack(locs), torch.stack(xs)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize(("dim", "c"), [(2, 1.0), (3, 0.1), (5, 4.0)])
@pytest.mark.parametrize("kind", ["isotropic", "diagonal"])
def test_log_prob_matches_reference(dtype: torch.dtype, dim: int, c: float, kind: str) -> None:
    """log_prob is within 16 units of the mpmath density at every radius up to the
    representable one (relative to the rounding of its terms plus one float step of each
    input: :func:`verification.report_distributions.log_prob_error`)."""
    loc, x = _pairs(dtype, dim, c)
    n = loc.shape[0]
    g = torch.Generator().manual_seed(7)
    width = 1 if kind == "isotropic" else dim
    scale = (torch.exp(torch.empty(n, width, dtype=F64).uniform_(-3, 3, generator=g))).to(dtype)
    scale = scale / math.sqrt(c)
    out = WrappedNormal(loc, scale, c=c).log_prob(x)
    assert out.dtype == dtype and out.shape == (n,)
    errs = [
        log_prob_error(p, xi, li, si, c, dtype)
        for p, xi, li, si in zip(
            out.tolist(),
            x.double().tolist(),
            loc.double().tolist(),
            scale.double().tolist(),
            strict=True,
        )
    ]
    assert max(errs) <= HULP_BOUND, f"worst {max(errs):.2f} at {errs.index(max(errs))}"


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_log_prob_at_the_mean(dtype: torch.dtype) -> None:
    """At x = loc the density is that of the Gaussian at 0, whatever loc (the shell too)."""
    loc = torch.stack([_point([1.0, -2.0, 0.5], r, dtype) for r in (0.0, 3.0, 10.0, math.inf)])
    scale = torch.tensor([0.3, 1.0, 2.5], dtype=dtype)
    out = WrappedNormal(loc, scale).log_prob(loc)
    expected = -torch.log(scale.double()).sum() - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(out.double(), expected.expand(4), rtol=4 * eps(dtype), atol=0)


# ---------------------------------------------------------------------------------------------
# Statistics (fixed seeds)
# ---------------------------------------------------------------------------------------------

N_SAMPLES = 4000


@pytest.mark.parametrize(
    ("dim", "c", "loc_radius", "sigma", "dtype"),
    [
        (2, 1.0, 1.5, 0.7, torch.float64),
        (3, 1.0, 1.5, 0.7, torch.float64),
        (3, 0.3, 4.0, 2.0, torch.float64),
        (2, 1.0, 12.0, 1.0, torch.float32),
        (3, 2.0, 10.0, 2.0, torch.float64),
    ],
)
def test_radial_law_of_samples(
    dim: int, c: float, loc_radius: float, sigma: float, dtype: torch.dtype
) -> None:
    """d_c(loc, z) of isotropic samples follows the exact radial law (chi with D degrees of
    freedom, scaled by σ): Kolmogorov–Smirnov below its 0.1% critical value."""
    torch.manual_seed(1234 + dim)
    loc = _point([0.6, -0.2, 0.4][:dim], loc_radius, dtype, c)
    d = WrappedNormal(loc, sigma, c=c)
    z = d.sample((N_SAMPLES,))
    assert_in_ball(z, c, "samples")
    r = poincare.dist(loc.double(), z.double(), c=c)
    assert _ks(r, _chi_cdf(sigma, dim)) <= _ks_bound(N_SAMPLES)


@pytest.mark.parametrize("dim", [2, 3])
def test_tangent_coordinates_of_samples(dim: int) -> None:
    """For a diagonal scale, the orthonormal coordinates v_i of log_loc(z) transported to the
    origin are independent N(0, σ_i²): KS of each v_i/σ_i against N(0, 1) and of the rotated
    combination (v_0/σ_0 + v_1/σ_1)/√2, which is N(0, 1) only if the frame is the sampler's."""
    torch.manual_seed(99 + dim)
    loc = _point([0.2, 0.9, -0.4][:dim], 2.5, F64)
    sigma = torch.tensor([0.3, 1.5, 0.8][:dim], dtype=F64)
    d = WrappedNormal(loc, sigma)
    v = _tangent_coordinates(d, d.sample((N_SAMPLES,))) / sigma
    for i in range(dim):
        assert _ks(v[:, i], _normal_cdf) <= _ks_bound(N_SAMPLES), i
    assert _ks((v[:, 0] + v[:, 1]) / math.sqrt(2), _normal_cdf) <= _ks_bound(N_SAMPLES)


@pytest.mark.parametrize(("dim", "c", "sigma"), [(2, 1.0, 0.8), (3, 0.5, 1.5), (3, 4.0, 0.4)])
def test_radial_law_integrated_from_log_prob(dim: int, c: float, sigma: float) -> None:
    """∫_0^ρ p(x(r)) A(r) dr, with A the area of the geodesic sphere of radius r, is the exact
    radial CDF: the density integrates to 1 and has the law of the sampler."""
    loc = _point([0.3, -1.0, 0.2][:dim], 3.0, F64, c)
    d = WrappedNormal(loc, sigma, c=c)
    r = torch.linspace(0, 9 * sigma, 6001, dtype=F64)
    u = torch.tensor([1.0, 0.5, -0.25][:dim], dtype=F64)
    u = u / torch.linalg.vector_norm(u)
    # points at distance r from loc: the left translation of a ray from the origin
    x = poincare.mobius_add(loc, poincare.expmap0(u * r[:, None] / 2, c=c), c=c)
    torch.testing.assert_close(poincare.dist(loc, x, c=c), r, rtol=1e-9, atol=1e-12)
    sc = math.sqrt(c)
    area = 2 * math.pi ** (dim / 2) / math.gamma(dim / 2) * (torch.sinh(sc * r) / sc) ** (dim - 1)
    for ri in (0.5, 2.0):  # the area formula is the reference's
        k = int(ri / float(r[1]))
        assert float(area[k]) == pytest.approx(
            float(refd.sphere_area(float(r[k]), dim, c)), rel=1e-12
        )
    density = d.log_prob(x).exp() * area
    cdf = torch.cumulative_trapezoid(density, r)
    exact = _chi_cdf(sigma, dim)(r[1:])
    assert float(refd.radial_cdf(float(r[-1]), sigma, dim)) == pytest.approx(
        float(exact[-1]), rel=1e-12
    )
    assert float((cdf - exact).abs().max()) <= 1e-6


@pytest.mark.parametrize(("dim", "c"), [(2, 1.0), (2, 0.5), (3, 1.0), (3, 0.5)])
def test_density_integrates_to_one_over_the_ball(dim: int, c: float) -> None:
    """∫ p dV = ∫ p(x) λ_x^D dx over the ball, by scrambled Sobol points of the enclosing cube
    (an estimate independent of the sampler and of the exponential map): within 0.5%."""
    loc = poincare.expmap0(torch.tensor([0.5, -0.3, 0.2][:dim], dtype=F64), c=c)
    scale = torch.tensor([0.4, 0.9, 0.6][:dim], dtype=F64)
    d = WrappedNormal(loc, scale, c=c, validate_args=False)
    sobol = torch.quasirandom.SobolEngine(dim, scramble=True, seed=0)  # type: ignore[no-untyped-call]
    u = sobol.draw(2**16, dtype=F64)
    half = 1 / math.sqrt(c)
    x = (2 * u - 1) * half
    inside = c * (x * x).sum(-1) < 1 - 1e-12
    x = torch.where(inside[:, None], x, torch.zeros_like(x))
    log_f = d.log_prob(x) + dim * torch.log(poincare.conformal_factor(x, c=c, keepdim=False))
    total = torch.where(inside, log_f.exp(), torch.zeros_like(log_f)).mean() * (2 * half) ** dim
    assert abs(float(total) - 1) <= 5e-3


@pytest.mark.parametrize("dim", [2, 3])
def test_importance_sampling_estimate_of_the_normaliser(dim: int) -> None:
    """E_q[p/q] = 1 for p a diagonal wrapped normal and q a wider isotropic one about another
    mean (q's samples and q's density, p's density): within 4 standard errors and 6%."""
    torch.manual_seed(5 + dim)
    p = WrappedNormal(poincare.expmap0(torch.tensor([0.5, -0.3, 0.2][:dim], dtype=F64)),
                      torch.tensor([0.4, 0.9, 0.6][:dim], dtype=F64))  # fmt: skip
    q = WrappedNormal(poincare.expmap0(torch.tensor([0.3, 0.1, 0.0][:dim], dtype=F64)), 1.0)
    z = q.sample((20000,))
    w = (p.log_prob(z) - q.log_prob(z)).exp()
    mean, se = float(w.mean()), float(w.std()) / math.sqrt(w.numel())
    assert abs(mean - 1) <= min(4 * se, 0.06)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


def _fixed_noise_rsample(
    shape: tuple[int, ...], seed: int = 0, **kw: object
) -> Callable[[Tensor, Tensor], Tensor]:
    def f(loc: Tensor, scale: Tensor) -> Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return WrappedNormal(loc, scale, **kw).rsample(shape)  # type: ignore[arg-type]

    return f


@pytest.mark.parametrize("width", [1, 3])
def test_rsample_gradients_match_finite_differences(width: int) -> None:
    loc = _point([0.3, -0.5, 0.8], 1.2, F64).requires_grad_(True)
    scale = torch.tensor([0.5, 1.2, 0.3][:width], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(_fixed_noise_rsample((4,)), (loc, scale))


def test_rsample_gradient_through_a_learnable_curvature() -> None:
    ball = poincare.PoincareBall(0.7, learnable=True)
    loc = _point([0.3, -0.5, 0.8], 1.2, F64, 0.7)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        z = WrappedNormal(loc, 0.6, c=ball).rsample((8,))
    z.sum().backward()  # type: ignore[no-untyped-call]
    assert ball.log_c.grad is not None and bool(torch.isfinite(ball.log_c.grad))

    def f(log_c: Tensor) -> Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return WrappedNormal(loc, 0.6, c=log_c.exp()).rsample((8,))

    assert torch.autograd.gradcheck(f, (ball.log_c.detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("width", [1, 3])
def test_log_prob_gradients_match_finite_differences(width: int) -> None:
    loc = _point([0.3, -0.5, 0.8], 1.2, F64).requires_grad_(True)
    x = torch.stack([_point([-1.0, 0.2, 0.1], 2.0, F64), _point([0.1, 1.0, 0.0], 0.3, F64)])
    x.requires_grad_(True)
    scale = torch.tensor([0.5, 1.2, 0.3][:width], dtype=F64, requires_grad=True)

    def f(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        return WrappedNormal(loc, scale).log_prob(x)

    assert torch.autograd.gradcheck(f, (x, loc, scale))
    c = torch.tensor(1.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda c: WrappedNormal(loc.detach(), scale.detach(), c=c).log_prob(x.detach()), (c,)
    )


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("width", [1, 3])
def test_gradients_finite_everywhere(dtype: torch.dtype, width: int) -> None:
    """Finite gradients of log_prob and rsample at x == loc, at the origin, on the outermost
    shell, for tiny and huge scales."""
    locs = torch.stack([_point([1.0, 0.5, -0.3], r, dtype) for r in (0.0, 2.0, 15.0, math.inf)])
    for s in (1e-3, 1.0, 50.0):
        loc = locs.clone().requires_grad_(True)
        scale = torch.full((width,), s, dtype=dtype, requires_grad=True)
        x = torch.cat([locs, locs.flip(0), torch.zeros_like(locs[:1]).expand(4, 3)])
        x = x.reshape(3, 4, 3).clone().requires_grad_(True)
        d = WrappedNormal(loc, scale)
        lp = d.log_prob(x)
        assert bool(torch.isfinite(lp).all())
        z = d.rsample((5,))
        assert_in_ball(z, 1.0, "samples")
        (lp.sum() + z.sum()).backward()  # type: ignore[no-untyped-call]
        for t in (loc, scale, x):
            assert t.grad is not None and bool(torch.isfinite(t.grad).all())


# ---------------------------------------------------------------------------------------------
# The torch.distributions interface
# ---------------------------------------------------------------------------------------------


def test_shapes_and_interface() -> None:
    loc = poincare.expmap0(torch.randn(2, 1, 3, dtype=F64) * 0.3)
    d = WrappedNormal(loc, torch.full((4, 1), 0.5, dtype=F64))
    assert d.batch_shape == (2, 4) and d.event_shape == (3,)
    assert d.has_rsample
    assert d.loc.shape == (2, 4, 3) and d.scale.shape == (2, 4, 1)
    assert d.mean is d.loc and d.mode is d.loc
    z = d.rsample((5,))
    assert z.shape == (5, 2, 4, 3)
    assert d.log_prob(z).shape == (5, 2, 4)
    assert d.log_prob(z[:, :1]).shape == (5, 2, 4)
    s = d.sample()
    assert s.shape == (2, 4, 3) and not s.requires_grad
    e = d.expand((6, 2, 4))
    assert e.batch_shape == (6, 2, 4) and e.rsample().shape == (6, 2, 4, 3)
    torch.testing.assert_close(e.log_prob(z[:, None]), d.log_prob(z)[:, None].expand(5, 6, 2, 4))
    assert bool(d.support.check(z).all()) and d.support.event_dim == 1  # type: ignore[no-untyped-call]
    assert set(d.arg_constraints) == {"loc", "scale"}
    assert "WrappedNormal" in repr(d)
    with pytest.raises(NotImplementedError):
        d.entropy()
    with pytest.raises(NotImplementedError):
        _ = d.variance


def test_scale_forms_agree() -> None:
    """A float, a 0-d tensor, a (..., 1) tensor and a (..., D) tensor of equal values give the
    same density (the isotropic path through dist, the diagonal one through logmap/transp)."""
    loc = _point([0.2, 0.4, -0.1], 3.0, F64)
    x = torch.stack([_point([1.0, 0.0, 0.5], r, F64) for r in (0.0, 1.0, 5.0)])
    forms: list[float | Tensor] = [
        0.8,
        torch.tensor(0.8, dtype=F64),
        torch.tensor([0.8], dtype=F64),
        torch.full((3,), 0.8, dtype=F64),
    ]
    outs = [WrappedNormal(loc, s).log_prob(x) for s in forms]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-12, atol=1e-12)


def test_curvature_forms() -> None:
    loc = _point([0.2, 0.4], 1.0, F64, 0.5)
    x = _point([1.0, -1.0], 2.0, F64, 0.5)
    want = WrappedNormal(loc, 0.7, c=0.5).log_prob(x)
    for c in (torch.tensor(0.5, dtype=F64), poincare.PoincareBall(0.5)):
        torch.testing.assert_close(WrappedNormal(loc, 0.7, c=c).log_prob(x), want)
    # a batch of curvatures extends the batch shape
    cs = torch.tensor([[0.5], [2.0]], dtype=F64)
    d = WrappedNormal(loc * 0.5, 0.7, c=cs)
    assert d.batch_shape == (2,)
    out = d.log_prob(x * 0.5)
    torch.testing.assert_close(out[1], WrappedNormal(loc * 0.5, 0.7, c=2.0).log_prob(x * 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype: torch.dtype) -> None:
    """Half-precision parameters compute in float32 and return their dtype, samples strictly
    inside the ball as stored."""
    loc = _point([0.2, 0.4, 0.1], 3.0, torch.float32).to(dtype)
    d = WrappedNormal(loc, torch.tensor([2.0], dtype=dtype))
    torch.manual_seed(0)
    z = d.rsample((200,))
    assert z.dtype == dtype
    assert_in_ball(z, 1.0, "half samples")
    lp = d.log_prob(z)
    assert lp.dtype == dtype and bool(torch.isfinite(lp).all())
    want = WrappedNormal(loc.float(), torch.tensor([2.0])).log_prob(z.float())
    torch.testing.assert_close(lp.float(), want.to(dtype).float())


def test_upcast_computes_in_float64() -> None:
    loc = _point([0.2, 0.4, 0.1], 12.0, torch.float32)
    x = _point([-0.2, 0.4, 0.1], 9.0, torch.float32)
    scale = torch.tensor([0.3, 2.0, 1.0])
    with poincare.upcast(torch.float64):
        up = WrappedNormal(loc, scale).log_prob(x)
    assert up.dtype == torch.float32
    want = WrappedNormal(loc.double(), scale.double()).log_prob(x.double())
    assert up == want.float()


def test_constraint_is_exact_on_the_shell() -> None:
    """The support check agrees with check_point: a float64 point on the outermost shell is
    inside, the boundary and non-finite points are not."""
    shell = _point([1.0, 1.0], math.inf, F64)
    poincare.check_point(shell)
    boundary = torch.tensor([1.0, 0.0], dtype=F64)
    nan = torch.tensor([math.nan, 0.0], dtype=F64)
    check = PoincareBallConstraint(1.0).check(torch.stack([shell, boundary, nan]))
    assert check.tolist() == [True, False, False]
    WrappedNormal(shell, 1.0, validate_args=True).log_prob(shell)


def test_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.compile switches torch.distributions' global default off for the whole process
    # (PyTorch's own behaviour), so an earlier compiled test must not decide this one.
    monkeypatch.setattr(torch.distributions.Distribution, "_validate_args", True)
    loc = torch.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(loc, 0.0)
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(loc, -1.0, validate_args=False)  # a number is always checked
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(loc, math.inf)
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(loc, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(loc, torch.tensor([1.0, -2.0]), validate_args=True)
    with pytest.raises(ValueError, match="scale has last dimension 3"):
        WrappedNormal(loc, torch.ones(3))
    with pytest.raises(ValueError, match="do not broadcast"):
        WrappedNormal(torch.zeros(2, 2), torch.ones(3, 1))
    with pytest.raises(TypeError, match="scale"):
        WrappedNormal(loc, "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scale"):
        WrappedNormal(loc, torch.ones(1, dtype=torch.int64))
    with pytest.raises(TypeError, match="loc"):
        WrappedNormal(torch.zeros(2, dtype=torch.int64), 1.0)
    with pytest.raises(TypeError, match="loc"):
        WrappedNormal([0.1, 0.2], 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(torch.tensor(0.1), 1.0)
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(torch.tensor([0.8, 0.8]), 1.0)
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(torch.tensor([0.5, 0.0]), 1.0, c=4.0)
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(torch.tensor([math.nan, 0.0]), 1.0)
    WrappedNormal(torch.tensor([0.8, 0.8]), 1.0, validate_args=False)  # not checked
    with pytest.raises(ValueError, match="c must be"):
        WrappedNormal(loc, 1.0, c=0.0)
    with pytest.raises(ValueError, match="c must be"):
        WrappedNormal(loc, 1.0, c=torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="c must be"):
        WrappedNormal(loc, 1.0, c=torch.ones(2))
    d = WrappedNormal(loc, 1.0)
    with pytest.raises(ValueError, match="value must be points strictly inside"):
        d.log_prob(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="value has last dimension 3"):
        d.log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="does not broadcast"):
        WrappedNormal(torch.zeros(2, 2), 1.0).log_prob(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="value"):
        d.log_prob(torch.zeros(2, dtype=torch.int64))
    # without validation, points outside the ball are evaluated on the outermost shell
    lp = WrappedNormal(loc, 1.0, validate_args=False).log_prob(torch.tensor([1.0, 0.5]))
    assert bool(torch.isfinite(lp))


# ---------------------------------------------------------------------------------------------
# Program transforms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 3])
def test_vmap(width: int) -> None:
    loc = _point([0.3, -0.5, 0.8], 4.0, torch.float32)
    scale = torch.tensor([0.5, 1.2, 0.3][:width])
    d = WrappedNormal(loc, scale)
    torch.manual_seed(0)
    xs = d.sample((7,))
    torch.testing.assert_close(torch.func.vmap(d.log_prob)(xs), d.log_prob(xs))
    locs = xs

    def draw(loc: Tensor) -> Tensor:
        return WrappedNormal(loc, scale).rsample((2,))

    z = torch.func.vmap(draw, randomness="different")(locs)
    assert z.shape == (7, 2, 3)
    assert_in_ball(z, 1.0, "vmapped samples")
    g = torch.func.vmap(torch.func.grad(lambda x: d.log_prob(x)))(xs)
    assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("width", [1, 3])
def test_compile_fullgraph_log_prob(width: int) -> None:
    """Construction and log_prob (forward and backward) trace into one graph."""
    loc = _point([0.3, -0.5, 0.8], 4.0, torch.float32)
    scale = torch.tensor([0.5, 1.2, 0.3][:width])
    x = torch.stack([_point([1.0, 0.0, 0.2], r, torch.float32) for r in (0.0, 2.0, 15.0)])

    def f(loc: Tensor, scale: Tensor, x: Tensor) -> Tensor:
        return WrappedNormal(loc, scale).log_prob(x)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    leaves = [t.clone().requires_grad_(True) for t in (loc, scale, x)]
    out = compiled(*leaves)
    torch.testing.assert_close(out, f(loc, scale, x))
    out.sum().backward()  # type: ignore[no-untyped-call]
    for t in leaves:
        assert t.grad is not None and bool(torch.isfinite(t.grad).all())


def test_compile_fullgraph_rsample() -> None:
    """Construction and rsample trace into one graph."""
    loc = _point([0.3, -0.5, 0.8], 4.0, torch.float32)
    scale = torch.tensor([0.5, 1.2, 0.3])

    def g(loc: Tensor, scale: Tensor) -> Tensor:
        return WrappedNormal(loc, scale).rsample((6,))

    z = torch.compile(g, fullgraph=True, backend="eager")(loc, scale)
    assert z.shape == (6, 3)
    assert_in_ball(z, 1.0, "compiled samples")
