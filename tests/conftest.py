"""Shared configuration of the test suite: Hypothesis profiles and hULP assertion helpers.

Profiles (chosen by the environment variable ``HYPOTHESIS_PROFILE``):

* ``ci`` (the default): deterministic (``derandomize=True``, no example database), a bounded
  number of examples, no deadline (the first call of a torch op is slow), the reproduction blob
  printed on failure;
* ``thorough``: ten times the examples of ``ci``, randomised, for a long local run.

The helpers measure errors the way the numerical contract does (see ``verification.metrics``):
the geodesic distance between a computed and an expected point (evaluated in mpmath on the exact
float values) against a budget of hyperbolic ULPs of the points involved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator

import mpmath
import pytest
import torch
from hypothesis import HealthCheck, note, settings

import poincare
from verification import metrics
from verification import reference as ref

CI_EXAMPLES = 25
THOROUGH_FACTOR = 10

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile(
    "ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, **_COMMON
)
settings.register_profile(
    "thorough", max_examples=CI_EXAMPLES * THOROUGH_FACTOR, derandomize=False, **_COMMON
)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if _PROFILE not in ("ci", "thorough"):
    raise ValueError(f"HYPOTHESIS_PROFILE must be 'ci' or 'thorough', got {_PROFILE!r}")
settings.load_profile(_PROFILE)

#: The dtypes every property is checked in, with readable test ids.
DTYPE_PARAMS = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
]

#: The two implementations of every op under the contract: eager CPU code, with its
#: data-dependent shortcuts, and the branch-free form that ``torch.compile``, ``torch.func``
#: transforms and accelerators take (forced on the CPU by ``poincare.branch_free``).
PATHS = ("eager", "branch-free")


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on one path of :data:`PATHS`: a property module lists it in its
    ``pytestmark = pytest.mark.usefixtures("path")``, so that each of its tests runs twice."""
    if request.param == "branch-free":
        with poincare.branch_free():
            yield request.param
    else:
        yield request.param


#: The bound of the contract: an op is accurate when its error is within 16 hULP.
HULP_BOUND = 16.0


def examples(fraction: float) -> settings:
    """Settings with ``fraction`` of the active profile's ``max_examples`` (at least 2).

    For tests whose examples are expensive (mpmath references, gradients); under ``thorough``
    they still get ten times the ``ci`` count.
    """
    return settings(max_examples=max(2, round(settings.default.max_examples * fraction)))


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of ``dtype`` (the distance from 1 to the next float)."""
    return float(torch.finfo(dtype).eps)


def hulp(q: torch.Tensor, c: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """hULP of the points ``q`` (``(..., D)``) in ``dtype`` (default ``q.dtype``), float64.

    ``hulp(q) = λ_q · eps · max(|q|, eps) · sqrt(c)`` (``verification.metrics.hulp`` on the exact
    values), the length of one float step at ``q`` in units of the curvature radius.
    """
    rows = ref.to_mp(q.detach().reshape(-1, q.shape[-1]))
    out = [float(metrics.hulp(r, c, dtype or q.dtype)) for r in rows]
    return torch.tensor(out, dtype=torch.float64).reshape(q.shape[:-1])


def tangent_ulp_length(
    x: torch.Tensor, v: torch.Tensor, c: float, dtype: torch.dtype
) -> torch.Tensor:
    """The Riemannian length of one float step of a tangent vector ``v`` at ``x``:
    ``eps · λ_x · |v|`` (``verification.metrics.hulp_tangent / sqrt(c)``), float64 ``(...)``."""
    xs = ref.to_mp(x.detach().reshape(-1, x.shape[-1]))
    vs = ref.to_mp(torch.broadcast_to(v, x.shape).detach().reshape(-1, x.shape[-1]))
    out = [
        float(metrics.hulp_tangent(a, b, c, dtype)) / math.sqrt(c)
        for a, b in zip(xs, vs, strict=True)
    ]
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape[:-1])


def dist_hi(p: torch.Tensor, e: torch.Tensor, c: float) -> torch.Tensor:
    """Geodesic distance between the points ``p`` and ``e`` (``(..., D)``), float64 ``(...)``.

    ``d = 2/sqrt(c) · asinh( sqrt(c)|p - e| / sqrt((1 - c|p|^2)(1 - c|e|^2)) )``, a form without
    cancellation; evaluated in mpmath at ``verification.reference.DPS`` digits on the exact float
    values. Points on or outside the ball give ``inf``.
    """
    p64 = p.detach().to(torch.float64).reshape(-1, p.shape[-1])
    e64 = e.detach().to(torch.float64).reshape(-1, e.shape[-1])
    out = []
    with mpmath.workdps(ref.DPS):
        cm = mpmath.mpf(c)
        for pr, er in zip(p64.tolist(), e64.tolist(), strict=True):
            pm = [mpmath.mpf(v) for v in pr]
            em = [mpmath.mpf(v) for v in er]
            dpe = mpmath.sqrt(mpmath.fsum((a - b) ** 2 for a, b in zip(pm, em, strict=True)))
            wp = 1 - cm * mpmath.fsum(a * a for a in pm)
            we = 1 - cm * mpmath.fsum(b * b for b in em)
            if wp <= 0 or we <= 0:
                out.append(math.inf)
                continue
            sc = mpmath.sqrt(cm)
            out.append(float(2 / sc * mpmath.asinh(sc * dpe / mpmath.sqrt(wp * we))))
    return torch.tensor(out, dtype=torch.float64).reshape(p.shape[:-1])


def hexdump(name: str, t: torch.Tensor) -> str:
    """``name = [[float.hex, ...], ...]`` with the exact values of ``t``, for counterexamples."""

    def conv(v: object) -> object:
        if isinstance(v, list):
            return [conv(w) for w in v]
        assert isinstance(v, float)
        return v.hex()

    return f"{name} ({t.dtype}, shape {tuple(t.shape)}) = {conv(t.detach().double().tolist())}"


def note_tensors(**tensors: torch.Tensor) -> None:
    """Record the exact values of ``tensors`` so that a failing example can be reproduced."""
    for name, t in tensors.items():
        note(hexdump(name, t))


def ulp_length(q: torch.Tensor, c: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The hyperbolic length of one float step at ``q``: ``hulp(q) / sqrt(c)`` (float64 ``(...)``).

    ``hulp`` is measured in units of the curvature radius ``1/sqrt(c)``; dividing by ``sqrt(c)``
    expresses it in the units of ``dist`` so that the two can be compared for every ``c``.
    """
    return hulp(q, c, dtype) / math.sqrt(c)


def budget(c: float, dtype: torch.dtype, *stages: Iterable[torch.Tensor]) -> torch.Tensor:
    """Error budget of a composition of ops, a float64 distance.

    Each stage is the iterable of points (inputs and output) of one op; the budget is
    ``HULP_BOUND · Σ_stages Σ_points ulp_length(point)``: every op may be off by 16 hULP of the
    points it touches, and the left gyrotranslations, gyrations and contractions that carry an
    earlier error into the final result do not enlarge it.
    """
    total: torch.Tensor | None = None
    for stage in stages:
        for q in stage:
            h = ulp_length(q, c, dtype)
            total = h if total is None else total + h
    if total is None:
        raise ValueError("budget needs at least one point")
    return HULP_BOUND * total


def scalar_budget(
    c: float,
    dtype: torch.dtype,
    values: Iterable[torch.Tensor | float] = (),
    points: Iterable[torch.Tensor] = (),
) -> torch.Tensor:
    """Budget of a distance comparison: ``16 · (Σ eps·|value| + Σ ulp_length(point))``."""
    total = torch.zeros((), dtype=torch.float64)
    for v in values:
        vt = v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else torch.tensor(v)
        total = total + eps(dtype) * vt.abs()
    for q in points:
        total = total + ulp_length(q, c, dtype)
    return HULP_BOUND * total


def assert_points_close(
    p: torch.Tensor, e: torch.Tensor, c: float, bound: torch.Tensor, what: str
) -> None:
    """Assert ``d_H(p, e) <= bound`` elementwise; the message gives the worst ratio in units of it.

    ``bound`` is a float64 tensor broadcastable to ``p.shape[:-1]`` (see :func:`budget`).
    """
    assert p.shape == e.shape, f"{what}: shapes {tuple(p.shape)} != {tuple(e.shape)}"
    assert bool(torch.isfinite(p).all()), f"{what}: non-finite result"
    d = dist_hi(p, e, c)
    b = torch.broadcast_to(bound, d.shape)
    ratio = d / b
    worst = float(ratio.max()) if ratio.numel() else 0.0
    assert bool((d <= b).all()), (
        f"{what}: geodesic error {float(d.max()):.3e} is {worst:.2f}x the budget "
        f"({HULP_BOUND:g} hULP of every point involved)"
    )


def assert_scalars_close(p: torch.Tensor, e: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    """Assert ``|p - e| <= bound`` elementwise (float64), reporting the worst ratio."""
    diff = (p.detach().to(torch.float64) - e.detach().to(torch.float64)).abs()
    assert bool(torch.isfinite(p).all()), f"{what}: non-finite result"
    b = torch.broadcast_to(bound, diff.shape)
    assert bool((diff <= b).all()), (
        f"{what}: error {float(diff.max()):.3e} is {float((diff / b).max()):.2f}x its budget"
    )


def assert_in_ball(x: torch.Tensor, c: float, what: str) -> None:
    """Assert every point of ``x`` is finite and strictly inside the ball (``c|x|^2 < 1`` exactly).

    The test is ``verification.reference.in_ball`` on the exact values, so rounding cannot hide a
    point on the boundary.
    """
    assert bool(torch.isfinite(x).all()), f"{what}: non-finite output"
    for r in rows(x, x.dim() - 1):
        assert ref.in_ball(r, c), (  # type: ignore[arg-type]
            f"{what}: a point is on or outside the ball: {[float(v).hex() for v in r]}"  # type: ignore[attr-defined]
        )


def rows(t: torch.Tensor, lead: int) -> list[object]:
    """The exact values of ``t`` as a flat list over its first ``lead`` dimensions."""
    flat = t.detach().reshape(-1, *t.shape[lead:]) if lead else t.detach().reshape(1, *t.shape)
    return list(ref.to_mp(flat))


def input_hulps(
    c: float,
    dtype: torch.dtype,
    batch: tuple[int, ...],
    points: Iterable[torch.Tensor] = (),
    tangents: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
) -> list[float]:
    """Σ of the hULP of the inputs of each element of a batch (shape ``batch``), as floats.

    ``points`` are point inputs of shape ``(*batch, D)`` or ``(*batch, N, D)`` (the ``N`` points
    of a midpoint each count); ``tangents`` are pairs ``(x, v)`` of a tangent vector ``v`` at
    ``x`` (``verification.metrics.hulp_tangent``).
    """
    n = 1
    for s in batch:
        n *= s
    total = [0.0] * n
    for q in points:
        h = hulp(q, c, dtype).reshape(n, -1).sum(-1)
        total = [a + float(b) for a, b in zip(total, h, strict=True)]
    for x, v in tangents:
        xs = rows(torch.broadcast_to(x, (*batch, x.shape[-1])), len(batch))
        vs = rows(torch.broadcast_to(v, (*batch, v.shape[-1])), len(batch))
        total = [
            a + float(metrics.hulp_tangent(xr, vr, c, dtype))
            for a, xr, vr in zip(total, xs, vs, strict=True)
        ]
    return total


def assert_matches_reference(
    p: torch.Tensor,
    exact: list[object],
    c: float,
    dtype: torch.dtype,
    hulps: list[float],
    what: str,
    kind: str = "point",
    at: torch.Tensor | None = None,
) -> None:
    """Assert the contract: each computed value is within 16 hULP of its exact value.

    ``p`` has shape ``(*batch, D)`` for points and tangent vectors or ``(*batch,)`` for scalars;
    ``exact`` holds the mpmath values of the flattened batch; ``hulps`` the inputs' hULP sums
    (:func:`input_hulps`); ``kind`` is ``"point"``, ``"scalar"`` or ``"tangent"`` (then ``at`` are
    the base points). Uses ``verification.metrics.point_error``/``scalar_error``/``tangent_error``.
    """
    lead = p.dim() - (0 if kind == "scalar" else 1)
    ps = rows(p, lead)
    errs: list[float] = []
    for i, (pr, er, h) in enumerate(zip(ps, exact, hulps, strict=True)):
        if kind == "point":
            errs.append(metrics.point_error(pr, er, c, dtype, [h]))  # type: ignore[arg-type]
        elif kind == "scalar":
            errs.append(metrics.scalar_error(pr, er, c, dtype, [h]))
        else:
            assert at is not None
            xr = rows(torch.broadcast_to(at, p.shape), lead)[i]
            errs.append(metrics.tangent_error(xr, pr, er, c, dtype, [h]))  # type: ignore[arg-type]
    worst = max(errs) if errs else 0.0
    if worst > HULP_BOUND:
        j = errs.index(worst)
        note(f"{what}: worst element {j}: {hexdump('p', p.reshape(len(ps), -1)[j])}")
    assert worst <= HULP_BOUND, f"{what}: {worst:.2f} hULP > {HULP_BOUND:g}"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (tiny tensors: threads only contend on a busy 2-core box),
    restored after it. Modules use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
