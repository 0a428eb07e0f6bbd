r"""The weighted Fréchet (Karcher) mean of points of the ball, with an implicit backward pass.

The mean of points :math:`x_i` with weights :math:`w_i \ge 0` is the minimiser of

.. math:: f(m) = \tfrac12 \sum_i w_i\, d_c(m, x_i)^2,

unique because the ball is a Hadamard manifold (complete, simply connected, of curvature
:math:`-c < 0`): :math:`f` is strictly geodesically convex wherever some weight is positive.

Notation. :math:`s = \sqrt c`, :math:`\lambda_m = 2/(1 - c|m|^2)`; a tangent vector at ``m``
with coordinates :math:`\xi` has the *orthonormal coordinates* :math:`\hat\xi = \lambda_m\xi`
(the metric is conformal, so these are the coordinates in an orthonormal frame along the same
axes). :math:`v_i = \log_m(x_i)` (coordinates, Riemannian length :math:`r_i = d_c(m, x_i)`),
:math:`\hat v_i = \lambda_m v_i`, :math:`\hat u_i = \hat v_i / r_i` and :math:`t_i = s\,r_i`.

Derivatives of :math:`f`.

* Riemannian gradient: :math:`\operatorname{grad} f(m) = -\sum_i w_i \log_m(x_i)`.
* Riemannian Hessian. The Hessian of :math:`\tfrac12 d(\cdot, x)^2` at ``m`` is
  :math:`d\,\operatorname{Hess} d + \operatorname{grad} d \otimes \operatorname{grad} d`; in a
  space of constant curvature :math:`-c` the Jacobi fields orthogonal to a geodesic grow like
  :math:`\sinh(s\,r)/s`, so :math:`\operatorname{Hess} d = s\coth(s\,d)\,(I - \hat u\hat u^T)` and

  .. math:: \operatorname{Hess}\tfrac12 d(\cdot,x)^2 = \hat u\hat u^T
            + t\coth t\,(I - \hat u\hat u^T),\qquad t = s\,d(m, x):

  eigenvalue 1 along the geodesic to ``x`` (distances along a geodesic are affine), and
  :math:`t\coth t \ge 1` across it (:math:`t\coth t = 1 + t^2/3 + O(t^4)`). In orthonormal
  coordinates the Hessian of :math:`f` is therefore the symmetric matrix

  .. math:: H = \Big(\sum_i w_i a_i\Big) I - \sum_i w_i (a_i - 1)\,\hat u_i \hat u_i^T,
            \qquad a_i = t_i\coth t_i,

  with eigenvalues in :math:`[W, \sum_i w_i a_i]`, :math:`W = \sum_i w_i`: positive definite
  whenever :math:`W > 0`. The conformal metric makes :math:`H` the same matrix in ball
  coordinates (the Hessian maps :math:`\xi` to the coordinate vector :math:`H\xi`).
* The differential of :math:`\log_m` in its argument. The differential of :math:`\exp_m` at
  :math:`v` maps the radial direction to its parallel transport and orthogonal directions to
  :math:`\sinh t/t` times theirs, so, inverted, a displacement :math:`\delta x` at :math:`x`
  (orthonormal coordinates :math:`\lambda_x\delta x`) moves :math:`\hat v = \lambda_m\log_m x`
  by :math:`J\,R\,\lambda_x\delta x`, where :math:`R = \operatorname{gyr}[m, -x]` is the
  parallel transport from ``x`` to ``m`` in orthonormal frames and

  .. math:: J = \psi I + (1 - \psi)\,\hat u\hat u^T,\qquad \psi = t/\sinh t.

Solver. Newton's method in the tangent space: from the Einstein midpoint
(:func:`poincare.einstein_midpoint`, exact for two equally weighted points and for equal
points), each step solves :math:`H\hat\sigma = \sum_i w_i\hat v_i` and moves to
:math:`m \leftarrow \exp_m(\hat\sigma/\lambda_m)`. The step is capped at the Riemannian length
:data:`STEP_CAP` ``/ s`` (a trust region, applied by scaling, branch-free), which only binds far
from the mean; inside it the convergence is quadratic. The number of steps is a fixed Python
number chosen from the compute dtype (:data:`NEWTON_STEPS`), so the solver is one straight-line
graph under ``torch.compile`` and ``torch.func.vmap``.

Backward pass (implicit differentiation). At the mean :math:`G(m, x, w) = \sum_i w_i
\log_m(x_i) = 0`. Where :math:`G = 0` its coordinate derivative in ``m`` is the covariant one
(the Christoffel term multiplies :math:`G`), :math:`\partial G/\partial m = -H`, so
:math:`dm = H^{-1}\,\partial G`. With the incoming gradient :math:`\bar m` and
:math:`y = H^{-1}\bar m` (one :math:`D\times D` solve per mean; :math:`H` is symmetric):

* :math:`\bar w_i = \langle y, v_i\rangle` (coordinates of :math:`\log_m x_i`);
* :math:`\bar x_i = w_i\,\frac{\lambda_{x_i}}{\lambda_m}\,\operatorname{gyr}[x_i, -m]\,(J_i y)`
  (:math:`R^T = \operatorname{gyr}[m,-x]^{-1} = \operatorname{gyr}[-x, m] =
  \operatorname{gyr}[x, -m]`, and :math:`\lambda_x/\lambda_m = B_m/B_x` with
  :math:`B = 1 - c|\cdot|^2`);
* :math:`\bar c`: the mean commutes with the scaling of the ball,
  :math:`m_c(x) = m_1(s x)/s`, hence :math:`\partial m/\partial c = \big(\sum_i
  (\partial m/\partial x_i)\,x_i - m\big)/(2c)` and
  :math:`\bar c = \big(\sum_i\langle\bar x_i, x_i\rangle - \langle\bar m, m\rangle\big)/(2c)`.

Means whose weights are all zero are the origin, with zero gradients (their :math:`H` is
replaced by the identity).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._checks import Curvature, check_dim, check_tensor, host_branches, prepare
from ._numerics import dot, gap_precise, norm, pow2_factors
from .functional import (
    conformal_factor,
    dist,
    einstein_midpoint,
    expmap,
    gyration,
    logmap,
    project,
)

__all__ = ["FULL_STEP", "LINE_SEARCH", "NEWTON_STEPS", "frechet_mean"]

#: Newton steps after the initial guess, by the dtype of the result. Every input dtype is
#: computed in float64; float32 (and half-precision) results need fewer steps because their
#: rounding hides the last iterations. Measured on 3750 adversarial means per dtype (points up
#: to the representable radius, half of them on the outermost shell, weights spanning 24
#: orders of magnitude, N <= 8, D <= 8), every mean was within 1 hULP of its converged value
#: after 3 steps (float32) and 6 steps (float64): these counts leave two steps of margin.
NEWTON_STEPS: dict[torch.dtype, int] = {
    torch.float64: 8,
    torch.float32: 5,
    torch.float16: 5,
    torch.bfloat16: 5,
}

#: The fractions of the Newton step tried by the line search (the one with the smallest
#: objective is kept; the full step wins ties).
LINE_SEARCH = (1.0, 0.5, 0.25, 0.125)

#: Newton steps shorter than this Riemannian length (in units of ``1/sqrt(c)``) are taken in
#: full, without the line search: there the quadratic model is accurate, and near the mean the
#: differences of the objective fall below its rounding.
FULL_STEP = 0.5

# Below this scaled distance t the ratios t coth t - 1 and 1 - t/sinh t are taken from their
# Taylor series (their absolute error is what matters, and it is below eps either way).
_SERIES = 1e-4


def _ratios(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(t coth t - 1, t/sinh t, 1 - t/sinh t)`` for ``t >= 0`` (finite at 0)."""
    small = t < _SERIES
    ts = torch.where(small, torch.ones_like(t), t)
    t2 = t * t
    am1 = torch.where(small, t2 / 3, ts / torch.tanh(ts) - 1)
    psi_big = ts / torch.sinh(ts)
    psi = torch.where(small, 1 - t2 / 6, psi_big)
    ompsi = torch.where(small, t2 / 6, 1 - psi_big)
    return am1, psi, ompsi


def _sqrt_c(c: float | Tensor) -> float | Tensor:
    return c.sqrt() if isinstance(c, Tensor) else c**0.5


def _point_c(c: float | Tensor) -> float | Tensor:
    """The curvature shaped for the points ``(..., N, D)`` (it is shaped for the means)."""
    return c.unsqueeze(-2) if isinstance(c, Tensor) and c.dim() > 0 else c


class _Terms:
    """The tangent quantities of a mean estimate ``m`` (..., D) and its points ``x``
    (..., N, D): ``v`` (..., N, D) = log_m(x_i), ``lam`` (..., 1), the unit vectors ``u``
    (..., N, D), the ratios of ``t``, the Hessian ``h`` (..., D, D) and ``grad`` (..., D), the
    negative Riemannian gradient in orthonormal coordinates."""

    def __init__(self, m: Tensor, x: Tensor, w: Tensor, c: float | Tensor, dead: Tensor):
        self.v = logmap(m.unsqueeze(-2), x, c=_point_c(c))
        self.lam = conformal_factor(m, c=c)
        vh = self.lam.unsqueeze(-2) * self.v
        r = norm(vh)
        self.u = vh / r.clamp(min=torch.finfo(r.dtype).tiny)
        self.am1, self.psi, self.ompsi = _ratios(_sqrt_c(_point_c(c)) * r)
        wk = w.unsqueeze(-1)  # (..., N, 1)
        big_a = (wk * (1 + self.am1)).sum(dim=-2)  # (..., 1)
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
        h = big_a.unsqueeze(-1) * eye - (self.u * (wk * self.am1)).mT @ self.u
        self.h = torch.where(dead.unsqueeze(-1), eye, h)
        self.grad = (wk * vh).sum(dim=-2)


def _solve(h: Tensor, b: Tensor) -> Tensor:
    """``h^{-1} b`` for (..., D, D) positive definite ``h`` and (..., D) ``b``, without the
    error check (a host synchronisation) of ``torch.linalg.solve``."""
    sol, _ = torch.linalg.solve_ex(h, b.unsqueeze(-1))
    return sol.squeeze(-1)


def _objective(m: Tensor, x: Tensor, w: Tensor, c: float | Tensor) -> Tensor:
    """:math:`\sum_i w_i d(m, x_i)^2` of estimates ``m`` (..., D): (..., 1)."""
    d = dist(m.unsqueeze(-2), x, c=_point_c(c))
    return (w * d * d).sum(dim=-1, keepdim=True)


def _geodesic_tree(x: Tensor, w: Tensor, c: float | Tensor) -> Tensor:
    r"""A second initial guess: pairs of points merged, level by level, into the point that
    divides their geodesic in the inverse ratio of their weights (the weighted mean of the
    pair), carrying the sum of the weights, until one point is left (``ceil(log2 N)`` levels).

    Each merge steps from the heavier point towards the lighter one, by at most half their
    distance: a long geodesic traced from its far end would magnify the rounding of the
    direction by :math:`e^{d}`.
    """
    pc = _point_c(c)
    while x.shape[-2] > 1:
        if x.shape[-2] % 2:
            x = torch.cat([x, torch.zeros_like(x[..., :1, :])], dim=-2)
            w = torch.cat([w, torch.zeros_like(w[..., :1])], dim=-1)
        a, b = x[..., 0::2, :], x[..., 1::2, :]
        wa, wb = w[..., 0::2], w[..., 1::2]
        heavy = (wa >= wb).unsqueeze(-1)
        p, q = torch.where(heavy, a, b), torch.where(heavy, b, a)
        w = wa + wb
        live = w > 0
        frac = torch.where(live, torch.minimum(wa, wb) / torch.where(live, w, 1.0), 0.0)
        x = expmap(p, frac.unsqueeze(-1) * logmap(p, q, c=pc), c=pc)
    return x[..., 0, :]


def _newton(x: Tensor, w: Tensor, c: float | Tensor, dead: Tensor, steps: int) -> Tensor:
    """The mean of ``x`` (..., N, D) with weights ``w`` (..., N): ``steps`` Newton steps with a
    line search, from the better of the Einstein midpoint and the geodesic tree."""
    m = einstein_midpoint(x, w, c=c)
    tree = _geodesic_tree(x, w, c)
    m = torch.where(_objective(tree, x, w, c) < _objective(m, x, w, c), tree, m)
    sc = _sqrt_c(c)
    shape = (len(LINE_SEARCH),) + (1,) * m.dim()
    fractions = torch.tensor(LINE_SEARCH, dtype=m.dtype, device=m.device).reshape(shape)
    for _ in range(steps):
        k = _Terms(m, x, w, c, dead)
        sigma = _solve(k.h, k.grad)
        step = sigma / k.lam
        cands = expmap(m.expand(shape[:1] + m.shape), fractions * step, c=c)  # (A, ..., D)
        best = _objective(cands, x, w, c).argmin(dim=0, keepdim=True)  # (1, ..., 1)
        chosen = torch.take_along_dim(cands, best, dim=0).squeeze(0)
        m = torch.where(norm(sigma) * sc <= FULL_STEP, cands[0], chosen)
    return torch.where(dead, torch.zeros_like(m), m)


class _FrechetMean(torch.autograd.Function):
    """The mean (forward: :func:`_newton`) with the implicit backward pass of the module
    docstring. Inputs in the compute dtype: ``x`` (..., N, D), ``w`` (..., N), ``c`` a float or
    a tensor shaped for the means (..., 1) or 0-d, ``dead`` (..., 1) booleans."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, w: Tensor, c: Any, dead: Tensor, steps: int) -> Tensor:
        return _newton(x, w, c, dead, steps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, w, c, dead, _ = inputs
        c_t = c if isinstance(c, Tensor) else None
        ctx.save_for_backward(x, w, c_t, dead, output)
        ctx.c_float = None if c_t is not None else c

    @staticmethod
    def backward(ctx: Any, grad_m: Tensor) -> tuple[Tensor | None, ...]:
        x, w, c_t, dead, m = ctx.saved_tensors
        c: float | Tensor = c_t if c_t is not None else ctx.c_float
        k = _Terms(m, x, w, c, dead)
        y = _solve(k.h, grad_m)  # (..., D)
        yk = y.unsqueeze(-2)
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.where(dead, 0.0, dot(k.v, yk).squeeze(-1))
        need_x = ctx.needs_input_grad[0]
        need_c = len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]
        grad_x = grad_c = None
        if need_x or need_c:
            jy = k.psi * yk + k.ompsi * dot(k.u, yk) * k.u  # J_i y, (..., N, D)
            pc = _point_c(c)
            ct = torch.as_tensor(pc, dtype=x.dtype, device=x.device)
            # lambda_x / lambda_m = B_m / B_x, the gaps to a relative ulp of themselves
            bm = gap_precise(m.unsqueeze(-2), ct)
            bx = gap_precise(x, ct)
            rot = gyration(x, -m.unsqueeze(-2).expand_as(x), jy, c=pc)
            grad_x = (w.unsqueeze(-1) * (bm / bx)) * rot
            if need_c:
                inner = dot(grad_x, x).squeeze(-1).sum(dim=-1, keepdim=True) - dot(grad_m, m)
                value = inner / (2 * c)
                assert isinstance(c, Tensor)
                grad_c = value.sum_to_size(c.shape) if c.dim() > 0 else value.sum().reshape(())
        return (grad_x if need_x else None), grad_w, grad_c, None, None


def frechet_mean(
    x: Tensor,
    weights: Tensor | None = None,
    *,
    c: Curvature = 1.0,
    dim: int = -2,
    keepdim: bool = False,
) -> Tensor:
    r"""Weighted Fréchet (Karcher) mean: :math:`\operatorname{argmin}_m \sum_i w_i\,d_c(m,
    x_i)^2`.

    The minimiser is unique (the ball has curvature :math:`-c < 0`, so the objective is strictly
    geodesically convex) and is characterised by :math:`\sum_i w_i \log_m(x_i) = 0`. It is
    computed by Newton's method in the tangent space (module :mod:`poincare._frechet`): from
    the Einstein midpoint, :data:`NEWTON_STEPS` steps (8, in float64, for every input dtype),
    each solving :math:`H\hat\sigma = \sum_i w_i\lambda_m\log_m(x_i)` with the closed-form
    Riemannian Hessian

    .. math:: H = \sum_i w_i\big(\hat u_i\hat u_i^T + t_i\coth t_i\,(I - \hat u_i\hat u_i^T)
              \big),\qquad t_i = \sqrt c\,d_c(m, x_i),

    (:math:`\hat u_i` the unit vector of :math:`\log_m x_i`), then moving to
    :math:`\exp_m(\hat\sigma/\lambda_m)`; steps longer than :data:`STEP_CAP` ``/ sqrt(c)`` are
    shortened to it. Float16, bfloat16 and float32 inputs are computed in float64 (the maps'
    condition number grows like :math:`e^{r}` along long geodesics). A fixed number of steps and
    no data-dependent branch: the op compiles into one graph and runs under ``torch.func``
    transforms.

    Gradients (with respect to ``x``, ``weights`` and a tensor ``c``) come from implicit
    differentiation of :math:`\sum_i w_i\log_m(x_i) = 0`: one :math:`D\times D` linear solve
    with :math:`H` per mean, no differentiation through the iterations (formulas in
    :mod:`poincare._frechet`).

    Args:
        x: points, with the points to average along ``dim`` and coordinates on the last
            dimension, e.g. ``(..., N, D)`` for the default ``dim=-2``.
        weights: non-negative weights shaped like ``x`` without its last dimension (e.g.
            ``(..., N)``), broadcastable; zeros are allowed, only the ratios matter. ``None``
            means equal weights. Where all the weights of a mean are zero the result is the
            origin (with zero gradients).
        c: curvature, a float or a tensor broadcastable to the result's ``(..., 1)``.
        dim: the dimension of ``x`` that indexes the points (not the last one).
        keepdim: keep ``dim`` (with size 1) in the result.

    Returns:
        ``(..., D)``: ``x``'s shape without ``dim`` (broadcast against ``weights``), strictly
        inside the ball, in the (promoted) dtype of ``x`` and ``weights``.

    Raises:
        TypeError: ``x`` or ``weights`` is not a real floating tensor; ``dim`` is not an int.
        ValueError: ``x`` has fewer than 2 dimensions; ``dim`` is out of range or is the last
            dimension; ``weights`` does not broadcast against ``x`` without its last
            dimension, or (checked in eager CPU code only, where it costs no device
            synchronisation) is negative or not finite; ``c`` is invalid or does not broadcast
            against the result's ``(..., 1)``.
    """
    check_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., N, D), got {tuple(x.shape)}")
    d = check_dim("dim", dim, x.dim())
    if d == x.dim() - 1:
        raise ValueError("dim must index the points, not the last (coordinate) dimension")
    d_neg = d - x.dim()  # as a negative index: extra leading dimensions of weights keep it
    xm = x.movedim(d, -2)
    if weights is None:
        w_full = torch.ones_like(xm[..., 0])
    else:
        check_tensor("weights", weights)
        try:
            shape = torch.broadcast_shapes(weights.shape, x.shape[:-1])  # type: ignore[no-untyped-call]
        except RuntimeError as err:
            raise ValueError(
                f"weights of shape {tuple(weights.shape)} do not broadcast against the points' "
                f"shape {tuple(x.shape[:-1])} (x without its last dimension)"
            ) from err
        if host_branches(weights):
            with torch.no_grad():
                if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
                    raise ValueError("weights must be finite and non-negative")
        w_full = weights.expand(shape).movedim(d_neg + 1, -1)
    batch = w_full.shape[:-1]
    xm = xm.expand((*batch, *xm.shape[-2:]))
    out, comp, cc, (xx, ww) = prepare(c, wide=True, broadcast=False, x=xm, weights=w_full)
    if isinstance(c, Tensor) and c.dim() > 0:
        try:
            torch.broadcast_shapes(c.shape, (*batch, 1))  # type: ignore[no-untyped-call]
        except RuntimeError:
            raise ValueError(
                f"c of shape {tuple(c.shape)} does not broadcast against the means' {(*batch, 1)}"
            ) from None
    # Only the ratios of the weights matter: divide them by the power of two nearest their
    # largest, so that neither huge nor subnormal weights overflow or lose bits.
    s1, s2 = pow2_factors(ww.amax(dim=-1, keepdim=True))
    ww = ww * s1 * s2
    dead = ww.sum(dim=-1, keepdim=True) <= 0
    ck: float | Tensor = cc if isinstance(c, Tensor) else float(c)  # type: ignore[arg-type]
    steps = NEWTON_STEPS.get(out, NEWTON_STEPS[torch.float32])
    m: Tensor = _FrechetMean.apply(xx, ww, ck, dead, steps)  # type: ignore[no-untyped-call]
    res = m.to(out)
    res = project(res.detach(), c=c) + (res - res.detach())
    if keepdim:
        res = res.unsqueeze(-2).movedim(-2, d_neg)
    return res
