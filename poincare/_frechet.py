r"""The weighted Fréchet (Karcher) mean of points of the ball, with an implicit backward pass.

The mean of points :math:`x_i` with weights :math:`w_i \ge 0` is the minimiser of

.. math:: f(m) = \tfrac12 \sum_i w_i\, d_c(m, x_i)^2,

unique because the ball is a Hadamard manifold (complete, simply connected, of curvature
:math:`-c < 0`): :math:`f` is strictly geodesically convex wherever some weight is positive.

Notation. :math:`s = \sqrt c`, :math:`B_p = 1 - c|p|^2`, :math:`\lambda_p = 2/B_p`; a tangent
vector at ``m`` with coordinates :math:`\xi` has the *orthonormal coordinates*
:math:`\hat\xi = \lambda_m\xi` (the metric is conformal, so these are its coordinates in an
orthonormal frame along the same axes). :math:`v_i = \log_m(x_i)` (coordinates, Riemannian
length :math:`r_i = d_c(m, x_i)`), :math:`\hat v_i = \lambda_m v_i`,
:math:`\hat u_i = \hat v_i/r_i`, :math:`t_i = s\,r_i`, :math:`W = \sum_i w_i`.

Derivatives of :math:`f`.

* Riemannian gradient: :math:`\operatorname{grad} f(m) = -\sum_i w_i \log_m(x_i)`.
* Riemannian Hessian. The Hessian of :math:`\tfrac12 d(\cdot, x)^2` is
  :math:`d\,\operatorname{Hess} d + \operatorname{grad} d \otimes \operatorname{grad} d`; in
  constant curvature :math:`-c` the Jacobi fields across a geodesic grow like
  :math:`\sinh(s\,r)/s`, so :math:`\operatorname{Hess} d = s\coth(s\,d)\,(I - \hat u\hat u^T)`
  and

  .. math:: \operatorname{Hess}\tfrac12 d(\cdot,x)^2 = \hat u\hat u^T
            + t\coth t\,(I - \hat u\hat u^T),\qquad t = s\,d(m, x):

  eigenvalue 1 along the geodesic to ``x`` (distance along a geodesic is affine) and
  :math:`t\coth t = 1 + t^2/3 - \dots \ge 1` across it (in units where lengths are measured
  in :math:`1/s`, the eigenvalue :math:`r\,s\coth(r\,s)` of the brief's convention). In
  orthonormal coordinates the Hessian of :math:`f` is the symmetric matrix

  .. math:: H = \Big(\sum_i w_i a_i\Big) I - \sum_i w_i (a_i - 1)\,\hat u_i \hat u_i^T,
            \qquad a_i = t_i\coth t_i,

  with eigenvalues in :math:`[W, \sum_i w_i a_i]`: positive definite whenever :math:`W > 0`.
  The metric being conformal, :math:`H` is also the matrix of the Hessian in ball coordinates
  (it maps :math:`\xi` to the coordinate vector :math:`H\xi`).
* The differential of :math:`\log_m` in its argument. :math:`d(\exp_m)_v` maps the radial
  direction to its parallel transport and the orthogonal ones to :math:`\sinh t/t` times
  theirs, so, inverted, a displacement :math:`\delta x` at ``x`` (orthonormal coordinates
  :math:`\lambda_x\delta x`) moves :math:`\hat v = \lambda_m\log_m x` by
  :math:`J\,R\,\lambda_x\delta x`, where :math:`R = \operatorname{gyr}[m, -x]` is the
  parallel transport from ``x`` to ``m`` in orthonormal frames and

  .. math:: J = \psi I + (1 - \psi)\,\hat u\hat u^T,\qquad \psi = t/\sinh t.

Solver (:func:`_solve_mean`). Newton's method in the tangent space, with a line search:

1. The initial guess is the better (smaller :math:`f`) of the Einstein midpoint
   (:func:`poincare.einstein_midpoint`: exact for equal points and for two equally weighted
   points) and a *geodesic tree* (:func:`_geodesic_tree`). The Einstein midpoint leans towards
   far points (it weighs them by their Lorentz factors, about :math:`e^{r}`): with points on
   the outermost shell and unequal weights it can lie 30 curvature radii from the mean.
2. Each step solves :math:`H\hat\sigma = \sum_i w_i\hat v_i` (one batched :math:`D\times D`
   solve) and moves to :math:`\exp_m(\alpha\hat\sigma/\lambda_m)`, with the fraction
   :math:`\alpha` of :data:`LINE_SEARCH` of smallest :math:`f` (the full step where
   :math:`s|\hat\sigma| \le` :data:`FULL_STEP`). Far from the mean a full step can overshoot:
   geodesics diverge like :math:`e^{d}`, so a Newton direction a hair off points many
   curvature radii past a far point. Near the mean the convergence is quadratic.
3. The number of steps is a fixed Python number chosen from the dtype of the result
   (:data:`NEWTON_STEPS`): the solver is one straight-line graph, without a data-dependent
   branch, under ``torch.compile`` and ``torch.func.vmap``.

The solver's maps are the fused formulas of :func:`poincare.logmap` and :func:`poincare.expmap`
(the gaps of float64 points in double-double), without their validation and final projection
(:func:`_log`, :func:`_exp`, :func:`_dist`): the iterates are internal, and only the last one,
once rounded to the caller's dtype, is projected.

Backward pass (implicit differentiation). At the mean :math:`G(m, x, w) = \sum_i w_i
\log_m(x_i) = 0`. Where :math:`G = 0` its coordinate derivative in ``m`` is the covariant one
(the Christoffel term multiplies :math:`G`), :math:`\partial G/\partial m = -H`, so
:math:`dm = H^{-1}\,\partial G`. With the incoming gradient :math:`\bar m` and
:math:`y = H^{-1}\bar m` (one :math:`D\times D` solve per mean; :math:`H` is symmetric):

* :math:`\bar w_i = \langle y, v_i\rangle` (:math:`\partial G/\partial w_i = v_i`);
* :math:`\bar x_i = w_i\,\frac{\lambda_{x_i}}{\lambda_m}\,\operatorname{gyr}[x_i, -m]\,(J_i y)`
  (the transpose of :math:`\partial v_i/\partial x_i = \tfrac{\lambda_x}{\lambda_m} J_i R_i`,
  with :math:`R^T = \operatorname{gyr}[m,-x]^{-1} = \operatorname{gyr}[-x, m] =
  \operatorname{gyr}[x, -m]` and :math:`\lambda_x/\lambda_m = B_m/B_x`);
* :math:`\bar c`: the mean commutes with the scaling of the ball,
  :math:`m_c(x) = m_1(s x)/s`, hence :math:`\partial m/\partial c = \big(\sum_i
  (\partial m/\partial x_i)\,x_i - m\big)/(2c)` and
  :math:`\bar c = \big(\sum_i\langle\bar x_i, x_i\rangle - \langle\bar m, m\rangle\big)/(2c)`.

Means whose weights are all zero are the origin, with zero gradients (their :math:`H` is
replaced by the identity and their weight gradients masked).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._checks import Curvature, prepare
from ._numerics import (
    asinh,
    asinh_over,
    dot,
    gap_precise,
    max_norm,
    norm,
    onto_shell,
    pow2_factors,
    sqnorm,
    tanh_over,
)
from .functional import _points_and_weights, einstein_midpoint, gyration, project

__all__ = ["FULL_STEP", "LINE_SEARCH", "NEWTON_STEPS", "frechet_mean"]

#: Newton steps after the initial guess, by the dtype of the result. Every input dtype is
#: computed in float64; float32 (and half-precision) results need fewer steps because their
#: rounding hides the last iterations. Measured on 3750 adversarial means per dtype (points up
#: to the representable radius, many on the outermost shell, weights spanning 24 orders of
#: magnitude, N <= 8, D <= 8), every mean was within 1 hULP of its converged value after 3
#: steps (float32) and 6 steps (float64); these counts leave two steps of margin.
NEWTON_STEPS: dict[torch.dtype, int] = {
    torch.float64: 8,
    torch.float32: 5,
    torch.float16: 5,
    torch.bfloat16: 5,
}

#: The fractions of the Newton step tried by the line search (the one with the smallest
#: objective is kept; the full step wins ties).
LINE_SEARCH = (1.0, 0.5, 0.25, 0.125)

#: Newton steps shorter than this Riemannian length (in units of the curvature radius
#: ``1/sqrt(c)``) are taken in full, without the line search: there the quadratic model is
#: accurate, and close to the mean the differences of the objective fall below its rounding.
FULL_STEP = 0.5

# Below this scaled distance t the ratios t coth t - 1 and 1 - t/sinh t come from their Taylor
# series (their absolute error is what matters, and it is below eps either way).
_SERIES = 1e-4


# ---------------------------------------------------------------------------------------------
# The maps of the solver (compute dtype float64; ``c`` a tensor that broadcasts)
# ---------------------------------------------------------------------------------------------


def _gap(x: Tensor, c: Tensor, precise: bool) -> Tensor:
    """``B_x = 1 - c|x|^2`` (..., 1), to a relative ulp of itself when ``precise``."""
    return gap_precise(x, c, precise)


def _log(m: Tensor, bm: Tensor, x: Tensor, bx: Tensor, c: Tensor) -> Tensor:
    r""":math:`\log_m(x)`, the fused form of :func:`poincare.logmap`: with :math:`s = x - m`,

    .. math:: \log_m(x) = \sqrt{B_m/B_x}\;\frac{\operatorname{asinh}(a)}{a}\;\frac{B_m s -
              c|s|^2 m}{Q},\quad a = \frac{\sqrt c|s|}{\sqrt{B_m B_x}},\quad
              Q^2 = \Big(\frac{B_m + B_x + c|s|^2}{2}\Big)^2 + c^2(|m|^2|s|^2 -
              \langle m, s\rangle^2),

    from the points and their gaps ``bm``, ``bx``.
    """
    s = x - m
    ss = sqnorm(s)
    ms = dot(m, s)
    p = (bm + bx + c * ss) / 2
    k = (sqnorm(m) * ss - ms * ms).clamp(min=0)
    q = torch.sqrt(p * p + c * c * k)
    a = c.sqrt() * norm(s) / torch.sqrt(bm * bx)
    return torch.sqrt(bm / bx) * asinh_over(a) / q * (bm * s - c * ss * m)


def _exp(m: Tensor, bm: Tensor, v: Tensor, c: Tensor) -> Tensor:
    r""":math:`\exp_m(v)` by the fused formula of :func:`poincare.expmap` (without its
    double-double evaluation: the solver's long steps need no accuracy, its short ones lose
    none): with :math:`t = \sqrt c|v|/B_m` and :math:`w = \tanh(t)\,v/(t B_m)` (gap
    :math:`\operatorname{sech}^2 t`), the Möbius sum :math:`m \oplus w` (``bm`` the gap of
    ``m``); kept on or inside the outermost float64 shell."""
    sc = c.sqrt()
    t = sc * norm(v) / bm
    w = tanh_over(t) * v / bm
    e = torch.exp(-2 * t)
    bw = 4 * e / ((1 + e) * (1 + e))
    s = m + w
    css = c * sqnorm(s)
    den = (css + bm * bw).clamp(min=torch.finfo(m.dtype).tiny)
    res = (bm * s + css * m) / den
    u = sc * norm(res)
    shell = max_norm(res.dtype)
    return res * torch.where(u > shell, shell / u.clamp(min=shell), 1.0)


def _dist(m: Tensor, bm: Tensor, x: Tensor, bx: Tensor, c: Tensor) -> Tensor:
    r""":math:`d(m, x) = \tfrac{2}{\sqrt c}\operatorname{asinh}\big(\sqrt c|m - x|/\sqrt{B_m
    B_x}\big)` (..., 1), as :func:`poincare.dist` (``bm``, ``bx`` the gaps)."""
    sc = c.sqrt()
    z = sc * norm(m - x) / torch.sqrt(bm * bx)
    return 2 / sc * asinh(z)


# ---------------------------------------------------------------------------------------------
# The solver
# ---------------------------------------------------------------------------------------------


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


def _pc(c: Tensor) -> Tensor:
    """The curvature shaped for the points ``(..., N, D)`` (it is shaped for the means)."""
    return c.unsqueeze(-2) if c.dim() > 0 else c


class _Terms:
    """The tangent quantities of a mean estimate ``m`` (..., D) and its points ``x``
    (..., N, D) (with their gaps ``bm`` (..., 1), ``bx`` (..., N, 1)) and weights ``w``
    (..., N): ``v`` (..., N, D) the :math:`\\log_m(x_i)`,
    ``lam`` (..., 1), the unit vectors ``u`` (..., N, D) of :math:`\\hat v_i`, the ratios of
    :math:`t_i` ((..., N, 1) each), the Hessian ``h`` (..., D, D) (the identity where
    ``dead``) and ``grad`` (..., D) :math:`= \\sum_i w_i\\hat v_i`."""

    def __init__(
        self, m: Tensor, bm: Tensor, x: Tensor, bx: Tensor, w: Tensor, c: Tensor, dead: Tensor
    ) -> None:
        pc = _pc(c)
        self.v = _log(m.unsqueeze(-2), bm.unsqueeze(-2), x, bx, pc)
        self.lam = 2 / bm
        vh = self.lam.unsqueeze(-2) * self.v
        r = norm(vh)
        self.u = vh / r.clamp(min=torch.finfo(r.dtype).tiny)
        self.am1, self.psi, self.ompsi = _ratios(pc.sqrt() * r)
        wk = w.unsqueeze(-1)
        big_a = (wk * (1 + self.am1)).sum(dim=-2)  # (..., 1)
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
        h = big_a.unsqueeze(-1) * eye - (self.u * (wk * self.am1)).mT @ self.u
        self.h = torch.where(dead.unsqueeze(-1), eye, h)
        self.grad = (wk * vh).sum(dim=-2)


def _linear_solve(h: Tensor, b: Tensor) -> Tensor:
    """``h^{-1} b`` for (..., D, D) positive definite ``h`` and (..., D) ``b``, without the
    error check (a host synchronisation) of ``torch.linalg.solve``."""
    sol: Tensor = torch.linalg.solve_ex(h, b.unsqueeze(-1))[0]
    return sol.squeeze(-1)


def _objective(m: Tensor, bm: Tensor, x: Tensor, bx: Tensor, w: Tensor, c: Tensor) -> Tensor:
    """:math:`\\sum_i w_i d(m, x_i)^2` of estimates ``m`` (..., D) with gaps ``bm`` (leading
    dimensions beyond ``x``'s allowed): (..., 1)."""
    d = _dist(m.unsqueeze(-2), bm.unsqueeze(-2), x, bx, _pc(c)).squeeze(-1)
    return (w * d * d).sum(dim=-1, keepdim=True)


def _geodesic_tree(x: Tensor, w: Tensor, c: Tensor, precise: bool) -> Tensor:
    r"""An initial guess: the points merged pairwise, level by level (``ceil(log2 N)`` levels),
    each pair into the point dividing their geodesic in the inverse ratio of their weights
    (the weighted mean of the pair), which carries the sum of their weights.

    Each merge steps from the heavier point towards the lighter one, by at most half their
    distance: a long geodesic traced from its far end would magnify the rounding of its
    direction by :math:`e^{d}`. Exact for two points; elsewhere it tracks the mean where the
    Einstein midpoint is pulled to far points.
    """
    pc = _pc(c)
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
        bp, bq = _gap(p, pc, precise), _gap(q, pc, precise)
        x = _exp(p, bp, frac.unsqueeze(-1) * _log(p, bp, q, bq, pc), pc)
    return x[..., 0, :]


def _solve_mean(x: Tensor, w: Tensor, c: Tensor, dead: Tensor, steps: int, precise: bool) -> Tensor:
    """The mean of ``x`` (..., N, D) with weights ``w`` (..., N): ``steps`` Newton steps with a
    line search, from the better of the Einstein midpoint and the geodesic tree (module
    docstring). The origin where ``dead``."""
    bx = _gap(x, _pc(c), precise)  # the points' gaps, once
    m = einstein_midpoint(x, w, c=c)
    tree = _geodesic_tree(x, w, c, precise)
    bm, bt = _gap(m, c, precise), _gap(tree, c, precise)
    better = _objective(tree, bt, x, bx, w, c) < _objective(m, bm, x, bx, w, c)
    m, bm = torch.where(better, tree, m), torch.where(better, bt, bm)
    shape = (len(LINE_SEARCH),) + (1,) * m.dim()
    fractions = torch.tensor(LINE_SEARCH, dtype=m.dtype, device=m.device).reshape(shape)
    for _ in range(steps):
        k = _Terms(m, bm, x, bx, w, c, dead)
        sigma = _linear_solve(k.h, k.grad)
        cands = _exp(m, bm, fractions * (sigma / k.lam), c)  # (A, ..., D)
        bc = _gap(cands, c, precise)
        best = _objective(cands, bc, x, bx, w, c).argmin(dim=0, keepdim=True)
        full = c.sqrt() * norm(sigma) <= FULL_STEP
        m = torch.where(full, cands[0], torch.take_along_dim(cands, best, dim=0).squeeze(0))
        bm = torch.where(full, bc[0], torch.take_along_dim(bc, best, dim=0).squeeze(0))
    return torch.where(dead, torch.zeros_like(m), m)


class _FrechetMean(torch.autograd.Function):
    """The mean (forward: :func:`_solve_mean`) with the implicit backward pass of the module
    docstring. Inputs in the compute dtype (float64): ``x`` (..., N, D), ``w`` (..., N), ``c``
    shaped for the means ((..., 1) or 0-d), ``dead`` (..., 1) booleans; then the number of
    steps and whether gaps are taken in double-double."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, w: Tensor, c: Tensor, dead: Tensor, steps: int, precise: bool) -> Tensor:
        return _solve_mean(x, w, c, dead, steps, precise)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, w, c, dead, _, precise = inputs
        ctx.save_for_backward(x, w, c, dead, output)
        ctx.precise = precise

    @staticmethod
    def backward(ctx: Any, grad_m: Tensor) -> tuple[Tensor | None, ...]:
        x, w, c, dead, m = ctx.saved_tensors
        precise: bool = ctx.precise
        pc = _pc(c)
        bm, bx = _gap(m, c, precise), _gap(x, pc, precise)
        k = _Terms(m, bm, x, bx, w, c, dead)
        y = _linear_solve(k.h, grad_m).unsqueeze(-2)  # (..., 1, D)
        grad_x = grad_w = grad_c = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.where(dead, 0.0, dot(k.v, y).squeeze(-1))
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
            jy = k.psi * y + k.ompsi * dot(k.u, y) * k.u  # J_i y, (..., N, D)
            mk = m.unsqueeze(-2)
            ratio = bm.unsqueeze(-2) / bx  # lambda_x / lambda_m
            rot = gyration(x, -mk.expand_as(x), jy, c=pc)  # gyr[x, -m] J y
            grad_x = (w.unsqueeze(-1) * ratio) * rot
        if ctx.needs_input_grad[2]:
            assert grad_x is not None
            inner = dot(grad_x, x).sum(dim=-2) - dot(grad_m, m)  # (..., 1)
            value = inner / (2 * c)
            grad_c = value.sum_to_size(c.shape) if c.dim() > 0 else value.sum().reshape(())
        if not ctx.needs_input_grad[0]:
            grad_x = None
        return grad_x, grad_w, grad_c, None, None, None


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
    geodesically convex) and is characterised by :math:`\sum_i w_i \log_m(x_i) = 0`; for two
    equally weighted points it is their geodesic midpoint. It is computed by Newton's method in
    the tangent space (details and derivations in :mod:`poincare._frechet`): from the better of
    the Einstein midpoint and a pairwise geodesic merge of the points, :data:`NEWTON_STEPS`
    steps (8 for float64 results, 5 for float32 and half precision), each solving
    :math:`H\hat\sigma = \sum_i w_i\lambda_m\log_m(x_i)` with the closed-form Riemannian Hessian

    .. math:: H = \sum_i w_i\big(\hat u_i\hat u_i^T + t_i\coth t_i\,(I - \hat u_i\hat u_i^T)
              \big),\qquad t_i = \sqrt c\,d_c(m, x_i)

    (:math:`\hat u_i` the unit vector of :math:`\log_m x_i`; eigenvalue 1 along each geodesic,
    :math:`t\coth t` across it), then moving to the best of
    :math:`\exp_m(\alpha\hat\sigma/\lambda_m)`, :math:`\alpha \in` :data:`LINE_SEARCH` (the full
    step when it is shorter than :data:`FULL_STEP` curvature radii). Every input dtype is
    computed in float64. There is no data-dependent branch and the step count is fixed: the op
    compiles into one graph (``torch.compile(fullgraph=True)``) and runs under ``torch.func``
    transforms.

    Gradients with respect to ``x``, ``weights`` and a tensor ``c`` come from implicit
    differentiation of :math:`\sum_i w_i\log_m(x_i) = 0`: one :math:`D\times D` linear solve
    with :math:`H` per mean, no differentiation through the iterations (formulas in
    :mod:`poincare._frechet`). They are finite for equal points, one-hot and all-zero weights
    and points on the outermost shell; a zero weight gets the derivative of the mean as that
    weight grows from zero.

    Args:
        x: points, with the points to average along ``dim`` and coordinates on the last
            dimension, e.g. ``(..., N, D)`` for the default ``dim=-2``.
        weights: non-negative weights shaped like ``x`` without its last dimension (e.g.
            ``(..., N)``), broadcastable; zeros are allowed and only the ratios matter.
            ``None`` means equal weights. Where all the weights of a mean are zero the result
            is the origin, with zero gradients.
        c: curvature, a float or a tensor broadcastable to the result's ``(..., 1)``.
        dim: the dimension of ``x`` that indexes the points (not the last one).
        keepdim: keep ``dim`` (with size 1) in the result.

    Returns:
        ``(..., D)``: ``x``'s shape without ``dim`` (broadcast against ``weights``), strictly
        inside the ball, in the (promoted) dtype of ``x`` and ``weights``. Points on or outside
        the boundary (a caller's error) are treated as lying on the outermost shell of their
        dtype, in their direction (the result is that of ``project(x)``).

    Raises:
        TypeError: ``x`` or ``weights`` is not a real floating tensor, ``dim`` is not an int,
            or ``c`` is not a number or floating tensor.
        ValueError: ``x`` has fewer than 2 dimensions; ``dim`` is out of range or is the last
            dimension; ``weights`` does not broadcast against ``x`` without its last
            dimension, or is negative or not finite (checked where a check costs no device
            synchronisation: eager code on the CPU, as for
            :func:`poincare.einstein_midpoint`); ``c`` is invalid or does not broadcast
            against the result's ``(..., 1)``.
    """
    d, xm, w = _points_and_weights(x, weights, dim)
    d_neg = d - x.dim()  # counted from the end: weights may add leading dimensions
    w_full = torch.ones_like(xm[..., 0]) if w is None else w
    batch = tuple(w_full.shape[:-1])
    xm = xm.expand((*batch, *xm.shape[-2:]))
    out, _, cc, (xx, ww) = prepare(c, wide=True, broadcast=False, x=xm, weights=w_full)
    if isinstance(c, Tensor) and c.dim() > 0:
        try:
            torch.broadcast_shapes(c.shape, (*batch, 1))  # type: ignore[no-untyped-call]
        except RuntimeError:
            raise ValueError(
                f"c of shape {tuple(c.shape)} does not broadcast against the means' {(*batch, 1)}"
            ) from None
    # Points outside the ball (a caller's error) act from the outermost shell of their dtype.
    xx = onto_shell(xx, (cc.unsqueeze(-2) if cc.dim() > 0 else cc).sqrt(), shell=max_norm(out))
    # Only the ratios of the weights matter: divide them by the power of two nearest their
    # largest, so that neither huge nor subnormal weights overflow or lose bits.
    s1, s2 = pow2_factors(ww.amax(dim=-1, keepdim=True))
    ww = ww * s1 * s2
    dead = ww.sum(dim=-1, keepdim=True) <= 0
    steps = NEWTON_STEPS.get(out, NEWTON_STEPS[torch.float32])
    precise = out == torch.float64
    m: Tensor = _FrechetMean.apply(xx, ww, cc, dead, steps, precise)  # type: ignore[no-untyped-call]
    # Round onto the representable ball of ``out`` (values only: the gradient is the mean's).
    res = m.to(out)
    c_exact = c.detach() if isinstance(c, Tensor) else c
    res = project(res.detach(), c=c_exact) + (res - res.detach())
    if keepdim:
        res = res.unsqueeze(-2).movedim(-2, d_neg)
    return res
