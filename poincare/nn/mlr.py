r"""Multinomial logistic regression on the Poincaré ball (Ganea, Bécigneul and Hofmann 2018)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import functional as PF
from .._gyroplane import dist2plane
from ._common import BallLike, check_points, check_positive_int, compute_dtype
from .layers import _OnBall

__all__ = ["HyperbolicMLR"]


class HyperbolicMLR(_OnBall):
    r"""Hyperbolic multinomial logistic regression: logits from points of the ball.

    Class ``k`` owns a gyroplane through :math:`p_k` with normal :math:`a_k \in T_{p_k}`, and
    its logit is the signed distance to it scaled by the normal's Riemannian length
    (Ganea et al. 2018, eq. 25):

    .. math::
        \operatorname{logit}_k(x) = \lambda_{p_k}|a_k|\; d_\pm(x; p_k, a_k)
          = \frac{\lambda_{p_k}|a_k|}{s_c}\operatorname{asinh}\!\Big(
            \frac{2 s_c\langle z_k, a_k\rangle}{(1 - c|z_k|^2)|a_k|}\Big),\quad
          z_k = (-p_k) \oplus_c x,

    with :math:`d_\pm` the signed :func:`poincare.dist2plane`. The parameters are Euclidean
    and valid by construction: the ``bias`` :math:`b_k` is a tangent vector at the origin,
    :math:`p_k = \exp_0(b_k)`, and the ``weight`` :math:`a^0_k` a normal at the origin,
    transported to :math:`p_k`: :math:`a_k = P_{0\to p_k}(a^0_k) = (1 - c|p_k|^2)\,a^0_k`, so that
    :math:`\lambda_{p_k}|a_k| = 2|a^0_k|` and the logit is
    :math:`2|a^0_k|\,d_\pm(x; p_k, a^0_k)` (the direction of :math:`a_k` is that of
    :math:`a^0_k`). Near the origin (small ``x`` and ``b``) the logits are those of a Euclidean
    linear layer, :math:`4\langle a^0_k, x\rangle`.

    Args:
        in_features: size of each input point (> 0).
        num_classes: number of classes (> 0).
        c: curvature (a positive float or a :class:`poincare.PoincareBall`, possibly shared and
            learnable).

    Shapes: input ``(..., in_features)`` points -> ``(..., num_classes)`` logits, in the input's
    dtype (computed in :func:`poincare.compute_dtype` of it). The logits of all classes are
    evaluated at once by broadcasting, with intermediates of size
    ``(..., num_classes, in_features)``.

    Raises ``TypeError``/``ValueError`` on a non-floating input or a wrong last dimension.
    """

    def __init__(self, in_features: int, num_classes: int, *, c: BallLike = 1.0) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self._set_ball(c)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the normals ``weight`` uniformly in ``[-1/sqrt(in), 1/sqrt(in)]`` per entry (as
        :class:`torch.nn.Linear` draws its weight) and set the ``bias`` to zero (every gyroplane
        through the origin)."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.zero_()

    def planes(self) -> tuple[Tensor, Tensor]:
        """The gyroplanes: points ``p = expmap0(bias)`` and normals ``a = transp0(p, weight)``,
        both ``(num_classes, in_features)``, in the parameters' dtype."""
        p = PF.expmap0(self.bias, c=self.c)
        return p, PF.transp0(p, self.weight, c=self.c)

    def forward(self, x: Tensor) -> Tensor:
        """The logits ``(..., num_classes)`` of points ``x`` of shape ``(..., in_features)``."""
        check_points(x, self.in_features, "x")
        comp = compute_dtype(x.dtype)
        c = self.c
        xc = x.to(comp)
        p = PF.expmap0(self.bias.to(comp), c=c)
        a0 = self.weight.to(comp)
        d = dist2plane(xc.unsqueeze(-2), p, a0, c=c, signed=True)  # (..., K)
        scale: Tensor = 2 * torch.linalg.vector_norm(a0, dim=-1)
        return (scale * d).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"
