"""geoopt's Riemannian optimisers on ``PoincareBall``: from the centre, from the outermost shells
and towards them, in both dtypes and at several curvatures, beside geoopt's own ball.

Every run is one ``geoopt.ManifoldParameter`` whose rows are independent problems (the objective
is a sum over rows and RiemannianAdam's second moment is one value per point), pulled from a
start to a target at hyperbolic radii given in units of the curvature radius ``1/sqrt(c)``. The
far radius is 12 in float32 (a float step there is about 0.01) and 30 in float64.

Heavy-ball momentum has a limit of its own in negative curvature: across the geodesic to the
target the Hessian of the distance is ``sqrt(c) coth(sqrt(c) d) >= sqrt(c)``, so a transported
momentum's sideways error grows by about ``beta1 (1 + eta sqrt(c))`` per step of length
``eta``, on any implementation of the ball. Long runs at large steps therefore take a small
``beta1`` (or a small step), and the step decays.
"""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
from conftest import hulp

import poincare
from benchmarks import optimisers
from benchmarks.optimisers import Problem, minimise, points, problems

with warnings.catch_warnings():
    # geoopt 0.5.1 decorates functions with the deprecated torch.jit.script at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import geoopt

#: (dtype, curvature) of the convergence runs, and the far radius of each dtype.
CASES = [
    pytest.param(torch.float32, 1.0, id="float32-c1"),
    pytest.param(torch.float32, 0.1, id="float32-c0.1"),
    pytest.param(torch.float64, 1.0, id="float64-c1"),
    pytest.param(torch.float64, 10.0, id="float64-c10"),
]
FAR = {torch.float32: 12.0, torch.float64: 30.0}


def _pairs(far: float) -> list[tuple[float, float]]:
    """(start radius, target radius): outwards, inwards, along the outermost shells, between
    mid-radius points, to the centre and from near it."""
    return [(0.0, far), (far, 1.0), (far, far - 4.0), (8.0, 8.0), (far, 0.0), (1.0, far)]


def _problem(
    dtype: torch.dtype, c: float, pairs: list[tuple[float, float]], *, squared: bool, seed: int = 1
) -> Problem:
    """Rows from ``pairs`` (radii in units of ``1/sqrt(c)``), each start and target in its own
    random direction."""
    g = torch.Generator().manual_seed(seed)
    s = 1 / math.sqrt(c)
    starts, targets = (torch.tensor([p[i] * s for p in pairs]) for i in (0, 1))
    d0, d1 = (torch.randn(len(pairs), 4, generator=g, dtype=torch.float64) for _ in range(2))
    return Problem(
        "rows",
        points(starts, d0, c=c, dtype=dtype),
        points(targets, d1, c=c, dtype=dtype),
        squared,
    )


def _final_distances(problem: Problem, final: torch.Tensor, c: float) -> torch.Tensor:
    """Per row, in units of the curvature radius; the final points are in the ball."""
    assert final.dtype == problem.start.dtype
    poincare.check_point(final, c=c)
    return poincare.dist(final.double(), problem.target.double(), c=c) * math.sqrt(c)


@pytest.mark.parametrize(("dtype", "c"), CASES)
def test_adam_converges_between_the_centre_and_the_outermost_shells(
    dtype: torch.dtype, c: float
) -> None:
    problem = _problem(dtype, c, _pairs(FAR[dtype]), squared=False)
    start = _final_distances(problem, problem.start, c)
    assert float(start.min()) > 11.9
    out = minimise(
        poincare.PoincareBall(c), problem, c=c, lr=2.0 / math.sqrt(c), steps=150, decay=0.97,
        betas=(0.3, 0.99),
    )  # fmt: skip
    final = _final_distances(problem, out.final, c)
    assert float(final.max()) < 0.05, f"final distances {final.tolist()}"


def test_adam_with_geoopts_settings_converges_from_far_out_in_float32() -> None:
    """lr 0.2 and the default betas, 300 steps: the 12 -> 1 and 8 -> 8 runs, and 0 -> 12."""
    problem = _problem(torch.float32, 1.0, [(12.0, 1.0), (8.0, 8.0), (0.0, 12.0)], squared=False)
    out = minimise(poincare.PoincareBall(), problem, c=1.0, lr=0.2, steps=300)
    final = _final_distances(problem, out.final, 1.0)
    assert float(final.max()) < 0.1, f"final distances {final.tolist()}"


def test_adam_does_as_well_as_on_geoopts_own_ball() -> None:
    """The benchmark's problems (float64, c = 1, default betas, lr 0.3 for 150 steps), on both
    balls: the distance runs end within 0.1 and the 64-point sum of squared distances below 1e-6
    of its start, on this library's ball as on geoopt's."""
    rows, many = problems()[:2], problems()[2]
    pair = Problem("both", torch.cat([p.start for p in rows]), torch.cat([p.target for p in rows]))
    balls = {"ours": poincare.PoincareBall(), "geoopt": geoopt.PoincareBall(c=torch.tensor(1.0))}
    for name, ball in balls.items():
        out = minimise(ball, pair, c=1.0, lr=0.3, steps=150)
        final = _final_distances(pair, out.final, 1.0)
        assert float(final.max()) < 0.1, f"{name}: final distances {final.tolist()}"
        out = minimise(ball, many, c=1.0, lr=0.3, steps=150)
        assert out.final_loss < 1e-6 * out.start_loss, f"{name}: {out}"
        assert out.final_radius < 6.0


@pytest.mark.parametrize(("dtype", "c"), CASES)
def test_sgd_converges_between_the_centre_and_the_outermost_shells(
    dtype: torch.dtype, c: float
) -> None:
    """On the sum of squared distances each step of 0.3 x the gradient goes 60 % of the way
    along the geodesic, whatever the curvature: 20 steps leave a float step or so."""
    problem = _problem(dtype, c, _pairs(FAR[dtype]), squared=True)
    out = minimise(poincare.PoincareBall(c), problem, c=c, optimiser="sgd", lr=0.3, steps=20)
    final = _final_distances(problem, out.final, c)
    assert float(final.max()) < 0.01, f"final distances {final.tolist()}"


@pytest.mark.parametrize(("dtype", "c"), CASES[1:3])
def test_sgd_with_momentum_converges_from_far_out(dtype: torch.dtype, c: float) -> None:
    """Momentum makes every step a ``retr_transp``. geoopt's RiemannianSGD seeds its momentum
    buffer with the Euclidean gradient (before ``egrad2rgrad``), which far out is ``lambda^2``
    times too long, on geoopt's own ball too; one step with a zero gradient seeds it with
    zeros first, and leaves the point where it is (within a float step: float32 ``expmap(x, 0)``
    may round a far-out point to a neighbour)."""
    problem = _problem(dtype, c, _pairs(FAR[dtype]), squared=False)
    ball = poincare.PoincareBall(c)
    param = geoopt.ManifoldParameter(problem.start.clone(), manifold=ball)
    opt = geoopt.optim.RiemannianSGD([param], lr=1.2 / math.sqrt(c), momentum=0.3)
    param.grad = torch.zeros_like(param)
    opt.step()
    assert not opt.state[param]["momentum_buffer"].any()
    moved = poincare.dist(param.detach().double(), problem.start.double(), c=c) * math.sqrt(c)
    assert bool((moved <= 2 * hulp(problem.start, c)).all()), f"moved {moved.tolist()}"
    for _ in range(200):
        opt.zero_grad()
        ball.dist(param, problem.target).sum().backward()
        opt.step()
        opt.param_groups[0]["lr"] *= 0.975
    final = _final_distances(problem, param.detach(), c)
    assert float(final.max()) < 0.05, f"final distances {final.tolist()}"


def test_sparse_adam_moves_only_the_rows_it_sees() -> None:
    """SparseRiemannianAdam on an embedding table on the ball, rows far out in float32."""
    c = 1.0
    problem = _problem(torch.float32, c, _pairs(FAR[torch.float32]), squared=False)
    ball = poincare.PoincareBall(c)
    table = geoopt.ManifoldParameter(problem.start.clone(), manifold=ball)
    opt = geoopt.optim.SparseRiemannianAdam([table], lr=2.0, betas=(0.3, 0.99))
    seen = torch.tensor([0, 1, 2, 4])
    for _ in range(100):
        opt.zero_grad()
        rows = torch.nn.functional.embedding(seen, table, sparse=True)
        ball.dist(rows, problem.target[seen]).sum().backward()
        opt.step()
        opt.param_groups[0]["lr"] *= 0.96
    final = _final_distances(problem, table.detach(), c)
    assert float(final[seen].max()) < 0.05, f"final distances {final.tolist()}"
    unseen = torch.tensor([3, 5])
    assert torch.equal(table.detach()[unseen], problem.start[unseen])


def test_manifold_tensor_methods_reach_the_ball() -> None:
    """``geoopt.ManifoldTensor`` forwards its methods (some with keywords) to the ball."""
    ball = poincare.PoincareBall(0.5)
    g = torch.Generator().manual_seed(3)
    x = points(torch.tensor([1.0, 9.0]), torch.randn(2, 3, generator=g), c=0.5, dtype=torch.float64)
    y = points(torch.tensor([4.0, 2.0]), torch.randn(2, 3, generator=g), c=0.5, dtype=torch.float64)
    u, v = torch.randn(2, 2, 3, generator=g, dtype=torch.float64)
    t = geoopt.ManifoldTensor(x, manifold=ball)
    y1, v1 = ball.expmap_transp(x, u, v)
    assert torch.equal(t.retr(u), y1) and torch.equal(t.expmap(u), y1)
    assert torch.equal(t.retr_transp(u, v)[1], v1) and torch.equal(t.expmap_transp(u, v)[1], v1)
    assert torch.equal(t.transp_follow_retr(u, v), v1)
    assert torch.equal(t.transp_follow_expmap(u, v), v1)
    assert torch.equal(t.transp(y, v), ball.transp(x, y, v))
    assert torch.equal(t.inner(u, v), ball.inner(x, u, v))
    assert torch.equal(t.proju(u), u)
    assert torch.equal(t.logmap(y), ball.logmap(x, y))
    assert torch.equal(t.dist(y, p="g"), ball.dist(x, y))
    assert t.unpack_tensor() is t
    assert "PoincareBall" in repr(t)


def test_manifold_parameter_copies_saves_and_steps_with_a_learnable_ball() -> None:
    ball = poincare.PoincareBall(0.25, learnable=True)
    p = geoopt.ManifoldParameter(ball.random(4, 3, std=2.0, dtype=torch.float64), manifold=ball)
    q = copy.deepcopy(p)
    assert isinstance(q, geoopt.ManifoldParameter) and torch.equal(q.data, p.data)
    assert q.manifold is not ball and float(q.manifold.c.detach()) == pytest.approx(0.25)
    buffer = io.BytesIO()
    torch.save(p, buffer)
    buffer.seek(0)
    r = torch.load(buffer, weights_only=False)
    assert torch.equal(r.data, p.data) and isinstance(r.manifold, poincare.PoincareBall)
    # A step on the learnable ball: the points move inwards, the curvature receives a gradient.
    opt = geoopt.optim.RiemannianAdam([p], lr=0.1)
    before = ball.dist0(p.detach())
    ball.dist0(p).sum().backward()
    opt.step()
    assert bool((ball.dist0(p.detach()) < before).all()) and ball.log_c.grad is not None


def test_checks_answer_as_geoopts() -> None:
    """``check_*`` return ``ok`` or ``(ok, reason)``; ``assert_*`` raise naming the argument."""
    ball = poincare.PoincareBall(4.0)
    inside = torch.tensor([[0.1, 0.2], [0.49, 0.0]], dtype=torch.float64)
    assert ball.check_point(inside) is True
    assert ball.check_point(torch.tensor(0.5), explain=True) == (
        False, "x must have at least one dimension (the vector dimension)",
    )  # fmt: skip
    assert ball.check_point_on_manifold(inside, explain=True) == (True, None)
    ball.assert_check_point_on_manifold(inside)
    # |x| = 0.5 + 1e-9 lies outside the ball of radius 1/2, within geoopt's default tolerance
    # of its projection but not within a tolerance of 0.
    drifted = torch.tensor([[0.5 + 1e-9, 0.0]], dtype=torch.float64)
    assert ball.check_point_on_manifold(drifted) is True
    ok, reason = ball.check_point_on_manifold(drifted, atol=0.0, rtol=0.0, explain=True)
    assert not ok and reason is not None and "1 point(s) outside" in reason
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        ball.assert_check_point_on_manifold(torch.tensor([[0.6, 0.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        ball.assert_check_point_on_manifold(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        ball.assert_check_point([0.1, 0.2])  # type: ignore[arg-type]
    assert ball.check_vector(torch.zeros(3)) is True
    assert ball.check_vector_on_tangent(inside, torch.ones(2)) is True
    ok, reason = ball.check_vector_on_tangent(inside, torch.ones(3), explain=True)
    assert not ok and reason is not None and reason.startswith("u has last dimension 3")
    with pytest.raises(ValueError, match="u of shape"):
        ball.assert_check_vector_on_tangent(inside, torch.ones(3, 2))
    assert ball.check_vector_on_tangent(torch.ones(1, 2), torch.ones(2), ok_point=True) is True
    assert ball.check_vector_on_tangent(torch.ones(1, 2), torch.ones(2)) is False


def test_bad_tangent_vectors_are_named() -> None:
    ball = poincare.PoincareBall()
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="v has last dimension 2"):
        ball.inner(x, torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="u of shape"):
        ball.component_inner(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="u has last dimension 4"):
        ball.norm(x, torch.ones(4))
    with pytest.raises(ValueError, match="u of shape"):
        ball.proju(x, torch.ones(5, 3))
    with pytest.raises(ValueError, match="pack_point takes 1 tensor"):
        ball.pack_point(x, x)
    assert ball.pack_point(x) is x and ball.unpack_tensor(x) is x
    assert torch.equal(ball.origin(2, 3, dtype=torch.float64), torch.zeros(2, 3).double())
    assert ball.proju(x, torch.ones(3)).shape == (4, 3)


def test_the_benchmark_prints_both_balls_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    optimisers.main(["--steps", "2", "--dim", "2", "--c", "0.5"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("geoopt RiemannianAdam, lr=0.2, 2 steps, dim=2, c=0.5, float64")
    assert lines[2] == "| start → target | poincare ball | geoopt's own ball |"
    assert [line.split(" | ")[0] for line in lines[4:]] == [
        f"| {p.title}" for p in problems(dim=2, c=0.5)
    ]
    with pytest.raises(SystemExit):
        optimisers.main(["--c", "0"])
