"""``PoincareBall``: the functional ops as methods of a module that holds the curvature."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as PF
from ._checks import (
    as_curvature,
    check_broadcast,
    check_curvature,
    check_last_dims,
    check_tensor,
    prepare,
)
from ._numerics import exact_outside, gap_precise
from ._numerics import norm as stable_norm

__all__ = ["PoincareBall"]


class PoincareBall(nn.Module):
    r"""The Poincaré ball :math:`\{x : c|x|^2 < 1\}` with curvature :math:`-c`, as a module.

    Every op of :mod:`poincare.functional` is a method here, with the curvature supplied by the
    module. With ``learnable=True`` the curvature is a parameter through the positive
    parametrisation :math:`c = \exp(\theta)`, so no optimiser step can make it non-positive.

    The class also implements the manifold interface of geoopt with geoopt's semantics
    (``projx``, ``proju``, ``egrad2rgrad``, ``inner``, ``component_inner``, ``norm``, ``dist``,
    ``retr``, ``expmap``, ``transp``, ``retr_transp``, the ``check_*`` methods, ``ndim``,
    ``reversible``, ...), computed with this library's ops, so that a
    ``geoopt.ManifoldParameter`` whose manifold is a ``PoincareBall`` is optimised by
    ``geoopt.optim.RiemannianAdam``, ``RiemannianSGD`` and their sparse forms, from the centre to
    the outermost shell. The retraction is the exact exponential map and the transport the
    exact parallel transport. geoopt itself is not required to use the class.

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

    # -- geoopt's manifold interface ------------------------------------------------------------
    #
    # At every step geoopt's optimisers call ``egrad2rgrad``, ``component_inner`` (the second
    # moment of RiemannianAdam), ``retr_transp`` (or ``retr`` for RiemannianSGD without momentum),
    # and ``projx``/``proju`` when they stabilise; the line search calls ``inner`` and
    # ``transp_follow_retr``. ``geoopt.ManifoldTensor`` calls ``assert_check_point`` when it is
    # made and forwards its own methods (``retr``, ``expmap``, ``logmap``, ``inner``, ``proju``,
    # ``transp``, the ``*_transp`` forms, ``dist``, ``unpack_tensor``) to the manifold. None of
    # these branches in Python on tensor values; only the opt-in ``check_*`` methods do.

    def projx(self, x: Tensor) -> Tensor:
        """Project points into the ball (:func:`poincare.project`): ``(..., D)``, bit for bit
        unchanged when strictly inside."""
        return self.project(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Project ``u`` onto :math:`T_x`: every vector is tangent, so ``u`` itself, expanded to
        the broadcast shape of ``x`` and ``u`` (a view, no copy).

        Raises:
            TypeError, ValueError: ``x`` or ``u`` is not a floating tensor, their last
                dimensions differ, or their leading dimensions do not broadcast.
        """
        check_last_dims(x=x, u=u)
        return u.expand(*check_broadcast(x=x, u=u), u.shape[-1])

    def _metric(self, x: Tensor, **vectors: Tensor) -> tuple[torch.dtype, Tensor, list[Tensor]]:
        r"""The result dtype, :math:`\lambda_x = 2/B_x` and the ``vectors`` in the compute dtype.

        :math:`B_x = 1 - c|x|^2` is formed as :func:`poincare.egrad2rgrad` forms it (a
        double-double norm in float64, float64 work for float32 data), so that
        :math:`\lambda_x` keeps a few ulps of relative accuracy up to the outermost shell, where
        the plain gap of :func:`poincare.conformal_factor` is only as good as :math:`x` itself
        (a relative :math:`\epsilon/B_x`), and the metric is the one whose inverse
        ``egrad2rgrad`` applies.
        """
        check_last_dims(x=x, **vectors)
        tensors: dict[str, Any] = {"x": x, **vectors}
        out, _, cc, (xx, *vv) = prepare(self.curvature, wide=True, **tensors)
        return out, 2 / gap_precise(xx, cc, out == torch.float64), vv

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        r"""Riemannian inner product :math:`\langle u, v\rangle_x = \lambda_x^2\langle u, v\rangle`.

        Formed as :math:`\langle\lambda_x u, \lambda_x v\rangle`, with :math:`\lambda_x` as
        accurate as :func:`poincare.egrad2rgrad`'s (float32 data is computed in float64); since
        :math:`\lambda_x \ge 2`, no product underflows where :math:`u_i v_i` would.

        Args:
            x: ``(..., D)`` points.
            u, v: ``(..., D)`` tangent vectors at ``x`` (``v`` defaults to ``u``).
            keepdim: keep the reduced last dimension.

        Returns:
            The broadcast ``(...)``, or ``(..., 1)`` with ``keepdim``, in the promoted dtype of
            the inputs.

        Raises:
            TypeError, ValueError: the arguments are not floating tensors, their last dimensions
                differ, or their leading dimensions do not broadcast (the message names them).
        """
        if v is None:
            out, lam, (uu,) = self._metric(x, u=u)
            lu = lam * uu
            res = (lu * lu).sum(dim=-1, keepdim=True)
        else:
            out, lam, (uu, vv) = self._metric(x, u=u, v=v)
            res = (lam * uu * (lam * vv)).sum(dim=-1, keepdim=True)
        res = res.to(out)
        return res if keepdim else res.squeeze(-1)

    def component_inner(self, x: Tensor, u: Tensor, v: Tensor | None = None) -> Tensor:
        r"""The inner product :math:`\lambda_x^2\langle u, v\rangle` as geoopt's optimisers read
        it: :meth:`inner` with ``keepdim=True``, ``(..., 1)``.

        The ball is one manifold, not a product of components, so there is one value per point;
        RiemannianAdam broadcasts it over the coordinates of its second moment. For a Riemannian
        gradient :math:`g/\lambda_x^2` this is :math:`|g|^2/\lambda_x^2`, and Adam's step
        ``exp_avg / sqrt(exp_avg_sq)`` has a Riemannian length of about ``lr`` wherever the point
        is, from the centre to the outermost shell.
        """
        return self.inner(x, u, v, keepdim=True)

    def norm(self, x: Tensor, u: Tensor, *, keepdim: bool = False) -> Tensor:
        r"""Riemannian norm :math:`|u|_x = \lambda_x|u|`: ``(...)``, or ``(..., 1)`` with
        ``keepdim``. :math:`\lambda_x` is that of :meth:`inner` and :math:`|u|` is taken
        without overflow or underflow, so every finite ``u`` has a finite norm where
        :math:`\lambda_x|u|` is representable.

        Raises:
            TypeError, ValueError: as :meth:`inner`.
        """
        out, lam, (uu,) = self._metric(x, u=u)
        res = (lam * stable_norm(uu)).to(out)
        return res if keepdim else res.squeeze(-1)

    def dist2(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Squared geodesic distance :math:`d(x, y)^2` (:meth:`dist`, squared)."""
        return self.dist(x, y, keepdim=keepdim).square()

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        """Retraction: the exact exponential map :meth:`expmap`, ``(..., D)`` inside the ball."""
        return self.expmap(x, u)

    def expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        r"""Move ``x`` along ``u`` and carry ``v`` along: :math:`y = \exp_x(u)` and the parallel
        transport :math:`P_{x\to y}(v)`, both ``(..., D)``."""
        y = self.expmap(x, u)
        return y, self.transp(x, y, v)

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`expmap_transp` (the retraction is the exponential map)."""
        return self.expmap_transp(x, u, v)

    def transp_follow_expmap(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        r""":math:`P_{x\to\exp_x(u)}(v)`: the transported vector of :meth:`expmap_transp`."""
        return self.expmap_transp(x, u, v)[1]

    def transp_follow_retr(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """:meth:`transp_follow_expmap` (the retraction is the exponential map)."""
        return self.transp_follow_expmap(x, u, v)

    def random(
        self,
        *size: int,
        std: float = 1.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Points ``expmap0(std * N(0, I))`` of shape ``size``."""
        noise: Tensor = torch.randn(*size, dtype=dtype, device=device) * std
        return self.expmap0(noise)

    def origin(
        self,
        *size: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = 42,
    ) -> Tensor:
        """The origin, zeros of shape ``size`` (``seed`` is not used: nothing is random)."""
        return torch.zeros(*size, dtype=dtype, device=device)

    def unpack_tensor(self, tensor: Tensor) -> Tensor:
        """A point is stored as it is: ``tensor`` itself."""
        return tensor

    def pack_point(self, *tensors: Tensor) -> Tensor:
        """The one tensor of a point, as it is; ``ValueError`` unless exactly one is given."""
        if len(tensors) != 1:
            raise ValueError(f"pack_point takes 1 tensor on the Poincaré ball, got {len(tensors)}")
        return tensors[0]

    # -- geoopt's checks (opt-in; they read tensor values) -------------------------------------

    def _point_reason(self, x: Tensor, atol: float, rtol: float) -> str | None:
        """Why the floating tensor ``x`` is not on the ball within geoopt's tolerance (see
        :meth:`check_point_on_manifold`), or ``None`` if it is."""
        finite = torch.isfinite(x).all(dim=-1, keepdim=True)
        if not bool(finite.all()):
            return f"x has {int((~finite).sum())} point(s) with non-finite coordinates"
        c = as_curvature(self.c.detach(), torch.float64, x.device)
        near = torch.isclose(x, PF.project(x, c=c), rtol=rtol, atol=atol).all(-1, keepdim=True)
        bad = exact_outside(x, c) & ~near
        if not bool(bad.any()):
            return None
        worst = float((stable_norm(x.double()) * c.sqrt()).max())
        return (
            f"x has {int(bad.sum())} point(s) outside the Poincaré ball beyond atol={atol!r}, "
            f"rtol={rtol!r} (largest sqrt(c)*|x| = {worst!r}; points must satisfy c*|x|^2 < 1)"
        )

    def _tangent_reason(
        self, x: Tensor, u: Tensor, ok_point: bool, atol: float, rtol: float
    ) -> str | None:
        """Why ``u`` is not a tensor of tangent vectors at ``x`` (see
        :meth:`check_vector_on_tangent`), or ``None``."""
        reason = self._shape_reason("x", x) or self._shape_reason("u", u)
        reason = reason or self._vector_reason(x, u)
        if reason is None and not ok_point:
            reason = self._point_reason(x, atol, rtol)
        return reason

    @staticmethod
    def _vector_reason(x: Tensor, u: Tensor) -> str | None:
        """Why ``u`` is not a vector of the tangent spaces at ``x``, or ``None``."""
        try:
            check_last_dims(x=x, u=u)
            check_broadcast(x=x, u=u)
        except (TypeError, ValueError) as err:
            return str(err)
        return None

    @staticmethod
    def _shape_reason(name: str, t: Tensor) -> str | None:
        """Why ``t`` is not a point or vector of the ball by its type and shape, or ``None``."""
        try:
            check_tensor(name, t)
        except (TypeError, ValueError) as err:
            return str(err)
        return None

    def check_point(self, x: Tensor, *, explain: bool = False) -> bool | tuple[bool, str | None]:
        """Whether ``x`` can be a tensor of points (geoopt's meaning): a real floating tensor
        with a non-empty last dimension. The values are not read; see
        :meth:`check_point_on_manifold` and :func:`poincare.check_point` for containment.

        Returns:
            ``ok``, or ``(ok, reason)`` with ``explain`` (``reason`` is ``None`` when ``ok``).
        """
        return _verdict(self._shape_reason("x", x), explain)

    def assert_check_point(self, x: Tensor) -> None:
        """Raise unless :meth:`check_point` holds (``geoopt.ManifoldTensor`` calls this).

        Raises:
            TypeError: ``x`` is not a real floating tensor.
            ValueError: ``x`` has no dimension or an empty last dimension.
        """
        check_tensor("x", x)

    def check_vector(self, u: Tensor, *, explain: bool = False) -> bool | tuple[bool, str | None]:
        """Whether ``u`` can be a tensor of tangent vectors, as :meth:`check_point`."""
        return _verdict(self._shape_reason("u", u), explain)

    def assert_check_vector(self, u: Tensor) -> None:
        """Raise unless :meth:`check_vector` holds (``TypeError``/``ValueError`` naming ``u``)."""
        check_tensor("u", u)

    def check_point_on_manifold(
        self, x: Tensor, *, explain: bool = False, atol: float = 1e-5, rtol: float = 1e-5
    ) -> bool | tuple[bool, str | None]:
        r"""Whether every point of ``x`` is finite and on the ball.

        A point strictly inside (:math:`c|x|^2 < 1`, decided in almost exact arithmetic) is on
        it. A point on or outside the boundary counts, as in geoopt, when it lies within
        ``atol + rtol |p|`` of its projection ``p`` (:func:`poincare.project`) in every
        coordinate; ``atol = rtol = 0`` makes the test exactly that of
        :func:`poincare.check_point`.

        Returns:
            ``ok``, or ``(ok, reason)`` with ``explain``; a tensor that fails
            :meth:`check_point` is not on the ball, with that reason.
        """
        reason = self._shape_reason("x", x) or self._point_reason(x, atol, rtol)
        return _verdict(reason, explain)

    def assert_check_point_on_manifold(
        self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> None:
        """Raise ``ValueError`` (``TypeError`` for a non-tensor) unless
        :meth:`check_point_on_manifold` holds; the message counts the bad points."""
        self.assert_check_point(x)
        _raise(self._point_reason(x, atol, rtol))

    def check_vector_on_tangent(
        self,
        x: Tensor,
        u: Tensor,
        *,
        ok_point: bool = False,
        explain: bool = False,
        atol: float = 1e-5,
        rtol: float = 1e-5,
    ) -> bool | tuple[bool, str | None]:
        """Whether ``u`` is a tensor of tangent vectors at ``x``: every vector of the right
        dimension is tangent, so the last dimensions must agree and the leading ones broadcast;
        unless ``ok_point``, ``x`` must also pass :meth:`check_point_on_manifold`.

        Returns:
            ``ok``, or ``(ok, reason)`` with ``explain``.
        """
        return _verdict(self._tangent_reason(x, u, ok_point, atol, rtol), explain)

    def assert_check_vector_on_tangent(
        self,
        x: Tensor,
        u: Tensor,
        *,
        ok_point: bool = False,
        atol: float = 1e-5,
        rtol: float = 1e-5,
    ) -> None:
        """Raise ``ValueError`` unless :meth:`check_vector_on_tangent` holds, with its reason."""
        _raise(self._tangent_reason(x, u, ok_point, atol, rtol))


def _verdict(reason: str | None, explain: bool) -> bool | tuple[bool, str | None]:
    """geoopt's answer of a check: ``ok``, or ``(ok, reason)`` with ``explain``."""
    return (reason is None, reason) if explain else reason is None


def _raise(reason: str | None) -> None:
    """Raise ``ValueError(reason)`` unless ``reason`` is ``None``."""
    if reason is not None:
        raise ValueError(reason)
