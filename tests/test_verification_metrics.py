"""The hULP metrics: zero on exact values, about one for a one-ulp perturbation, and the
usable-radius logic on synthetic tables."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import mpmath
import pytest
import torch
from hidden_modules import hiding_env

from verification import metrics
from verification import reference as ref
from verification.metrics import BandResult

DTYPES = [torch.float32, torch.float64]
CURVATURES = [1.0, 0.1, 4.0]


@pytest.fixture(autouse=True)
def _high_precision() -> Any:
    """Build the test values at the references' precision."""
    with mpmath.workdps(ref.DPS):
        yield


def radial_point(unit_radius: float, c: float) -> ref.Vec:
    """A point of dimension 3 at hyperbolic distance ``unit_radius / sqrt(c)`` from 0."""
    sc = mpmath.sqrt(mpmath.mpf(c))
    direction = [mpmath.mpf(2), mpmath.mpf(-1), mpmath.mpf("0.5")]
    scale = mpmath.tanh(sc * (mpmath.mpf(unit_radius) / sc) / 2) / (sc * ref.norm(direction))
    return [scale * v for v in direction]


def scaled(v: ref.Vec, factor: Any) -> ref.Vec:
    return [factor * a for a in v]


def test_hulp_values() -> None:
    eps = mpmath.mpf(torch.finfo(torch.float32).eps)
    assert metrics.hulp([0.5, 0.0], 1.0, torch.float32) == mpmath.mpf(8) / 3 * eps * 0.5
    assert metrics.hulp([0.0, 0.0], 4.0, torch.float32) == 2 * eps * eps * 2
    assert metrics.hulp_tangent([0.0], [3.0], 1.0, torch.float64) == 2 * 3 * mpmath.mpf(2) ** -52
    with pytest.raises(ValueError, match="inside the ball"):
        metrics.hulp([1.0, 0.0], 1.0, torch.float32)
    with pytest.raises(TypeError, match="dtype"):
        metrics.machine_eps(torch.int32)
    with pytest.raises(ValueError, match="c must be positive"):
        metrics.hulp([0.1], -1.0, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
def test_zero_on_exact_values(dtype: torch.dtype, c: float) -> None:
    e = radial_point(5.0, c)
    x = radial_point(2.0, c)
    assert metrics.point_error(e, e, c, dtype) == 0.0
    assert metrics.scalar_error(ref.dist0(e, c), ref.dist0(e, c), c, dtype) == 0.0
    assert metrics.relative_error(mpmath.mpf(3), mpmath.mpf(3), dtype) == 0.0
    assert metrics.relative_error(e, e, dtype) == 0.0
    assert metrics.squared_length_error(9, 9, c, dtype) == 0.0
    assert metrics.tangent_error(x, e, e, c, dtype) == 0.0
    zero = [mpmath.mpf(0)] * 3
    assert metrics.point_error(zero, zero, c, dtype) == 0.0
    assert metrics.tangent_error(x, zero, zero, c, dtype) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CURVATURES)
@pytest.mark.parametrize("unit_radius", [0.01, 1.0, 8.0, 14.0])
def test_one_ulp_perturbation_scores_one(dtype: torch.dtype, c: float, unit_radius: float) -> None:
    eps = metrics.machine_eps(dtype)
    sc = mpmath.sqrt(c)
    e = radial_point(unit_radius, c)
    # A relative perturbation by eps, outwards and inwards. Where a float step is not small
    # against the distance to the boundary (float32 at radius 14) the score is not linear in
    # the step any more, and only close to one.
    linear = eps / (1 - sc * ref.norm(e)) < 1e-3
    for factor in (1 + eps, 1 - eps):
        err = metrics.point_error(scaled(e, factor), e, c, dtype)
        assert err == pytest.approx(1.0, rel=1e-3 if linear else 0.1)
    d = ref.dist0(e, c)
    assert metrics.scalar_error(d * (1 + eps), d, c, dtype) == pytest.approx(1.0, rel=1e-12)
    assert metrics.relative_error(d * (1 - eps), d, dtype) == pytest.approx(1.0, rel=1e-12)
    assert metrics.relative_error(scaled(e, 1 + eps), e, dtype) == pytest.approx(1.0, rel=1e-12)
    d2 = d * d * (1 + eps) ** 2  # (d (1 + eps))^2: one step of d counts as one step
    assert metrics.squared_length_error(d2, d * d, c, dtype) == pytest.approx(2.0, rel=1e-6)
    x = radial_point(unit_radius / 2, c)
    v = ref.logmap(x, e, c)
    assert metrics.tangent_error(x, scaled(v, 1 + eps), v, c, dtype) == pytest.approx(1.0)
    k = ref.poincare_to_klein(e, c)
    if eps / (1 - sc * ref.norm(k)) < 1e-3:  # the Klein model's steps are coarser
        dk = ref.dist(ref.klein_to_poincare(scaled(k, 1 + eps), c), e, c)
        assert sc * dk / metrics.hulp_klein(k, c, dtype) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_float_step_of_a_coordinate(dtype: torch.dtype) -> None:
    # The next float after a coordinate moves the point by at most one hULP, at least half.
    for value in (0.3, 0.75, 0.999):
        exact = torch.tensor([value, 0.0], dtype=dtype)
        moved = exact.clone()
        moved[0] = torch.nextafter(exact[0], torch.tensor(2.0, dtype=dtype))
        err = metrics.point_error(ref.to_mp(moved), ref.to_mp(exact), 1.0, dtype)
        assert 0.5 <= err <= 1.0 + 1e-6


def test_input_allowances_and_failures() -> None:
    c, dtype = 1.0, torch.float32
    eps = metrics.machine_eps(dtype)
    e = radial_point(6.0, c)
    p = scaled(e, 1 + 4 * eps)
    alone = metrics.point_error(p, e, c, dtype)
    with_input = metrics.point_error(p, e, c, dtype, [metrics.hulp(e, c, dtype)])
    assert with_input == pytest.approx(alone / 2, rel=1e-6)
    assert alone == pytest.approx(4.0, rel=1e-3)
    assert metrics.point_error([float("nan"), 0.0, 0.0], e, c, dtype) == math.inf
    outside = scaled(e, 1 / (mpmath.sqrt(c) * ref.norm(e)))
    assert metrics.point_error(outside, e, c, dtype) == math.inf
    assert metrics.scalar_error(float("inf"), 1.0, c, dtype) == math.inf
    assert metrics.tangent_error(e, [float("nan")] * 3, e, c, dtype) == math.inf
    with pytest.raises(ValueError, match="same length"):
        metrics.point_error([0.1], e, c, dtype)


def band(radius: float, error: float = 1.0, **flags: Any) -> BandResult:
    values: dict[str, Any] = {"samples": 8, "finite": True, "in_ball": True, "grad_finite": True}
    values.update(flags)
    return BandResult(radius=radius, max_error=error, **values)


def test_usable_radius_synthetic_tables() -> None:
    radii = [0.5, 1.0, 2.0, 5.0, 8.0, 17.3]
    assert metrics.usable_radius([band(r) for r in radii]) == 17.3
    failing_at_8 = [band(r, 40.0 if r == 8.0 else 1.0) for r in radii]
    assert metrics.usable_radius(failing_at_8) == 5.0
    # a band passing again after a failing one does not count, whatever the order given
    assert metrics.usable_radius(list(reversed(failing_at_8))) == 5.0
    assert metrics.usable_radius([band(0.5, 17.0), band(1.0)]) == 0.0
    assert metrics.usable_radius([]) == 0.0
    assert metrics.usable_radius([band(1.0, 16.0), band(2.0, 16.0001)]) == 1.0
    for flag in ("finite", "in_ball", "grad_finite"):
        assert metrics.usable_radius([band(1.0), band(2.0, **{flag: False})]) == 1.0
    assert metrics.usable_radius([band(1.0), band(2.0, samples=0)]) == 1.0
    assert metrics.usable_radius([band(1.0), band(2.0, math.inf)]) == 1.0
    assert metrics.usable_radius([band(1.0), band(2.0, 30.0)], limit=32.0) == 2.0
    with pytest.raises(ValueError, match="distinct"):
        metrics.usable_radius([band(1.0), band(1.0)])
    with pytest.raises(ValueError, match="limit"):
        metrics.usable_radius([band(1.0)], limit=0.0)


# ----------------------------------------------------------------------------------------------
# The report's core, as data
# ----------------------------------------------------------------------------------------------


def naive_mobius_add(args: list[torch.Tensor], c: float) -> torch.Tensor:
    """Möbius addition straight from the formula, without any stabilising algebra."""
    x, y = args
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c * c * x2 * y2)


def test_report_table_as_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from verification import report

    rep = report.measure(["dist0", "mobius_add"], [torch.float64], samples=2, c=1.0)
    top = float(ref.max_radius(torch.float64))
    for op in ("dist0", "mobius_add"):
        bands = rep.table[("poincare", op, "float64")]
        assert [b.radius for b in bands] == report.band_radii(torch.float64, 1.0)
        assert bands[-1].radius == pytest.approx(top)
        assert all(b.samples == 2 for b in bands)
        assert rep.usable("poincare", op, "float64") == pytest.approx(top)
    assert "dist0" in report.format_report(rep)

    # The same measurement catches the plain formula, which cancels for x ⊕ (-x') with x' close
    # to x (and divides 0 by 0 for x ⊕ (-x)), on a problem that is itself well conditioned.
    naive = report.OpSpec("mobius_add", report.draw_mobius_add, naive_mobius_add)
    monkeypatch.setitem(report.OPS, "mobius_add", naive)
    rep = report.measure(["mobius_add"], [torch.float32], samples=6)
    usable = rep.usable("poincare", "mobius_add", "float32")
    assert usable < float(ref.max_radius(torch.float32))
    worst = rep.worst[("poincare", "mobius_add", "float32")]
    assert worst.reason and worst.radius > usable
    assert worst.error > 100 and worst.sensitivity < 1
    assert "Failing inputs of poincare" in report.format_report(rep)
    with pytest.raises(ValueError, match="unknown op"):
        report.measure(["no_such_op"])


def test_report_across_curvatures_and_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """One report per curvature, both paths of this library measured, a summary table, and
    :func:`~verification.report.shortfalls` naming every path of an op that falls short."""
    from verification import report

    reports = report.measure_curvatures(
        [1.0, 0.1], ["dist0"], [torch.float32], samples=2, paths=list(report.PATHS)
    )
    assert [r.c for r in reports] == [1.0, 0.1]
    for rep in reports:
        assert {k[0] for k in rep.table} == set(report.OURS)
        assert report.shortfalls(rep) == []
    summary = report.format_summary(reports).splitlines()
    assert summary[0] == "| op | c = 1, float32 | c = 0.1, float32 |"
    assert summary[3] == "| `dist0` | max | max |"

    naive = report.OpSpec("mobius_add", report.draw_mobius_add, naive_mobius_add)
    monkeypatch.setitem(report.OPS, "mobius_add", naive)
    (rep,) = report.measure_curvatures(
        [0.1], ["mobius_add"], [torch.float32], samples=6, paths=list(report.PATHS)
    )
    short = report.shortfalls(rep)
    assert len(short) == 2 and all("mobius_add float32" in line for line in short)
    assert " / " in report.format_summary([rep])
    # a documented miss is held to its documented radius (in curvature radii), not beyond
    usable = rep.usable("poincare", "mobius_add", "float32") * 0.1**0.5
    monkeypatch.setitem(report.KNOWN_MISSES, ("mobius_add", "float32"), usable)
    assert report.shortfalls(rep) == []
    monkeypatch.setitem(report.KNOWN_MISSES, ("mobius_add", "float32"), usable * 1.5)
    assert len(report.shortfalls(rep)) == 2
    with pytest.raises(ValueError, match="unknown path"):
        report.measure_curvatures([1.0], ["dist0"], paths=["fast"])


def test_report_command_line(tmp_path: Path) -> None:
    """The command's exit status and last lines; without matplotlib it stops in one line
    before any work, unless no plot is asked for."""
    root = Path(__file__).resolve().parent.parent
    base = [sys.executable, "-m", "verification.report", "--ops", "dist0", "--samples", "1"]
    env = hiding_env(tmp_path / "hide", ("matplotlib",))
    done = subprocess.run(
        [*base, "--c", "1", "0.1"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        "python -m verification.report: error: the accuracy report's plot needs matplotlib, "
        "which is not installed: pip install 'poincare-hyperbolic[verify]'"
    )
    done = subprocess.run(
        [*base, "--c", "1", "0.1", "--no-plot", "--jobs", "1"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "| `dist0` | max | max | max | max |"
