r"""Probability distributions on the Poincaré ball, in the style of :mod:`torch.distributions`.

:class:`WrappedNormal` is the wrapped (Riemannian) normal distribution of Nagano et al. (2019)
and Mathieu et al. (2019): a Gaussian in the tangent space at the origin, carried to the mean by
parallel transport and wrapped onto the ball by the exponential map. Its sampler is
reparameterised (``rsample``) and :meth:`WrappedNormal.log_prob` is the exact density of that
sampler with respect to the Riemannian volume of the ball.

Numerics. The density of the exponential map in a space of constant curvature :math:`-c` is
:math:`(\sinh(\sqrt{c}\,r)/(\sqrt{c}\,r))^{D-1}` for a geodesic length :math:`r`; its logarithm
is evaluated by :func:`log_sinhc_sq` from :math:`t = c r^2` without a ``0/0`` at :math:`r = 0`
(finite gradients at ``value == loc``) and without overflow at any representable radius.
Everything else is a composition of the ops of :mod:`poincare.functional` (``logmap``,
``transp``, ``dist``, ``transp0``, ``expmap``), which keep their accuracy up to the outermost
representable shell.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.types import _size

from . import functional as PF
from ._checks import as_curvature, check_curvature, check_tensor, host_branches, is_real
from ._numerics import exact_outside, max_norm, onto_shell
from ._precision import compute_dtype
from .manifold import PoincareBall

__all__ = ["PoincareBallConstraint", "WrappedNormal", "log_sinhc_sq"]

_LOG_2PI = math.log(2.0 * math.pi)
_EMPTY = torch.Size()

# log(sinh(s)/s) from t = s^2: a series below t = 4 (s = 2), log(sinh(s)/s) itself up to
# t = 256 (s = 16), then s - log(2s) + log1p(-exp(-2s)).
_SERIES_END = 4.0
_DIRECT_END = 256.0
# sinh(s)/s - 1 = sum_{k>=1} t^k / (2k+1)!: for t <= 4 the twelfth term is below 2e-18 of the
# sum (the sum is at least t/6), so twelve terms are exact to a float64 rounding.
_SINHC_COEFFS = tuple(1.0 / math.factorial(2 * k + 1) for k in range(1, 13))


def log_sinhc_sq(t: Tensor) -> Tensor:
    r""":math:`\log(\sinh(s)/s)` of :math:`s = \sqrt{t}`, for ``t >= 0`` (0 at ``t = 0``).

    The log-density of the exponential map of a ball of curvature :math:`-c` along a geodesic
    of length :math:`r` is :math:`(D - 1)` times this function of :math:`t = c r^2`. Taking
    :math:`t` rather than :math:`s` keeps the square root (and its infinite derivative) out of
    the neighbourhood of 0. Three forms, each exact to a few ulps where it is used:

    * :math:`t < 4`: :math:`\operatorname{log1p}(q)` with
      :math:`q = \sinh(s)/s - 1 = \sum_{k\ge1} t^k/(2k+1)!` (twelve terms, Horner): every term
      is positive, so there is no cancellation, and the value and its derivative
      :math:`\tfrac{1}{6}` at 0 are exact;
    * :math:`4 \le t < 256`: :math:`\log(\sinh(s)/s)`, whose argument is at least 1.8, so the
      logarithm loses nothing;
    * :math:`t \ge 256`: :math:`s - \log(2s) + \operatorname{log1p}(-e^{-2s})`, the same value
      without forming :math:`\sinh s` (which overflows float32 beyond :math:`s \approx 89`).

    Each branch sees its argument clamped to its own range, so the branches not taken are finite
    and contribute exact zeros to the gradient (no ``NaN`` through :func:`torch.where`).

    Args:
        t: non-negative tensor (any shape).

    Returns:
        A tensor of ``t``'s shape and dtype, non-negative, with finite gradients for finite
        ``t``.
    """
    ts = t.clamp(max=_SERIES_END)
    q = torch.full_like(ts, _SINHC_COEFFS[-1])
    for coeff in reversed(_SINHC_COEFFS[:-1]):
        q = q * ts + coeff
    series = torch.log1p(q * ts)
    sm = torch.sqrt(t.clamp(min=_SERIES_END, max=_DIRECT_END))
    direct = torch.log(torch.sinh(sm) / sm)
    sb = torch.sqrt(t.clamp(min=_DIRECT_END))
    asymptotic = sb - torch.log(2 * sb) + torch.log1p(-torch.exp(-2 * sb))
    return torch.where(t < _SERIES_END, series, torch.where(t < _DIRECT_END, direct, asymptotic))


class PoincareBallConstraint(constraints.Constraint):
    r"""The constraint :math:`c|x|^2 < 1` on the last dimension (``event_dim = 1``).

    :meth:`check` decides containment in (almost) exact arithmetic on the stored values, as
    :func:`poincare.check_point` does, so a float64 point on the outermost representable shell
    counts as inside.
    """

    event_dim = 1

    def __init__(self, c: float | Tensor = 1.0) -> None:
        super().__init__()
        self.c = c

    def check(self, value: Tensor) -> Tensor:
        """Boolean tensor of ``value.shape[:-1]``: finite and strictly inside the ball."""
        c64 = torch.as_tensor(self.c, dtype=torch.float64, device=value.device).detach()
        if c64.dim() > 0:  # a batch of curvatures: one verdict per (point, curvature)
            batch = torch.broadcast_shapes(value.shape[:-1], c64.shape[:-1])  # type: ignore[no-untyped-call]
            value = value.expand(*batch, value.shape[-1])
        finite = torch.isfinite(value).all(dim=-1)
        # Rows with non-finite coordinates are tested as the origin (and reported by `finite`).
        safe = torch.where(torch.isfinite(value), value, torch.zeros_like(value))
        inside: Tensor = ~exact_outside(safe, c64).squeeze(-1)
        return finite & inside

    def __repr__(self) -> str:
        c = self.c if isinstance(self.c, float) else "tensor"
        return f"PoincareBall(c={c})"


def _as_c(c: object) -> float | Tensor:
    """The curvature of a distribution: a checked float, a floating tensor (its values are
    checked later, with the other arguments, when validating), or a ball's curvature."""
    if isinstance(c, PoincareBall):
        return c.curvature
    if isinstance(c, Tensor):
        if not c.dtype.is_floating_point:
            raise TypeError(f"c must be a float or a floating tensor, got a tensor of {c.dtype}")
        if c.dim() > 0 and c.shape[-1] != 1:
            raise ValueError(
                "c must be a scalar or broadcast against loc[..., :1] (trailing size 1), "
                f"got shape {tuple(c.shape)}"
            )
        return c
    return check_curvature(c)


class WrappedNormal(Distribution):
    r"""The wrapped normal distribution on the Poincaré ball :math:`\{x : c|x|^2 < 1\}`.

    Convention (stated in the ball's own metric :math:`g_x = \lambda_x^2 I`,
    :math:`\lambda_x = 2/(1 - c|x|^2)`, curvature :math:`-c`). Let
    :math:`\varepsilon \sim N(0, I_D)` and :math:`v = \sigma \odot \varepsilon`. The vector
    :math:`v` holds the coordinates of a tangent vector at the origin in an *orthonormal* frame,
    i.e. the tangent vector is :math:`v/\lambda_0 = v/2` in the ball's coordinates, of Riemannian
    length :math:`|v|`. The sample is

    .. math::
        z = \exp_\mu\big(P_{0\to\mu}(v/2)\big) = \exp_\mu\big((1 - c|\mu|^2)\,v/2\big)
          = \exp_\mu(v/\lambda_\mu),

    so that the geodesic distance :math:`d_c(\mu, z) = |v|` exactly, whatever :math:`c`: the
    scale is measured in the ball's geodesic length (for ``c = 1``, :math:`\sigma` is the
    standard deviation of each normal coordinate of the sample around :math:`\mu`). This is the
    convention of Mathieu et al. (2019) (their ``v / lambda_0``); ``poincare.expmap`` and
    ``poincare.transp0`` of :mod:`poincare.functional` carry it out.

    Density. With respect to the Riemannian volume :math:`dV(x) = \lambda_x^D\,dx` of the ball
    (``dx`` the Lebesgue measure of the coordinates; add :math:`D\log\lambda_x` to
    :meth:`log_prob` for the density with respect to ``dx``),

    .. math::
        \log p(x) = \log N(v;\,0,\operatorname{diag}\sigma^2)
          - (D - 1)\log\frac{\sinh(\sqrt{c}\,r)}{\sqrt{c}\,r},\qquad
        v = \lambda_0\,P_{\mu\to0}\big(\log_\mu x\big) = \lambda_\mu\log_\mu x,\quad r = |v|
          = d_c(\mu, x),

    the Gaussian density of the orthonormal coordinates of :math:`\log_\mu x` transported back
    to the origin, divided by the volume distortion of the exponential map (parallel transport
    is an isometry). For an isotropic scale only :math:`r` is needed and it is computed by
    ``poincare.dist``; a diagonal scale uses the vector (``poincare.logmap`` and
    ``poincare.transp`` to the origin).

    Example::

        >>> from poincare.distributions import WrappedNormal
        >>> q = WrappedNormal(poincare.expmap0(mu_tangent), torch.exp(log_sigma))  # (B, D), (B, 1)
        >>> z = q.rsample((8,))  # (8, B, D), differentiable in mu_tangent and log_sigma
        >>> kl = (q.log_prob(z) - WrappedNormal(torch.zeros_like(z[0]), 1.0).log_prob(z)).mean(0)

    Args:
        loc: ``(..., D)`` mean :math:`\mu`, a point strictly inside the ball (also the mode and
            the Fréchet mean).
        scale: positive standard deviations :math:`\sigma`: a float, or a tensor broadcastable
            to ``loc`` with last dimension 1 (isotropic) or ``D`` (diagonal); a 0-d tensor is
            isotropic.
        c: curvature: a positive float, a positive tensor broadcastable to ``loc[..., :1]`` or a
            :class:`poincare.PoincareBall` (its :attr:`~poincare.PoincareBall.curvature`, read
            once at construction; a learnable one passes its gradient on).
        validate_args: as in :mod:`torch.distributions`. When on, tensor arguments are
            checked on construction (``scale > 0``, ``loc`` strictly inside the ball, ``c``
            positive) and ``log_prob`` checks its ``value``; these checks read tensor values.
            ``True`` always checks (a device synchronisation, a graph break). ``None`` (the
            default) follows ``Distribution._validate_args`` (on unless Python runs with
            ``-O``) in eager CPU code, where reading a value is free, and skips the value
            checks under ``torch.compile``, ``torch.func`` transforms and on accelerators
            (:func:`poincare._checks.host_branches`). ``False`` never checks values. (Note that
            ``torch.compile`` turns torch's global default off for the whole process.)

    Attributes:
        loc: ``batch_shape + (D,)``.
        scale: ``batch_shape + (1,)`` (isotropic) or ``batch_shape + (D,)`` (diagonal).
        c: the curvature the ops are called with (float or tensor).

    Shapes: ``event_shape = (D,)``; ``batch_shape`` broadcasts ``loc.shape[:-1]``,
    ``scale.shape[:-1]`` and the leading shape of a tensor ``c``.

    ``float16``/``bfloat16`` parameters compute in ``float32`` and :func:`poincare.upcast`
    raises the compute dtype, as for every op; results come back in the parameters' dtype.

    Raises:
        TypeError: ``loc`` is not a real floating tensor; ``scale`` or ``c`` has a wrong type.
        ValueError: ``loc`` is 0-d; ``scale``'s last dimension is neither 1 nor ``D`` or the
            shapes do not broadcast; a float ``scale`` or ``c`` is not positive and finite
            (always checked); with validation, a tensor ``scale`` with a value that is not
            positive and finite, ``loc`` with a point on or outside the ball (or non-finite), a
            tensor ``c`` that is not positive.
    """

    has_rsample = True

    loc: Tensor
    scale: Tensor
    c: float | Tensor
    _isotropic: bool
    _forced: bool

    def __init__(
        self,
        loc: Tensor,
        scale: float | Tensor,
        *,
        c: float | Tensor | PoincareBall = 1.0,
        validate_args: bool | None = None,
    ) -> None:
        check_tensor("loc", loc)
        cc = _as_c(c)
        dim = loc.shape[-1]
        if isinstance(scale, Tensor):
            if not scale.dtype.is_floating_point:
                raise TypeError(f"scale must be a float or a floating tensor, got {scale.dtype}")
            sc = scale.unsqueeze(-1) if scale.dim() == 0 else scale
            if sc.shape[-1] not in (1, dim):
                raise ValueError(
                    f"scale has last dimension {sc.shape[-1]}, but loc has {dim}: scale must "
                    f"have last dimension 1 (isotropic) or {dim} (diagonal)"
                )
        else:
            if not is_real(scale):
                raise TypeError(f"scale must be a float or a tensor, got {type(scale).__name__}")
            scale = float(scale)
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be positive and finite, got {scale!r}")
            sc = torch.full((1,), float(scale), dtype=loc.dtype, device=loc.device)
        dtype = torch.promote_types(loc.dtype, sc.dtype)
        shapes = [loc.shape[:-1], sc.shape[:-1]]
        if isinstance(cc, Tensor) and cc.dim() > 0:
            shapes.append(cc.shape[:-1])
        try:
            batch = torch.Size(torch.broadcast_shapes(*shapes))  # type: ignore[no-untyped-call]
        except RuntimeError as err:
            shape_c = f"c of shape {tuple(cc.shape)}" if isinstance(cc, Tensor) else "c"
            raise ValueError(
                f"the batch shapes of loc {tuple(loc.shape[:-1])}, scale "
                f"{tuple(sc.shape[:-1])} and {shape_c} do not broadcast"
            ) from err
        self.loc = loc.to(dtype).expand(*batch, dim)
        self.scale = sc.to(dtype=dtype, device=loc.device).expand(*batch, sc.shape[-1])
        self.c = cc
        self._isotropic = sc.shape[-1] == 1
        # validate_args=True always checks values; the default (None) follows torch's global
        # switch in eager CPU code only, where reading a value costs no synchronisation, and
        # skips the value checks under torch.compile, torch.func transforms and on accelerators.
        self._forced = validate_args is True
        validate = Distribution._validate_args if validate_args is None else bool(validate_args)
        if validate and (self._forced or self._host(loc, scale, cc)):
            self._validate_parameters()
        super().__init__(batch, torch.Size((dim,)), validate_args=False)
        self._validate_args = validate

    @staticmethod
    def _host(*args: object) -> bool:
        return host_branches(*(a for a in args if isinstance(a, Tensor)))

    def _validate_parameters(self) -> None:
        """The value checks of the arguments (each reads tensor values)."""
        if isinstance(self.c, Tensor):
            as_curvature(self.c, self.c.dtype, self.c.device)
        with torch.no_grad():
            if not bool((torch.isfinite(self.scale) & (self.scale > 0)).all()):
                raise ValueError("scale must be positive and finite, found other values")
            try:
                PF.check_point(self.loc.detach(), c=_detached(self.c))
            except ValueError as err:
                raise ValueError(f"loc must be points strictly inside the ball: {err}") from err

    # -- torch.distributions interface ----------------------------------------------------------

    @property
    def arg_constraints(self) -> dict[str, constraints.Constraint]:
        return {"loc": PoincareBallConstraint(_detached(self.c)), "scale": constraints.positive}

    @property
    def support(self) -> constraints.Constraint:
        return PoincareBallConstraint(_detached(self.c))

    @property
    def mean(self) -> Tensor:
        """The Fréchet mean ``loc`` (the density is symmetric under :math:`v \\mapsto -v`)."""
        return self.loc

    @property
    def mode(self) -> Tensor:
        """``loc``: both terms of the log-density are largest at :math:`r = 0`."""
        return self.loc

    def expand(self, batch_shape: _size, _instance: WrappedNormal | None = None) -> WrappedNormal:
        new = self._get_checked_instance(WrappedNormal, _instance)  # type: ignore[no-untyped-call]
        batch = torch.Size(batch_shape)
        dim = self.event_shape[0]
        new.loc = self.loc.expand(*batch, dim)
        new.scale = self.scale.expand(*batch, self.scale.shape[-1])
        new.c = self.c
        new._isotropic = self._isotropic
        new._forced = self._forced
        super(WrappedNormal, new).__init__(batch, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new  # type: ignore[no-any-return]

    def rsample(self, sample_shape: _size = _EMPTY) -> Tensor:
        r"""Reparameterised samples, ``sample_shape + batch_shape + (D,)``, strictly inside the
        ball: :math:`z = \exp_\mu\big(P_{0\to\mu}(\sigma\odot\varepsilon/2)\big)` with
        :math:`\varepsilon \sim N(0, I)` (see the class docstring). Differentiable with respect
        to ``loc``, ``scale`` and a tensor ``c``. A sample whose exact position lies beyond the
        representable radius (:func:`poincare.max_radius`, e.g. a mean near the outermost shell
        stepping further out) lands on the outermost shell, as ``poincare.expmap`` does."""
        shape = self._extended_shape(sample_shape)
        dtype = self.loc.dtype
        comp = compute_dtype(dtype)
        eps = torch.randn(shape, dtype=comp, device=self.loc.device)
        loc = self.loc.to(comp)
        v = eps * self.scale.to(comp)
        u = PF.transp0(loc, v / 2, c=self.c)
        z = PF.expmap(loc, u, c=self.c)
        if comp != dtype:
            z = PF.project(z.to(dtype), c=self.c)
        return z

    def log_prob(self, value: Tensor) -> Tensor:
        r"""Log-density of ``value`` with respect to the Riemannian volume of the ball.

        .. math::
            \log p(x) = -\tfrac12\sum_i v_i^2/\sigma_i^2 - \sum_i\log\sigma_i
                        - \tfrac{D}{2}\log 2\pi - (D-1)\,\ell(c\,r^2),

        with :math:`v = \lambda_\mu\log_\mu x` (computed as :math:`2\,P_{\mu\to0}\log_\mu x`),
        :math:`r = |v| = d_c(\mu, x)` (``poincare.dist`` for an isotropic scale) and
        :math:`\ell` = :func:`log_sinhc_sq`. Finite, with finite gradients, at every point of
        the ball, ``value == loc`` and the outermost representable shell included, for every
        positive scale whose log-density is a number of the dtype (a point ``r`` from the mean
        under a scale so small that :math:`r^2/2\sigma^2` exceeds the dtype's largest float,
        e.g. ``3e-31`` in float32, gets ``-inf``, the rounding of its log-density); points on or
        beyond the boundary (a caller's error, rejected under validation) are evaluated as if
        they lay on the outermost shell, in their direction (as ``project(value)``).

        Args:
            value: ``(..., D)`` points, broadcastable against ``batch_shape + (D,)``.

        Returns:
            ``broadcast(value.shape[:-1], batch_shape)``, in the promoted dtype of ``value`` and
            the parameters.

        Raises:
            TypeError, ValueError: with validation, ``value`` is not a floating tensor, its last
                dimension is not ``D``, its shape does not broadcast, or it has points on or
                outside the ball.
        """
        if self._validate_args and (self._forced or self._host(value)):
            self._validate_sample(value)
        dtype = torch.promote_types(value.dtype, self.loc.dtype)
        comp = compute_dtype(dtype)
        loc = self.loc.to(comp)
        cc = self.c.to(comp) if isinstance(self.c, Tensor) else self.c
        sc = cc.sqrt() if isinstance(cc, Tensor) else torch.tensor(math.sqrt(cc), dtype=comp)
        # points outside the ball (a caller's error) are evaluated from the outermost shell
        x = onto_shell(value.to(comp), sc.to(value.device), shell=max_norm(dtype))
        scale = self.scale.to(comp)
        dim = self.event_shape[0]
        if self._isotropic:
            r = PF.dist(loc, x, c=self.c, keepdim=True)
            sq = r * r
            z = r / scale  # (not sq / scale^2, whose denominator underflows for tiny scales)
            quad = z * z
            log_scale = dim * torch.log(scale)
        else:
            w = PF.logmap(loc, x, c=self.c)
            v = 2 * PF.transp(loc, torch.zeros_like(loc), w, c=self.c)
            sq = (v * v).sum(dim=-1, keepdim=True)
            z = v / scale
            quad = (z * z).sum(dim=-1, keepdim=True)
            log_scale = torch.log(scale).sum(dim=-1, keepdim=True)
        jac = (dim - 1) * log_sinhc_sq(cc * sq)
        out = -0.5 * quad - log_scale - (0.5 * dim * _LOG_2PI) - jac
        return out.squeeze(-1).to(dtype)

    def _validate_sample(self, value: Tensor) -> None:
        check_tensor("value", value)
        dim = self.event_shape[0]
        if value.shape[-1] != dim:
            raise ValueError(
                f"value has last dimension {value.shape[-1]}, but the distribution's points "
                f"have {dim}"
            )
        try:
            shape = torch.broadcast_shapes(value.shape, self.loc.shape)  # type: ignore[no-untyped-call]
        except RuntimeError as err:
            raise ValueError(
                f"value of shape {tuple(value.shape)} does not broadcast against the "
                f"distribution's batch_shape + event_shape {tuple(self.loc.shape)}"
            ) from err
        try:
            PF.check_point(value.detach().expand(shape), c=_detached(self.c))
        except ValueError as err:
            raise ValueError(f"value must be points strictly inside the ball: {err}") from err


def _detached(c: float | Tensor) -> float | Tensor:
    return c.detach() if isinstance(c, Tensor) else c
