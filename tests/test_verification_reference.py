"""The mpmath references agree with closed forms, identities and finite differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mpmath
import pytest
import torch

from verification import reference as ref

TOL = mpmath.mpf(10) ** -60
"""Agreement required of identities evaluated at 80 digits (well above float64's 1e-16)."""

CURVATURES = [1.0, 0.1, 3.0]


@pytest.fixture(autouse=True)
def _high_precision() -> Any:
    """Build the test values at the references' precision (the references set their own)."""
    with mpmath.workdps(ref.DPS):
        yield


def close(a: Any, b: Any, tol: Any = TOL) -> bool:
    """Whether two reals or two vectors agree to ``tol`` relative to their size (at least 1)."""
    with mpmath.workdps(ref.DPS):
        if isinstance(a, list):
            assert isinstance(b, list) and len(a) == len(b)
            diff = ref.norm([x - y for x, y in zip(a, b, strict=True)])
            scale = max(ref.norm(a), ref.norm(b), mpmath.mpf(1))
        else:
            diff = abs(mpmath.mpf(a) - mpmath.mpf(b))
            scale = max(abs(mpmath.mpf(a)), abs(mpmath.mpf(b)), mpmath.mpf(1))
        return bool(diff <= tol * scale)


def point(direction: Sequence[float], radius: float, c: float) -> ref.Vec:
    """The point at hyperbolic distance ``radius`` from the origin along ``direction``."""
    with mpmath.workdps(ref.DPS):
        d = [mpmath.mpf(v) for v in direction]
        sc = mpmath.sqrt(mpmath.mpf(c))
        scale = mpmath.tanh(sc * mpmath.mpf(radius) / 2) / (sc * ref.norm(d))
        return [scale * v for v in d]


def sample_points(c: float) -> list[ref.Vec]:
    """A few points of dimension 3, from the origin to very near the boundary (up to
    ``sqrt(c)·d = 30``, close to float64's representable radius 37.4)."""
    sc = c**0.5
    return [
        [mpmath.mpf(0)] * 3,
        point([0.3, -0.2, 0.9], 0.7 / sc, c),
        point([-1.0, 0.5, 0.25], 3.0 / sc, c),
        point([0.1, 0.2, -0.3], 12.0 / sc, c),
        point([0.6, -0.8, 0.1], 30.0 / sc, c),
    ]


@pytest.mark.parametrize("c", CURVATURES)
def test_dist0_closed_form(c: float) -> None:
    with mpmath.workdps(ref.DPS):
        sc = mpmath.sqrt(mpmath.mpf(c))
        x = [mpmath.tanh(sc / 2) / sc, mpmath.mpf(0)]
        assert close(ref.dist0(x, c), 1)
    assert close(ref.dist0([mpmath.tanh(mpmath.mpf(1) / 2), 0, 0], 1.0), 1)


@pytest.mark.parametrize("c", CURVATURES)
def test_dist_matches_arcosh_form(c: float) -> None:
    pts = sample_points(c)
    with mpmath.workdps(ref.DPS):
        cc = mpmath.mpf(c)
        for x in pts:
            for y in pts[1:4]:
                diff = [a - b for a, b in zip(x, y, strict=True)]
                arg = 1 + 2 * cc * ref.dot(diff, diff) / (
                    (1 - cc * ref.dot(x, x)) * (1 - cc * ref.dot(y, y))
                )
                expected = mpmath.acosh(arg) / mpmath.sqrt(cc)
                assert close(ref.dist(x, y, c), expected, mpmath.mpf(10) ** -40)
                assert close(ref.dist(x, y, c), ref.dist(y, x, c))
        assert close(ref.dist(pts[0], pts[2], c), ref.dist0(pts[2], c))


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_add_identities(c: float) -> None:
    pts = sample_points(c)
    zero = pts[0]
    for x in pts:
        assert close(ref.mobius_add(x, zero, c), x)
        assert close(ref.mobius_add(zero, x, c), x)
        assert close(ref.mobius_sub(x, x, c), zero)
        for y in pts[1:4]:
            # left cancellation (-a) ⊕ (a ⊕ b) = b, away from the far shell where it is exact
            # too but the intermediate is closer to the boundary than 80 digits resolve
            back = ref.mobius_add([-v for v in x], ref.mobius_add(x, y, c), c)
            assert close(back, y, mpmath.mpf(10) ** -40)


def test_mobius_add_known_value() -> None:
    # Collinear points at c = 1: (a ⊕ b) = (a + b) / (1 + ab), the relativistic addition.
    with mpmath.workdps(ref.DPS):
        a, b = mpmath.mpf("0.5"), mpmath.mpf("0.25")
        assert close(ref.mobius_add([a, 0], [b, 0], 1.0), [(a + b) / (1 + a * b), 0])


@pytest.mark.parametrize("c", CURVATURES)
def test_maps_round_trips(c: float) -> None:
    pts = sample_points(c)
    for y in pts:
        assert close(ref.expmap0(ref.logmap0(y, c), c), y, mpmath.mpf(10) ** -40)
        v = ref.logmap0(y, c)
        assert close(ref.expmap([0, 0, 0], v, c), ref.expmap0(v, c), mpmath.mpf(10) ** -40)
    for x in pts[:4]:
        for y in pts[:4]:
            v = ref.logmap(x, y, c)
            assert close(ref.expmap(x, v, c), y, mpmath.mpf(10) ** -40)
            # |log_x(y)|_x = λ_x |log_x(y)| = d(x, y)
            assert close(ref.conformal_factor(x, c) * ref.norm(v), ref.dist(x, y, c))
    assert ref.logmap(pts[2], pts[2], c) == [0, 0, 0]
    assert ref.expmap(pts[2], [0, 0, 0], c) == pts[2]


@pytest.mark.parametrize("c", CURVATURES)
def test_scalar_mul_and_matvec(c: float) -> None:
    pts = sample_points(c)
    for x in pts[:4]:
        assert close(ref.mobius_scalar_mul(2, x, c), ref.mobius_add(x, x, c))
        three = ref.mobius_add(x, ref.mobius_add(x, x, c), c)
        assert close(ref.mobius_scalar_mul(3, x, c), three)
        assert close(ref.mobius_scalar_mul(-1, x, c), [-v for v in x])
        assert close(ref.dist0(ref.mobius_scalar_mul(0.5, x, c), c), ref.dist0(x, c) / 2)
        m: list[list[float]] = [[1.0, 2.0, 0.0], [0.0, -1.0, 0.5]]
        with mpmath.workdps(ref.DPS):
            lx = ref.logmap0(x, c)
            mlx = [ref.dot(row, lx) for row in m]
        assert close(ref.mobius_matvec(m, x, c), ref.expmap0(mlx, c), mpmath.mpf(10) ** -40)
        assert close(ref.mobius_matvec([[1, 0, 0], [0, 1, 0], [0, 0, 1]], x, c), x)
        assert ref.mobius_matvec([[0, 0, 0]], x, c) == [0]


@pytest.mark.parametrize("c", CURVATURES)
def test_gyration_transport(c: float) -> None:
    pts = sample_points(c)
    a, b = pts[1], pts[2]
    for u in pts[1:4]:
        lhs = ref.mobius_add(a, ref.mobius_add(b, u, c), c)
        rhs = ref.mobius_add(ref.mobius_add(a, b, c), ref.gyration(a, b, u, c), c)
        assert close(lhs, rhs, mpmath.mpf(10) ** -40)
    big = [mpmath.mpf(30), mpmath.mpf(-4), mpmath.mpf(7)]  # far outside the ball: linear map
    g = ref.gyration(a, b, big, c)
    assert close(ref.norm(g), ref.norm(big))
    assert close(ref.gyration(a, b, [2 * v for v in big], c), [2 * v for v in g])
    x, y = pts[1], pts[3]
    v = ref.logmap(x, y, c)
    moved = ref.transp(x, y, v, c)
    assert close(moved, [-t for t in ref.logmap(y, x, c)], mpmath.mpf(10) ** -40)
    w = [mpmath.mpf(1), mpmath.mpf(2), mpmath.mpf(-3)]
    tw = ref.transp(x, y, w, c)
    assert close(
        ref.conformal_factor(y, c) * ref.norm(tw), ref.conformal_factor(x, c) * ref.norm(w)
    )
    assert close(ref.transp0(y, w, c), ref.transp([0, 0, 0], y, w, c))
    with mpmath.workdps(ref.DPS):
        lam = ref.conformal_factor(y, c)
        assert close(ref.egrad2rgrad(y, w, c), [t / lam**2 for t in w])


@pytest.mark.parametrize("c", CURVATURES)
def test_model_conversions(c: float) -> None:
    for x in sample_points(c)[:4]:
        k = ref.poincare_to_klein(x, c)
        assert close(ref.klein_to_poincare(k, c), x, mpmath.mpf(10) ** -40)
        h = ref.lorentz_to_poincare(ref.poincare_to_lorentz(x, c), c)
        assert close(h, x, mpmath.mpf(10) ** -40)
        lor = ref.poincare_to_lorentz(x, c)
        with mpmath.workdps(ref.DPS):
            minkowski = -(lor[0] ** 2) + ref.dot(lor[1:], lor[1:])
            assert close(minkowski, -1 / mpmath.mpf(c), mpmath.mpf(10) ** -40)
            # Klein distance to the origin: artanh(sqrt(c)|k|)/sqrt(c)
            sc = mpmath.sqrt(mpmath.mpf(c))
            assert close(mpmath.atanh(sc * ref.norm(k)) / sc, ref.dist0(x, c), 10**-40)


@pytest.mark.parametrize("c", CURVATURES)
def test_einstein_midpoint(c: float) -> None:
    pts = sample_points(c)[1:4]
    weights = [1.0, 2.5, 0.25]
    m = ref.einstein_midpoint(pts, weights, c)
    # Ungar's Möbius gyromidpoint: ½ ⊗ (Σ w_i λ_i x_i / Σ w_i (λ_i - 1)).
    with mpmath.workdps(ref.DPS):
        lams = [ref.conformal_factor(p, c) for p in pts]
        den = mpmath.fsum(w * (lam - 1) for w, lam in zip(weights, lams, strict=True))
        num = [
            mpmath.fsum(w * lam * p[j] for w, lam, p in zip(weights, lams, pts, strict=True))
            for j in range(3)
        ]
        gyro = ref.mobius_scalar_mul(0.5, [v / den for v in num], c)
    assert close(m, gyro, mpmath.mpf(10) ** -40)
    assert close(ref.einstein_midpoint([pts[1]] * 3, None, c), pts[1])
    assert close(ref.einstein_midpoint(pts, [0, 1, 0], c), pts[1])
    two = ref.einstein_midpoint(pts[:2], None, c)
    assert close(ref.dist(two, pts[0], c), ref.dist(two, pts[1], c), mpmath.mpf(10) ** -40)
    assert close(2 * ref.dist(two, pts[0], c), ref.dist(pts[0], pts[1], c), mpmath.mpf(10) ** -40)


def test_max_radius_and_project() -> None:
    with mpmath.workdps(ref.DPS):
        assert close(ref.max_radius(torch.float32), mpmath.log(2**25 - 1))
        assert close(ref.max_radius(torch.float64), mpmath.log(2**54 - 1))
        assert close(ref.max_radius(torch.float32, 0.25), 2 * mpmath.log(2**25 - 1))
    assert 17.3 < float(ref.max_radius(torch.float32)) < 17.4
    assert 37.4 < float(ref.max_radius(torch.float64)) < 37.5
    inside = point([1, 1], 10.0, 1.0)
    assert ref.project(inside, 1.0, torch.float32) == inside
    far = point([1, 1], 20.0, 1.0)
    assert close(ref.dist0(ref.project(far, 1.0, torch.float32)), ref.max_radius(torch.float32))
    assert close(ref.project([3, 4], 1.0)[0] / ref.project([3, 4], 1.0)[1], mpmath.mpf(3) / 4)


def test_pairwise_dist() -> None:
    xs = sample_points(1.0)[:3]
    ys = sample_points(1.0)[1:3]
    table = ref.pairwise_dist(xs, ys, 1.0)
    sq = ref.pairwise_dist(xs, ys, 1.0, squared=True)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            assert close(table[i][j], ref.dist(x, y, 1.0))
            assert close(sq[i][j], table[i][j] ** 2)


def test_conversions_exact_and_correctly_rounded() -> None:
    t = torch.tensor([[0.1, -2.5], [1e-30, 3.0]], dtype=torch.float32)
    values = ref.to_mp(t)
    assert values[0][0] == mpmath.mpf(float(torch.tensor(0.1, dtype=torch.float32)))
    assert values[0][0] != mpmath.mpf(0.1)
    assert torch.equal(ref.to_tensor(values, torch.float32), t)
    assert ref.to_mp(torch.tensor(2.0)) == 2
    third = mpmath.mpf(1) / 3
    assert ref.round_to_dtype(third, torch.float32) == float(
        torch.tensor(1 / 3, dtype=torch.float32)
    )
    # 1 + 2^-24 + 2^-60 rounds to 1 + 2^-23 in float32; through float64 it would become 1.
    tricky = 1 + mpmath.ldexp(1, -24) + mpmath.ldexp(1, -60)
    assert ref.round_to_dtype(tricky, torch.float32) == 1 + 2.0**-23
    assert ref.to_floats([third, [third]], torch.float64) == [1 / 3, [1 / 3]]
    with pytest.raises(TypeError):
        ref.to_mp(torch.tensor([1, 2]))


def test_bad_input_and_precision_is_local() -> None:
    x = [mpmath.tanh(mpmath.mpf(1) / 2), mpmath.mpf(0)]
    with mpmath.workdps(15):
        d = ref.dist0(x, 1.0)
        assert mpmath.mp.dps == 15
    assert close(d, 1)
    with pytest.raises(ValueError, match="x must lie strictly inside"):
        ref.dist0([1.0, 0.0], 1.0)
    ref.check_point([0.6, 0.8 - 2**-52], 1.0)
    with pytest.raises(ValueError, match="x must lie strictly inside"):
        ref.check_point([0.6, 0.8], 1.0)  # the float values have |x|^2 = 1 + 4.4e-17
    with pytest.raises(ValueError, match="finite"):
        ref.check_point([float("inf"), 0.0], 1.0)
    with pytest.raises(ValueError, match="c must be positive"):
        ref.expmap0([0.1], 0.0)
    with pytest.raises(ValueError, match="same length"):
        ref.mobius_add([0.1, 0.2], [0.1], 1.0)
    with pytest.raises(ValueError, match="finite"):
        ref.expmap0([float("nan")], 1.0)
    with pytest.raises(ValueError, match="weights"):
        ref.einstein_midpoint([[0.1], [0.2]], [0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="m\\[0\\]"):
        ref.mobius_matvec([[1.0]], [0.1, 0.2], 1.0)


# ----------------------------------------------------------------------------------------------
# Derivatives against plain central differences
# ----------------------------------------------------------------------------------------------


def central_difference(f: Callable[..., Any], args: list[ref.Vec]) -> list[ref.Vec]:
    """Gradient of ``f(*args)`` by a central difference with step 1e-25 at 120 digits."""
    with mpmath.workdps(120):
        h = mpmath.mpf(10) ** -25
        out: list[ref.Vec] = []
        for i, a in enumerate(args):
            g: ref.Vec = []
            for j in range(len(a)):
                up = [list(v) for v in args]
                down = [list(v) for v in args]
                up[i][j] = mpmath.mpf(a[j]) + h
                down[i][j] = mpmath.mpf(a[j]) - h
                g.append((f(*up) - f(*down)) / (2 * h))
            out.append(g)
        return out


FD_TOL = mpmath.mpf(10) ** -30


def fd_points(c: float) -> list[ref.Vec]:
    return [point([0.3, -0.2, 0.9], 0.7, c), point([-1.0, 0.5, 0.25], 6.0, c)]


@pytest.mark.parametrize("c", [1.0, 0.1])
def test_grad_dist_and_dist0(c: float) -> None:
    x, y = fd_points(c)
    dx, dy = ref.grad_dist(x, y, c)
    fx, fy = central_difference(lambda a, b: ref.dist(a, b, c), [x, y])
    assert close(dx, fx, FD_TOL) and close(dy, fy, FD_TOL)
    (f0,) = central_difference(lambda a: ref.dist0(a, c), [y])
    assert close(ref.grad_dist0(y, c), f0, FD_TOL)
    assert ref.grad_dist(x, x, c) == ([0, 0, 0], [0, 0, 0])
    assert ref.grad_dist0([0, 0, 0], c) == [0, 0, 0]


@pytest.mark.parametrize("c", [1.0, 0.1])
def test_grad_point_ops(c: float) -> None:
    x, y = fd_points(c)
    w = [mpmath.mpf("0.5"), mpmath.mpf(-2), mpmath.mpf("1.25")]

    def weighted(op: Callable[..., ref.Vec]) -> Callable[..., Any]:
        return lambda *a: ref.dot(w, op(*a))

    got = ref.grad_mobius_add(x, y, w, c)
    want = central_difference(weighted(lambda a, b: ref.mobius_add(a, b, c)), [x, y])
    assert close(got[0], want[0], FD_TOL) and close(got[1], want[1], FD_TOL)

    v = ref.logmap0(y, c)
    (want_e0,) = central_difference(weighted(lambda a: ref.expmap0(a, c)), [v])
    assert close(ref.grad_expmap0(v, w, c), want_e0, FD_TOL)
    (want_l0,) = central_difference(weighted(lambda a: ref.logmap0(a, c)), [y])
    assert close(ref.grad_logmap0(y, w, c), want_l0, FD_TOL)
    assert close(ref.grad_expmap0([0, 0, 0], w, c), w)

    tv = ref.logmap(x, y, c)
    got = ref.grad_expmap(x, tv, w, c)
    want = central_difference(weighted(lambda a, b: ref.expmap(a, b, c)), [x, tv])
    assert close(got[0], want[0], FD_TOL) and close(got[1], want[1], FD_TOL)

    got = ref.grad_logmap(x, y, w, c)
    want = central_difference(weighted(lambda a, b: ref.logmap(a, b, c)), [x, y])
    assert close(got[0], want[0], FD_TOL) and close(got[1], want[1], FD_TOL)


def test_grad_einstein_midpoint() -> None:
    c = 0.5
    pts = [point([1, 0], 1.0, c), point([0.2, 1], 4.0, c), point([-1, -1], 2.0, c)]
    weights = [mpmath.mpf("0.5"), mpmath.mpf(2), mpmath.mpf("1.5")]
    w = [mpmath.mpf(1), mpmath.mpf(-3)]
    d_points, d_weights = ref.grad_einstein_midpoint(pts, weights, w, c)
    want = central_difference(
        lambda *a: ref.dot(w, ref.einstein_midpoint(list(a[:3]), a[3], c)), [*pts, weights]
    )
    for got_p, want_p in zip(d_points, want[:3], strict=True):
        assert close(got_p, want_p, FD_TOL)
    assert close(d_weights, want[3], FD_TOL)
    # Scaling all weights leaves the midpoint unchanged: the weight gradient is orthogonal to w.
    assert abs(ref.dot(d_weights, weights)) < FD_TOL
