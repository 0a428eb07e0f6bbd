"""``PoincareBall``: the functional ops as methods of a module that holds the curvature."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as PF
from ._checks import check_curvature

__all__ = ["PoincareBall"]


class PoincareBall(nn.Module):
    r"""The Poincaré ball :math:`\{x : c|x|^2 < 1\}` with curvature :math:`-c`, as a module.

    Every op of :mod:`poincare.functional` is a method here, with the curvature supplied by the
    module. With ``learnable=True`` the curvature is a parameter through the positive
    parametrisation :math:`c = \exp(\theta)`, so no optimiser step can make it non-positive.

    The class also implements the manifold interface of geoopt (``projx``, ``proju``,
    ``egrad2rgrad``, ``inner``, ``component_inner``, ``retr``, ``expmap``, ``transp``,
    ``retr_transp``, ``assert_check_point``, ...), so that a ``geoopt.ManifoldParameter`` whose
    manifold is a ``PoincareBall`` is optimised by ``geoopt.optim.RiemannianAdam`` or
    ``RiemannianSGD`` with this library's maps. geoopt itself is not required to use the class.

    One instance can be shared by every module of a model (pass it as their ``c``): they then
    compute with one curvature, and a learnable one receives the gradients of all of them.
    The curvature is held in float64 and never follows a dtype cast of the model
    (``.half()``, ``.float()``, ``.double()`` move it to the new device only), so a fixed
    ball keeps the exact value it was given (:attr:`curvature` is that Python float) and a
    learnable one its float64 parameter ``log_c``.

    Args:
        c: initial curvature, a positive finite float.
        learnable: make the curvature trainable.

    Raises:
        TypeError, ValueError: ``c`` is not a positive finite number.
    """

    ndim = 1
    reversible = False
    name = "PoincareBall"

    log_c: Tensor
    c_value: Tensor

    def __init__(self, c: float = 1.0, learnable: bool = False) -> None:
        super().__init__()
        value = check_curvature(c)
        self.learnable = bool(learnable)
        self._fixed: float | None = None
        if self.learnable:
            self.log_c = nn.Parameter(torch.tensor(math.log(value), dtype=torch.float64))
        else:
            self._fixed = value
            self.register_buffer("c_value", torch.tensor(value, dtype=torch.float64))

    @property
    def c(self) -> Tensor:
        """The curvature magnitude ``c > 0`` as a 0-d float64 tensor (differentiable if
        learnable; the exact given value if not)."""
        if self.learnable:
            return torch.exp(self.log_c)
        return self.c_value

    @property
    def curvature(self) -> float | Tensor:
        """The curvature as the ops take it: the exact Python float of a fixed ball (no tensor,
        no device transfer), the differentiable 0-d float64 tensor ``exp(log_c)`` of a learnable
        one (its gradient reaches ``log_c``)."""
        if self._fixed is not None:
            return self._fixed
        return torch.exp(self.log_c)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> PoincareBall:
        # Dtype casts of a model (``.half()``, ``.float()``, ``.double()``, ``.to(dtype)``) must
        # not round the curvature: keep its float64 value and follow only the device.
        name = "log_c" if self.learnable else "c_value"
        exact = getattr(self, name).detach().clone()
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        moved = getattr(self, name)
        restored = exact.to(device=moved.device)
        if self.learnable:
            moved.data = restored
            if moved.grad is not None:
                moved.grad.data = moved.grad.data.to(torch.float64)
        else:
            self._buffers[name] = restored
        return self

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        if not self.learnable:
            self._fixed = check_curvature(float(self.c_value))

    def extra_repr(self) -> str:
        return f"c={float(self.c):.6g}, learnable={self.learnable}"

    # -- the functional API -------------------------------------------------------------------

    def project(self, x: Tensor) -> Tensor:
        """See :func:`poincare.project`."""
        return PF.project(x, c=self.curvature)

    def conformal_factor(self, x: Tensor, *, keepdim: bool = True) -> Tensor:
        """See :func:`poincare.conformal_factor`."""
        return PF.conformal_factor(x, c=self.curvature, keepdim=keepdim)

    def mobius_add(self, x: Tensor, y: Tensor) -> Tensor:
        """See :func:`poincare.mobius_add`."""
        return PF.mobius_add(x, y, c=self.curvature)

    def mobius_sub(self, x: Tensor, y: Tensor) -> Tensor:
        """See :func:`poincare.mobius_sub`."""
        return PF.mobius_sub(x, y, c=self.curvature)

    def mobius_scalar_mul(self, r: float | Tensor, x: Tensor) -> Tensor:
        """See :func:`poincare.mobius_scalar_mul`."""
        return PF.mobius_scalar_mul(r, x, c=self.curvature)

    def mobius_matvec(self, m: Tensor, x: Tensor) -> Tensor:
        """See :func:`poincare.mobius_matvec`."""
        return PF.mobius_matvec(m, x, c=self.curvature)

    def expmap0(self, v: Tensor) -> Tensor:
        """See :func:`poincare.expmap0`."""
        return PF.expmap0(v, c=self.curvature)

    def logmap0(self, y: Tensor) -> Tensor:
        """See :func:`poincare.logmap0`."""
        return PF.logmap0(y, c=self.curvature)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """See :func:`poincare.expmap`."""
        return PF.expmap(x, u, c=self.curvature)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """See :func:`poincare.logmap`."""
        return PF.logmap(x, y, c=self.curvature)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """See :func:`poincare.dist`."""
        return PF.dist(x, y, c=self.curvature, keepdim=keepdim)

    def dist0(self, x: Tensor, *, keepdim: bool = False) -> Tensor:
        """See :func:`poincare.dist0`."""
        return PF.dist0(x, c=self.curvature, keepdim=keepdim)

    def pairwise_dist(self, x: Tensor, y: Tensor, *, squared: bool = False) -> Tensor:
        """See :func:`poincare.pairwise_dist`."""
        return PF.pairwise_dist(x, y, c=self.curvature, squared=squared)

    def gyration(self, a: Tensor, b: Tensor, u: Tensor) -> Tensor:
        """See :func:`poincare.gyration`."""
        return PF.gyration(a, b, u, c=self.curvature)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """See :func:`poincare.transp`."""
        return PF.transp(x, y, v, c=self.curvature)

    def transp0(self, y: Tensor, v: Tensor) -> Tensor:
        """See :func:`poincare.transp0`."""
        return PF.transp0(y, v, c=self.curvature)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        """See :func:`poincare.egrad2rgrad`."""
        return PF.egrad2rgrad(x, u, c=self.curvature)

    def einstein_midpoint(
        self, x: Tensor, weights: Tensor | None = None, *, dim: int = -2, keepdim: bool = False
    ) -> Tensor:
        """See :func:`poincare.einstein_midpoint`."""
        return PF.einstein_midpoint(x, weights, c=self.curvature, dim=dim, keepdim=keepdim)

    def poincare_to_klein(self, x: Tensor) -> Tensor:
        """See :func:`poincare.poincare_to_klein`."""
        return PF.poincare_to_klein(x, c=self.curvature)

    def klein_to_poincare(self, k: Tensor) -> Tensor:
        """See :func:`poincare.klein_to_poincare`."""
        return PF.klein_to_poincare(k, c=self.curvature)

    def poincare_to_lorentz(self, x: Tensor) -> Tensor:
        """See :func:`poincare.poincare_to_lorentz`."""
        return PF.poincare_to_lorentz(x, c=self.curvature)

    def lorentz_to_poincare(self, h: Tensor) -> Tensor:
        """See :func:`poincare.lorentz_to_poincare`."""
        return PF.lorentz_to_poincare(h, c=self.curvature)

    def max_radius(self, dtype: torch.dtype) -> float:
        """See :func:`poincare.max_radius`."""
        return PF.max_radius(dtype, c=float(self.c))

    def check_point(self, x: Tensor) -> None:
        """See :func:`poincare.check_point`."""
        PF.check_point(x, c=self.c.detach())

    # -- the Riemannian-optimiser interface (geoopt's names) ----------------------------------

    def projx(self, x: Tensor) -> Tensor:
        """Project a point into the ball (:func:`poincare.project`)."""
        return self.project(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Project a vector onto :math:`T_x` (the identity: every vector is tangent)."""
        return u

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        r"""Riemannian inner product :math:`\lambda_x^2\langle u, v\rangle` (``v`` defaults to
        ``u``); ``(...)`` or ``(..., 1)``."""
        v = u if v is None else v
        lam = self.conformal_factor(x)
        res = lam * lam * (u * v).sum(dim=-1, keepdim=True)
        return res if keepdim else res.squeeze(-1)

    def component_inner(self, x: Tensor, u: Tensor, v: Tensor | None = None) -> Tensor:
        r"""Per-coordinate inner product :math:`\lambda_x^2 u_i v_i`, shaped like ``u``."""
        v = u if v is None else v
        lam = self.conformal_factor(x)
        return lam * lam * u * v

    def norm(self, x: Tensor, u: Tensor, *, keepdim: bool = False) -> Tensor:
        r"""Riemannian norm :math:`\lambda_x|u|`."""
        res: Tensor = self.conformal_factor(x) * torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        return res if keepdim else res.squeeze(-1)

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        """Retraction: the exact exponential map."""
        return self.expmap(x, u)

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Move ``x`` along ``u`` and transport ``v`` to the new point."""
        y = self.expmap(x, u)
        return y, self.transp(x, y, v)

    def expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Same as :meth:`retr_transp` (the retraction is the exponential map)."""
        return self.retr_transp(x, u, v)

    def transp_follow_retr(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Transport ``v`` from ``x`` to ``retr(x, u)``."""
        return self.transp(x, self.expmap(x, u), v)

    def transp_follow_expmap(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Transport ``v`` from ``x`` to ``expmap(x, u)``."""
        return self.transp_follow_retr(x, u, v)

    def random(self, *size: int, std: float = 1.0, dtype: torch.dtype | None = None) -> Tensor:
        """Points ``expmap0(std * N(0, I))`` of shape ``size``."""
        noise: Tensor = torch.randn(*size, dtype=dtype) * std
        return self.expmap0(noise)

    def check_point_on_manifold(self, x: Tensor) -> bool:
        """Whether every point of ``x`` is finite and strictly inside the ball."""
        try:
            self.check_point(x)
        except ValueError:
            return False
        return True

    def assert_check_point(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` has a vector dimension (shape only, like geoopt)."""
        if x.dim() < 1:
            raise ValueError("a point of the Poincaré ball needs at least one dimension")

    def assert_check_point_on_manifold(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless every point is finite and strictly inside the ball."""
        self.check_point(x)

    def assert_check_vector(self, u: Tensor) -> None:
        """Raise ``ValueError`` unless ``u`` has a vector dimension."""
        if u.dim() < 1:
            raise ValueError("a tangent vector needs at least one dimension")
