"""Hypothesis strategies that build valid inputs for the operations of :mod:`poincare`.

Every strategy constructs its values directly (nothing is filtered), so that the boundary of the
ball is exercised as often as the interior:

* points are drawn by *hyperbolic* radius: a direction uniform on the unit sphere and a radius
  ``r`` uniform in ``[0, max_radius(dtype, c)]``, with extra mass exactly at the origin, on tiny
  radii, and on the outermost representable shell (``poincare.project`` of a point pushed beyond
  the boundary). The point at radius ``r`` in direction ``u`` is ``expmap0(u * r / 2)`` (the
  conformal factor at the origin is 2), computed in float64 and rounded to the requested dtype,
  then projected so that rounding can never leave it on the boundary;
* pairs of nearly equal points, antipodal-ish pairs, tangent vectors whose exponential stays
  representable, curvatures, nonnegative weights, matrices and scalars.

Directions and matrix entries come from a seeded :class:`torch.Generator` whose seed is drawn by
Hypothesis, so every example is reproducible from the drawn values. Radii, kinds and magnitudes
are drawn by Hypothesis itself and shrink towards the origin and the simplest kind.

All strategies take the dtype (``torch.float32`` or ``torch.float64``) and the curvature as plain
arguments; an invalid argument raises ``ValueError``/``TypeError`` naming it when the strategy is
*created*, not when it is drawn from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

import poincare
from poincare._optional import optional_imports

with optional_imports("hypothesis", extra="verify", purpose="the Hypothesis strategies"):
    from hypothesis import strategies as st

from verification import reference as ref

__all__ = [
    "C_RANGE",
    "DTYPES",
    "FIXED_CURVATURES",
    "antipodal_pairs",
    "batch_shapes",
    "curvatures",
    "dims",
    "directions",
    "hyperbolic_radii",
    "matrices",
    "nearby_points",
    "nearly_equal_pairs",
    "point_and_tangent",
    "points",
    "points_at_radii",
    "scalars",
    "seeds",
    "tangent_vectors",
    "translated_points",
    "weights",
]

#: The floating-point dtypes whose points the strategies build.
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)

#: The verified range of curvatures: every op meets the contract for ``c`` in it.
C_RANGE: tuple[float, float] = (1e-4, 100.0)

#: Curvatures that are always worth testing: both ends of the verified range, the unit ball and
#: a wide ball whose curvature is not a float32 number.
FIXED_CURVATURES: tuple[float, ...] = (1.0, 0.1, 1e-4, 100.0)

_SEED_MAX = 2**32 - 1


def _check_dtype(dtype: torch.dtype, name: str = "dtype") -> None:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {type(dtype).__name__}")
    if dtype not in DTYPES:
        raise ValueError(f"{name} must be torch.float32 or torch.float64, got {dtype}")


def _check_c(c: float, name: str = "c") -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(c).__name__}")
    cf = float(c)
    if not math.isfinite(cf) or cf <= 0.0:
        raise ValueError(f"{name} must be a finite positive float, got {c!r}")
    return cf


def _check_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    out = tuple(shape)
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"{name} must be a sequence of ints, got {shape!r}")
        if s < 0:
            raise ValueError(f"{name} must not contain negative sizes, got {shape!r}")
    return out


def _check_dim(dim: int, name: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__}")
    if dim < 1:
        raise ValueError(f"{name} must be at least 1, got {dim}")
    return dim


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def seeds() -> st.SearchStrategy[int]:
    """Seeds for :class:`torch.Generator`: integers in ``[0, 2**32 - 1]``, shrinking to 0."""
    return st.integers(min_value=0, max_value=_SEED_MAX)


def dims(min_dim: int = 1, max_dim: int = 8) -> st.SearchStrategy[int]:
    """Dimensions of the ball, ``min_dim <= D <= max_dim`` (both at least 1)."""
    _check_dim(min_dim, "min_dim")
    _check_dim(max_dim, "max_dim")
    if max_dim < min_dim:
        raise ValueError(f"max_dim ({max_dim}) must be >= min_dim ({min_dim})")
    return st.integers(min_value=min_dim, max_value=max_dim)


def batch_shapes(max_dims: int = 2, max_side: int = 4) -> st.SearchStrategy[tuple[int, ...]]:
    """Leading (batch) shapes: up to ``max_dims`` dimensions of sizes ``1..max_side``."""
    if max_dims < 0:
        raise ValueError(f"max_dims must be >= 0, got {max_dims}")
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    return st.lists(
        st.integers(min_value=1, max_value=max_side), min_size=0, max_size=max_dims
    ).map(tuple)


def curvatures(
    min_c: float = C_RANGE[0], max_c: float = C_RANGE[1], fixed: bool = True
) -> st.SearchStrategy[float]:
    """Curvatures ``c``: log-uniform in ``[min_c, max_c]`` (default the whole verified range
    :data:`C_RANGE`), and, when ``fixed``, about half the time one of :data:`FIXED_CURVATURES`
    inside those bounds.

    The exponent is drawn uniformly, so every decade of the range is as likely as any other;
    it shrinks towards ``c = 1`` when 1 is in the range (else towards ``min_c``).

    Raises ``ValueError`` if the bounds are not finite positive floats with ``min_c <= max_c``.
    """
    lo = _check_c(min_c, "min_c")
    hi = _check_c(max_c, "max_c")
    if hi < lo:
        raise ValueError(f"max_c ({max_c}) must be >= min_c ({min_c})")
    e_lo, e_hi = math.log10(lo), math.log10(hi)
    ranged = st.floats(min_value=e_lo, max_value=e_hi).map(lambda e: min(max(10.0**e, lo), hi))
    inside = [v for v in FIXED_CURVATURES if lo <= v <= hi]
    if not fixed or not inside:
        return ranged
    return st.one_of(st.sampled_from(inside), ranged)


@st.composite
def directions(draw: st.DrawFn, dim: int, batch_shape: Sequence[int] = ()) -> torch.Tensor:
    """Unit vectors uniform on the sphere ``S^{dim-1}``, float64, shape ``(*batch_shape, dim)``.

    A normalised standard Gaussian from a seeded generator (the seed is drawn).
    """
    d = _check_dim(dim)
    shape = _check_shape(batch_shape, "batch_shape")
    gen = torch.Generator().manual_seed(draw(seeds()))
    g = torch.randn((*shape, d), generator=gen, dtype=torch.float64)
    norm = g.norm(dim=-1, keepdim=True)
    # A Gaussian vector has norm 0 with probability 0; guard anyway with the first basis vector.
    e0 = torch.zeros_like(g)
    e0[..., 0] = 1.0
    return torch.where(norm > 0, g / norm.clamp_min(1e-300), e0)


def _radius_max(dtype: torch.dtype, c: float, max_radius: float | None) -> float:
    r_rep = float(poincare.max_radius(dtype, c=c))
    if max_radius is None:
        return r_rep
    if not (isinstance(max_radius, (int, float)) and math.isfinite(max_radius)):
        raise TypeError(f"max_radius must be a finite float or None, got {max_radius!r}")
    if max_radius < 0:
        raise ValueError(f"max_radius must be >= 0, got {max_radius}")
    return min(float(max_radius), r_rep)


# Kinds of radius: 0 = the origin, 1 = a tiny radius, 2 = the outermost shell, else uniform.
_ORIGIN, _TINY, _SHELL = 0, 1, 2
_RADIUS_KINDS = 10


def hyperbolic_radii(
    dtype: torch.dtype,
    *,
    c: float = 1.0,
    max_radius: float | None = None,
    shell: bool = True,
) -> st.SearchStrategy[float]:
    """Hyperbolic radii (distances from the origin) for points of ``dtype`` at curvature ``c``.

    Radii are in units of the curvature radius ``1/sqrt(c)``, so that every curvature sees the
    same shapes of the ball. With probability about 1/10 each: exactly 0, a tiny radius
    ``2**-k / sqrt(c)`` (``k`` up to 60 for float32 and 500 for float64, so that ``|x|**2``
    underflows), and ``math.inf`` meaning "the outermost representable shell" (only when
    ``shell`` is true and ``max_radius`` is None or at least the representable radius);
    otherwise uniform in ``[0, R]`` with ``R = min(max_radius, poincare.max_radius(dtype, c=c))``
    (the representable radius is itself ``max_radius(dtype, c=1) / sqrt(c)``).
    """
    _check_dtype(dtype)
    cf = _check_c(c)
    r_max = _radius_max(dtype, cf, max_radius)
    full = max_radius is None or max_radius >= float(poincare.max_radius(dtype, c=cf))
    k_max = 60 if dtype == torch.float32 else 500

    @st.composite
    def _radius(draw: st.DrawFn) -> float:
        kind = draw(st.integers(min_value=0, max_value=_RADIUS_KINDS - 1))
        if kind == _ORIGIN:
            return 0.0
        if kind == _TINY:
            k = draw(st.integers(min_value=8, max_value=k_max))
            return min(math.ldexp(1.0, -k) / math.sqrt(cf), r_max)
        if kind == _SHELL and shell and full:
            return math.inf
        return draw(st.floats(min_value=0.0, max_value=r_max, allow_nan=False))

    return _radius()


def points_at_radii(
    radii: torch.Tensor, direction: torch.Tensor, dtype: torch.dtype, *, c: float = 1.0
) -> torch.Tensor:
    """The points at hyperbolic distance ``radii`` from the origin along unit vectors ``direction``.

    ``radii`` has shape ``(...)`` (float64; ``inf`` selects the outermost representable shell),
    ``direction`` shape ``(..., D)`` (float64, unit norm). Returns ``(..., D)`` in ``dtype``:
    ``project(expmap0(direction * radii / 2))`` with the exponential taken in float64 and the
    projection in ``dtype``, and for the shell ``project(direction * 2 / sqrt(c))``.
    Raises ``ValueError`` on mismatched shapes or negative/NaN radii.
    """
    _check_dtype(dtype)
    cf = _check_c(c)
    if radii.shape != direction.shape[:-1]:
        raise ValueError(
            f"radii shape {tuple(radii.shape)} must equal direction's leading shape "
            f"{tuple(direction.shape[:-1])}"
        )
    if bool(torch.isnan(radii).any()) or bool((radii < 0).any()):
        raise ValueError("radii must be nonnegative and not NaN")
    r = radii.to(torch.float64).unsqueeze(-1)
    u = direction.to(torch.float64)
    on_shell = torch.isinf(r)
    half = torch.where(on_shell, torch.zeros_like(r), r / 2.0)
    inner = poincare.expmap0(u * half, c=cf).to(dtype)
    outer = (u * (2.0 / math.sqrt(cf))).to(dtype)
    x = torch.where(on_shell.to(torch.bool), outer, inner)
    return poincare.project(x, c=cf)


@st.composite
def points(
    draw: st.DrawFn,
    dtype: torch.dtype,
    dim: int,
    batch_shape: Sequence[int] = (),
    *,
    c: float = 1.0,
    max_radius: float | None = None,
    shell: bool = True,
) -> torch.Tensor:
    """Points of the ball ``{x : c|x|^2 < 1}``, shape ``(*batch_shape, dim)``, in ``dtype``.

    Each point has its own radius from :func:`hyperbolic_radii` (so a batch mixes the origin, tiny
    points, the interior and the outermost shell) and a direction uniform on the sphere.
    ``max_radius`` caps the hyperbolic radius (the default is the representable radius).
    """
    _check_dtype(dtype)
    cf = _check_c(c)
    d = _check_dim(dim)
    shape = _check_shape(batch_shape, "batch_shape")
    n = _numel(shape)
    rs = draw(
        st.lists(
            hyperbolic_radii(dtype, c=cf, max_radius=max_radius, shell=shell),
            min_size=n,
            max_size=n,
        )
    )
    radii = torch.tensor(rs, dtype=torch.float64).reshape(shape)
    u = draw(directions(d, shape))
    return points_at_radii(radii, u, dtype, c=cf)


def _nudge_ulps(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Move each component of ``x`` by ``steps`` (signed int tensor, same shape) float steps."""
    out = x.clone()
    up = torch.full_like(x, math.inf)
    down = torch.full_like(x, -math.inf)
    k_max = int(steps.abs().max().item()) if steps.numel() else 0
    for k in range(k_max):
        move_up = steps > k
        move_down = steps < -k
        out = torch.where(move_up, torch.nextafter(out, up), out)
        out = torch.where(move_down, torch.nextafter(out, down), out)
    return out


@st.composite
def translated_points(
    draw: st.DrawFn,
    a: torch.Tensor,
    *,
    c: float = 1.0,
    max_radius: float | None = None,
) -> torch.Tensor:
    """Points ``x`` such that ``a ⊕ x`` is a point ``t`` drawn by :func:`points` (same shape as
    ``a``): ``x = (-a) ⊕ t``, computed exactly (mpmath, ``verification.reference``), correctly
    rounded to ``a``'s dtype and projected.

    So every ``a ⊕ x`` is representable (within rounding of ``x``) while ``a``, ``x`` and the
    sum each range over the whole ball, including sums that come back near the origin from two
    far points. Raises ``TypeError``/``ValueError`` if ``a`` is not a float32/float64 tensor with
    at least one dimension.
    """
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"a must be a torch.Tensor, got {type(a).__name__}")
    _check_dtype(a.dtype, "a.dtype")
    if a.dim() < 1:
        raise ValueError("a must have at least one dimension (the last is the ball's)")
    cf = _check_c(c)
    shape = tuple(a.shape[:-1])
    t = draw(points(a.dtype, a.shape[-1], shape, c=cf, max_radius=max_radius))
    a_rows = ref.to_mp(a.detach().reshape(-1, a.shape[-1]))
    t_rows = ref.to_mp(t.reshape(-1, a.shape[-1]))
    x_rows = [
        ref.mobius_add([-v for v in ar], tr, cf) for ar, tr in zip(a_rows, t_rows, strict=True)
    ]
    x = ref.to_tensor(x_rows, a.dtype).reshape(a.shape)
    return poincare.project(x, c=cf)


@st.composite
def nearly_equal_pairs(
    draw: st.DrawFn,
    dtype: torch.dtype,
    dim: int,
    batch_shape: Sequence[int] = (),
    *,
    c: float = 1.0,
    max_radius: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(x, y)`` of points that are equal or nearly equal, both ``(*batch_shape, dim)``.

    Per pair one of: ``y`` identical to ``x``; ``y`` is ``x`` with every component moved by
    ``-4..4`` float steps (then projected); ``y = x ⊕ t`` for a point ``t`` at hyperbolic distance
    ``2**-k / sqrt(c)`` from the origin (``k`` in ``[4, 40]``), computed in float64 and projected in
    ``dtype``.
    """
    _check_dtype(dtype)
    cf = _check_c(c)
    d = _check_dim(dim)
    shape = _check_shape(batch_shape, "batch_shape")
    x = draw(points(dtype, d, shape, c=cf, max_radius=max_radius))
    n = _numel(shape)
    kinds = torch.tensor(
        draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=torch.int64
    ).reshape((*shape, 1))
    gen = torch.Generator().manual_seed(draw(seeds()))
    steps = torch.randint(-4, 5, (*shape, d), generator=gen)
    nudged = poincare.project(_nudge_ulps(x, steps), c=cf)
    ks = draw(st.lists(st.integers(4, 40), min_size=n, max_size=n))
    small_r = torch.tensor(
        [math.ldexp(1.0, -k) / math.sqrt(cf) for k in ks], dtype=torch.float64
    ).reshape(shape)
    t = points_at_radii(small_r, draw(directions(d, shape)), torch.float64, c=cf)
    moved = poincare.project(poincare.mobius_add(x.to(torch.float64), t, c=cf).to(dtype), c=cf)
    y = torch.where(kinds == 0, x, torch.where(kinds == 1, nudged, moved))
    return x, y


@st.composite
def antipodal_pairs(
    draw: st.DrawFn,
    dtype: torch.dtype,
    dim: int,
    batch_shape: Sequence[int] = (),
    *,
    c: float = 1.0,
    max_radius: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(x, y)`` on (nearly) opposite sides of the origin, both ``(*batch_shape, dim)``.

    ``x`` has direction ``u`` and ``y`` direction ``normalise(-u + eps * w)`` for a random unit
    ``w`` and ``eps`` in ``{0} ∪ {2**-k : 1 <= k <= 40}``; each has its own radius from
    :func:`hyperbolic_radii` (so both may sit on the outermost shell, where the geodesic between
    them passes near the origin and its length is close to twice the representable radius).
    """
    _check_dtype(dtype)
    cf = _check_c(c)
    d = _check_dim(dim)
    shape = _check_shape(batch_shape, "batch_shape")
    n = _numel(shape)
    radius = hyperbolic_radii(dtype, c=cf, max_radius=max_radius)
    r1 = torch.tensor(draw(st.lists(radius, min_size=n, max_size=n)), dtype=torch.float64)
    r2 = torch.tensor(draw(st.lists(radius, min_size=n, max_size=n)), dtype=torch.float64)
    u = draw(directions(d, shape))
    w = draw(directions(d, shape))
    ks = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    eps = torch.tensor([0.0 if k == 0 else math.ldexp(1.0, -k) for k in ks], dtype=torch.float64)
    v = -u + eps.reshape((*shape, 1)) * w
    nv = v.norm(dim=-1, keepdim=True)
    v = torch.where(nv > 0, v / nv.clamp_min(1e-300), -u)
    x = points_at_radii(r1.reshape(shape), u, dtype, c=cf)
    y = points_at_radii(r2.reshape(shape), v, dtype, c=cf)
    return x, y


@st.composite
def tangent_vectors(
    draw: st.DrawFn,
    x: torch.Tensor,
    *,
    c: float = 1.0,
    max_length: float | None = None,
) -> torch.Tensor:
    """Tangent vectors ``v`` at the points ``x`` (``(..., D)``) whose exponential is representable.

    The Riemannian length ``λ_x |v|`` is drawn per point from ``{0, 2**-k, uniform}`` in
    ``[0, L]`` with ``L = max(0, max_radius(dtype, c) - dist0(x))`` (and at most ``max_length``),
    so by the triangle inequality ``expmap(x, v)`` lies within the representable radius. Returns
    ``v`` in ``x``'s dtype and shape. Raises ``TypeError``/``ValueError`` if ``x`` is not a float32
    or float64 tensor with at least one dimension, or ``max_length`` is negative.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    _check_dtype(x.dtype, "x.dtype")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (the last is the ball's)")
    cf = _check_c(c)
    if max_length is not None and not max_length >= 0:
        raise ValueError(f"max_length must be >= 0, got {max_length}")
    shape = tuple(x.shape[:-1])
    n = _numel(shape)
    x64 = x.to(torch.float64)
    lam = poincare.conformal_factor(x64, c=cf)
    room = (float(poincare.max_radius(x.dtype, c=cf)) - poincare.dist0(x64, c=cf)).clamp_min(0.0)
    if max_length is not None:
        room = room.clamp_max(float(max_length))
    kinds = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    fracs = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    ks = draw(st.lists(st.integers(4, 60), min_size=n, max_size=n))
    frac = torch.tensor(
        [
            0.0 if kind == 0 else (math.ldexp(1.0, -k) if kind == 1 else f)
            for kind, f, k in zip(kinds, fracs, ks, strict=True)
        ],
        dtype=torch.float64,
    ).reshape(shape)
    length = frac * room
    u = draw(directions(x.shape[-1], shape))
    v = u * (length / lam.squeeze(-1)).unsqueeze(-1)
    return v.to(x.dtype)


@st.composite
def point_and_tangent(
    draw: st.DrawFn,
    dtype: torch.dtype,
    dim: int,
    batch_shape: Sequence[int] = (),
    *,
    c: float = 1.0,
    max_radius: float | None = None,
    max_length: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A point ``x`` from :func:`points` and a tangent vector at it from :func:`tangent_vectors`."""
    x = draw(points(dtype, dim, batch_shape, c=c, max_radius=max_radius))
    v = draw(tangent_vectors(x, c=c, max_length=max_length))
    return x, v


@st.composite
def nearby_points(
    draw: st.DrawFn, x: torch.Tensor, *, c: float = 1.0, max_distance: float
) -> torch.Tensor:
    """Points ``y`` within hyperbolic distance ``max_distance`` of the points ``x`` (``(..., D)``).

    ``y = exp_x(v)`` for ``v`` from :func:`tangent_vectors` (length at most ``max_distance`` and
    within the representable radius), evaluated exactly (mpmath, ``verification.reference``),
    correctly rounded to ``x``'s dtype and projected. Raises like :func:`tangent_vectors`.
    """
    cf = _check_c(c)
    v = draw(tangent_vectors(x, c=cf, max_length=max_distance))
    xs = ref.to_mp(x.detach().reshape(-1, x.shape[-1]))
    vs = ref.to_mp(v.reshape(-1, x.shape[-1]))
    ys = [ref.expmap(a, b, cf) for a, b in zip(xs, vs, strict=True)]
    return poincare.project(ref.to_tensor(ys, x.dtype).reshape(x.shape), c=cf)


@st.composite
def weights(
    draw: st.DrawFn,
    shape: Sequence[int],
    dtype: torch.dtype,
    *,
    max_log10_ratio: float | None = None,
) -> torch.Tensor:
    """Nonnegative weights of shape ``shape`` (the last dimension indexes the weighted points).

    Each row is one of: all ones; a one-hot row; or entries that are independently zero, uniform
    in ``[10**(-max_log10_ratio / 2), 1]`` (so representable in ``dtype``), or ``10**e`` with
    ``|e| <= max_log10_ratio / 2`` (``max_log10_ratio`` defaults to 12 for float32 and 24 for
    float64, so two weights can differ by a factor up to ``10**max_log10_ratio``). A row is
    never all zero: if every entry came out zero, one drawn entry is set to 1. Raises
    ``ValueError`` on an empty last dimension.
    """
    _check_dtype(dtype)
    shp = _check_shape(shape, "shape")
    if len(shp) == 0 or shp[-1] < 1:
        raise ValueError(f"shape must end with at least one weighted point, got {shape!r}")
    span = (
        (12.0 if dtype == torch.float32 else 24.0) if max_log10_ratio is None else max_log10_ratio
    )
    if not (math.isfinite(span) and span >= 0):
        raise ValueError(f"max_log10_ratio must be a finite nonnegative float, got {span}")
    n = shp[-1]
    rows: list[list[float]] = []
    for _ in range(_numel(shp[:-1])):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            row = [1.0] * n
        elif kind == 1:
            row = [0.0] * n
            row[draw(st.integers(0, n - 1))] = 1.0
        else:
            entry = st.one_of(
                st.just(0.0),
                st.floats(min_value=10.0 ** (-span / 2), max_value=1.0),
                st.floats(min_value=-span / 2, max_value=span / 2).map(lambda e: 10.0**e),
            )
            row = draw(st.lists(entry, min_size=n, max_size=n))
            if not any(w > 0 for w in row):
                row[draw(st.integers(0, n - 1))] = 1.0
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).reshape(shp).to(dtype)


@st.composite
def matrices(
    draw: st.DrawFn,
    out_dim: int,
    in_dim: int,
    dtype: torch.dtype,
    *,
    kinds: Sequence[str] = ("generic", "zero_rows", "rank_deficient", "orthogonal", "zero"),
) -> torch.Tensor:
    """Matrices of shape ``(out_dim, in_dim)`` (``F.linear``'s weight layout) in ``dtype``.

    One of the requested ``kinds``: ``generic`` (Gaussian entries scaled by
    ``s / sqrt(in_dim)``, ``s`` in ``[1/4, 4]``); ``zero_rows`` (generic with some rows zeroed, at
    least one and, when ``out_dim > 1``, not all); ``rank_deficient`` (a product ``A B`` of inner
    rank ``min(out_dim, in_dim) - 1``, which is the zero matrix for a row or column);
    ``orthogonal`` (orthonormal columns if ``out_dim >= in_dim``, else orthonormal rows, from a QR
    decomposition in float64); ``zero``. Raises ``ValueError`` on an unknown kind or bad sizes.
    """
    o = _check_dim(out_dim, "out_dim")
    i = _check_dim(in_dim, "in_dim")
    _check_dtype(dtype)
    allowed = ("generic", "zero_rows", "rank_deficient", "orthogonal", "zero")
    kind_list = list(kinds)
    if not kind_list:
        raise ValueError("kinds must not be empty")
    for k in kind_list:
        if k not in allowed:
            raise ValueError(f"unknown matrix kind {k!r}; expected one of {allowed}")
    kind = draw(st.sampled_from(kind_list))
    gen = torch.Generator().manual_seed(draw(seeds()))
    scale = draw(st.floats(min_value=0.25, max_value=4.0))
    g = torch.randn((o, i), generator=gen, dtype=torch.float64) * (scale / math.sqrt(i))
    if kind == "generic":
        m = g
    elif kind == "zero_rows":
        mask = torch.rand((o, 1), generator=gen) < 0.5
        first = draw(st.integers(0, o - 1))
        mask[first] = True
        if o > 1 and bool(mask.all()):
            mask[(first + 1) % o] = False
        m = torch.where(mask, torch.zeros_like(g), g)
    elif kind == "rank_deficient":
        r = min(o, i) - 1
        a = torch.randn((o, max(r, 1)), generator=gen, dtype=torch.float64)
        b = torch.randn((max(r, 1), i), generator=gen, dtype=torch.float64)
        m = (a @ b) * (scale / math.sqrt(i * max(r, 1))) if r >= 1 else torch.zeros_like(g)
    elif kind == "orthogonal":
        if o >= i:
            q, _ = torch.linalg.qr(torch.randn((o, i), generator=gen, dtype=torch.float64))
            m = q
        else:
            q, _ = torch.linalg.qr(torch.randn((i, o), generator=gen, dtype=torch.float64))
            m = q.T
    else:
        m = torch.zeros_like(g)
    return m.contiguous().to(dtype)


def scalars(
    max_abs: float = 3.0, *, allow_zero: bool = True, integers: bool = False
) -> st.SearchStrategy[float]:
    """Real scalars ``r`` for ``mobius_scalar_mul``: ``0``, ``±1``, small integers, tiny values,
    and floats uniform in ``[-max_abs, max_abs]``.

    With ``integers`` only the integers ``1..floor(max_abs)`` (and 0 if ``allow_zero``) are drawn.
    Raises ``ValueError`` if ``max_abs`` is not a finite float >= 1.
    """
    if not (math.isfinite(max_abs) and max_abs >= 1.0):
        raise ValueError(f"max_abs must be a finite float >= 1, got {max_abs}")
    top = math.floor(max_abs)
    if integers:
        return st.integers(0 if allow_zero else 1, top).map(float)
    parts: list[st.SearchStrategy[float]] = [
        st.sampled_from([1.0, -1.0]),
        st.tuples(st.integers(1, top), st.booleans()).map(lambda t: float(-t[0] if t[1] else t[0])),
        st.integers(4, 40).map(lambda k: math.ldexp(1.0, -k)),
        st.floats(min_value=-max_abs, max_value=max_abs, allow_nan=False).map(
            lambda r: r if (allow_zero or r != 0.0) else 1.0
        ),
    ]
    if allow_zero:
        parts.insert(0, st.just(0.0))
    return st.one_of(*parts)
