"""Every public op and module on extreme inputs: the documented result or a clear error.

A matrix over the public API of :mod:`poincare` and :mod:`poincare.nn`: each argument of each op
scaled, one at a time, by magnitudes from ``1e-30`` to ``1e30`` (and, in float64, beyond the
range where squares overflow), in float32 and float64; per-row curvature tensors; curvature
tensors, scalars and numbers that do not fit. The outcome asserted is the documented one:

* finite values and finite gradients for every input;
* point-valued results strictly inside the ball (Lorentz results on the upper sheet);
* huge tangent vectors (and scalars, matrices, times) landing on the outermost shell, in the
  direction of the input where that direction is the result's;
* points on or outside the ball treated as :func:`poincare.project` of them, where an op
  documents it (the result of ``op(x)`` and of ``op(project(x))`` agree to within the
  ambiguity of a point on the outermost shell: its gap, a few float steps, is known to a
  factor of a few (``project`` itself may retry a few half-steps further in), which moves a
  distance by ``ln`` of that factor over ``sqrt(c)``: at most ``2 / sqrt(c)``);
* per-row curvature tensors giving, row by row, the result of the same row with that curvature
  as a number;
* a ``ValueError``/``TypeError`` whose message names the argument for everything else.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import Tensor

import poincare
import poincare.nn as pnn

F32, F64 = torch.float32, torch.float64
C = 0.5  # a curvature other than 1, so that every factor of c is exercised
B, N, D = 4, 3, 3

Inputs = dict[str, Tensor]


def _base() -> dict[str, Tensor]:
    """Float64 inputs of every kind, at moderate sizes (points within 3 curvature radii)."""
    g = torch.Generator().manual_seed(7)

    def pts(*shape: int) -> Tensor:
        return poincare.expmap0(torch.randn(*shape, generator=g, dtype=F64) * 0.7, c=C)

    return {
        "point": pts(B, D),
        "point2": pts(B, D),
        "point3": pts(B, D),
        "points": pts(B, N, D),
        "points2": pts(B, 2, D),
        "vector": torch.randn(B, D, generator=g, dtype=F64),
        "vector2": torch.randn(B, D, generator=g, dtype=F64),
        "matrix": torch.randn(2, D, generator=g, dtype=F64),
        "weights": torch.rand(B, N, generator=g, dtype=F64) + 0.1,
        "scalar": torch.rand(B, 1, generator=g, dtype=F64) + 0.2,
        "lorentz": poincare.poincare_to_lorentz(pts(B, D), c=C),
    }


BASE = _base()
DIRECTION = Callable[[Inputs], Tensor]


@dataclass(frozen=True)
class Op:
    """A public op in the matrix.

    ``fn`` is called with the inputs in the order of ``args`` and the curvature as ``c``;
    ``args`` maps each argument to the entry of :data:`BASE` it starts from; ``out`` is the kind
    of result (``"point"``, ``"value"``, ``"vector"``, ``"lorentz"`` or ``"density"``, a
    log-density); ``shell`` maps the arguments whose huge values put the result on the
    outermost shell to the direction it then has (None: any direction); ``projected`` lists the
    point arguments documented to be treated as ``project`` of them; ``random`` ops draw their
    result (only its finiteness and shape can be compared row by row).
    """

    fn: Callable[..., Tensor]
    args: dict[str, str]
    out: str
    shell: dict[str, DIRECTION | None] = field(default_factory=dict)
    projected: tuple[str, ...] = ()
    random: bool = False

    def call(self, inputs: Inputs, c: object) -> Tensor:
        return self.fn(*(inputs[name] for name in self.args), c=c)


def _arg(name: str) -> DIRECTION:
    return lambda a: a[name]


def _wn(loc: Tensor, scale: Tensor, c: object) -> poincare.WrappedNormal:
    # without validation: points outside the ball are then evaluated (documented), not refused
    return poincare.WrappedNormal(loc, scale, c=c, validate_args=False)  # type: ignore[arg-type]


def _wn_log_prob(loc: Tensor, scale: Tensor, value: Tensor, *, c: object) -> Tensor:
    return _wn(loc, scale, c).log_prob(value)


def _wn_rsample(loc: Tensor, scale: Tensor, *, c: object) -> Tensor:
    torch.manual_seed(0)
    return _wn(loc, scale, c).rsample((2,))


def _fn_apply(x: Tensor, s: Tensor, *, c: object) -> Tensor:
    return poincare.mobius_fn_apply(lambda u, k: u * k, x, s, c=c)  # type: ignore[arg-type]


P = poincare
XY = {"x": "point", "y": "point2"}
OPS: dict[str, Op] = {
    "project": Op(P.project, {"x": "point"}, "point", projected=("x",)),
    "conformal_factor": Op(P.conformal_factor, {"x": "point"}, "value"),
    "mobius_add": Op(P.mobius_add, XY, "point"),
    "mobius_sub": Op(P.mobius_sub, XY, "point"),
    "mobius_scalar_mul": Op(
        P.mobius_scalar_mul, {"r": "scalar", "x": "point"}, "point", shell={"r": _arg("x")}
    ),
    "mobius_matvec": Op(
        P.mobius_matvec,
        {"m": "matrix", "x": "point"},
        "point",
        shell={"m": lambda a: a["x"] @ a["m"].mT},
    ),
    "mobius_fn_apply": Op(
        _fn_apply, {"x": "point", "s": "scalar"}, "point", shell={"s": _arg("x")}
    ),
    "expmap0": Op(P.expmap0, {"v": "vector"}, "point", shell={"v": _arg("v")}),
    "logmap0": Op(P.logmap0, {"y": "point"}, "vector", projected=("y",)),
    "expmap": Op(P.expmap, {"x": "point", "v": "vector"}, "point", shell={"v": None}),
    "logmap": Op(P.logmap, XY, "vector"),
    "dist": Op(P.dist, XY, "value"),
    "dist0": Op(P.dist0, {"x": "point"}, "value"),
    "pairwise_dist": Op(P.pairwise_dist, {"x": "points", "y": "points2"}, "value"),
    "gyration": Op(P.gyration, {"a": "point", "b": "point2", "u": "vector"}, "vector"),
    "transp": Op(P.transp, {"x": "point", "y": "point2", "v": "vector"}, "vector"),
    "transp0": Op(P.transp0, {"y": "point", "v": "vector"}, "vector"),
    "egrad2rgrad": Op(P.egrad2rgrad, {"x": "point", "g": "vector"}, "vector"),
    "einstein_midpoint": Op(P.einstein_midpoint, {"x": "points", "w": "weights"}, "point"),
    "frechet_mean": Op(P.frechet_mean, {"x": "points", "w": "weights"}, "point", projected=("x",)),
    "poincare_to_klein": Op(P.poincare_to_klein, {"x": "point"}, "point", projected=("x",)),
    "klein_to_poincare": Op(P.klein_to_poincare, {"k": "point"}, "point", projected=("k",)),
    "poincare_to_lorentz": Op(P.poincare_to_lorentz, {"x": "point"}, "lorentz", projected=("x",)),
    "lorentz_to_poincare": Op(P.lorentz_to_poincare, {"h": "lorentz"}, "point"),
    "expmap0_add": Op(
        P.expmap0_add, {"u": "vector", "b": "vector2"}, "point", shell={"u": _arg("u")}
    ),
    "expmap0_add_lorentz": Op(P.expmap0_add_lorentz, {"u": "vector", "b": "vector2"}, "lorentz"),
    "expmap0_add_lorentz(u)": Op(
        P.expmap0_add_lorentz, {"u": "vector"}, "lorentz", shell={"u": _arg("u")}
    ),
    "dist2plane": Op(
        P.dist2plane, {"x": "point", "p": "point2", "a": "vector"}, "value", projected=("x", "p")
    ),
    "geodesic": Op(
        P.geodesic,
        {"t": "scalar", "x": "point", "y": "point2"},
        "point",
        shell={"t": None},
        projected=("x", "y"),
    ),
    "geodesic_unit": Op(
        P.geodesic_unit, {"t": "scalar", "x": "point", "v": "vector"}, "point", shell={"t": None}
    ),
    "WrappedNormal.log_prob": Op(
        _wn_log_prob,
        {"loc": "point", "scale": "scalar", "value": "point2"},
        "density",
        projected=("value",),
    ),
    "WrappedNormal.rsample": Op(
        _wn_rsample,
        {"loc": "point", "scale": "scalar"},
        "point",
        shell={"scale": None},
        random=True,
    ),
}


#: Per dtype: tiny, just outside the ball (for points), beyond the range of squares (1e20 in
#: float32), and huge; float64 also beyond its own range of squares (1.3e154).
MAGNITUDES = {
    F32: (1e-30, 1e10, 1e20, 1e30),
    F64: (1e-30, 1e10, 1e30, 1e160),
}
HUGE = 1e10  # from here on a scaled point lies outside the ball, a scaled tangent saturates
SHELL_AMBIGUITY = 2.0  # in units of the curvature radius: see the module docstring

#: Every magnitude on the eager path; the largest also on the branch-free path (the form of
#: compiled code, transforms and accelerators), where every row takes the rescaled forms.
CASES = [
    pytest.param(name, arg, dtype, mag, path, id=f"{name}-{arg}-{str(dtype)[6:]}-{mag:g}-{path}")
    for name, op in OPS.items()
    for arg in op.args
    for dtype in (F32, F64)
    for mag in MAGNITUDES[dtype]
    for path in (("eager", "branch-free") if mag == MAGNITUDES[dtype][-1] else ("eager",))
]


def _inputs(op: Op, dtype: torch.dtype, scaled: str | None = None, mag: float = 1.0) -> Inputs:
    out = {}
    for name, kind in op.args.items():
        t = BASE[kind] * (mag if name == scaled else 1.0)
        out[name] = t.to(dtype).requires_grad_(True)
    return out


def _assert_lorentz(h: Tensor, c: float) -> Tensor:
    """Assert ``h`` lies on (or rounds to) the upper sheet; return its point in the ball."""
    assert bool((h[..., 0] > 0).all()), f"time coordinates {h[..., 0]}"
    hd = h.detach().double()
    assert bool((hd[..., 0] ** 2 >= (hd[..., 1:] ** 2).sum(-1)).all()), "a space-like point"
    return poincare.lorentz_to_poincare(h.detach(), c=c)


def _as_point(out: Tensor, kind: str, c: float) -> Tensor:
    return _assert_lorentz(out, c) if kind == "lorentz" else out.detach()


def _assert_finite_with_gradients(out: Tensor, inputs: Inputs, what: str) -> None:
    assert bool(torch.isfinite(out).all()), f"{what}: non-finite result {out}"
    weights = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), list(inputs.values()), allow_unused=True)
    for name, grad in zip(inputs, grads, strict=True):
        assert grad is None or bool(torch.isfinite(grad).all()), f"{what}: gradient of {name}"


def _assert_on_shell(p: Tensor, direction: Tensor | None, dtype: torch.dtype, what: str) -> None:
    """Within 32 float steps of the boundary (the outermost shell, up to the rounding of a
    boundary point's coordinates and of the formula that leads there)."""
    gap = 1 - math.sqrt(C) * p.to(F64).norm(dim=-1)
    eps = torch.finfo(dtype).eps
    assert bool((gap <= 32 * eps).all()), f"{what}: 1 - sqrt(c)|p| = {gap}"
    if direction is not None:
        d = direction.detach().to(F64).expand_as(p)
        d = d / d.abs().amax(dim=-1, keepdim=True)  # (its squares may overflow)
        cos = (p.to(F64) * d).sum(-1) / (p.to(F64).norm(dim=-1) * d.norm(dim=-1))
        assert bool((cos > 1 - 1e-6).all()), f"{what}: not in the direction of the input: {cos}"


def _assert_same_as_projected(
    op: Op, got: Tensor, inputs: Inputs, arg: str, dtype: torch.dtype, what: str
) -> None:
    """``op`` with ``arg`` replaced by ``project(arg)`` gives the same result, to within the
    ambiguity of a point on the outermost shell (see the module docstring)."""
    moved = dict(inputs)
    moved[arg] = poincare.project(inputs[arg].detach(), c=C)
    want = op.call(moved, C).detach().to(F64)
    have = got.detach().to(F64)
    tol = SHELL_AMBIGUITY / math.sqrt(C)  # a length
    if op.out == "density":
        # dominated by -r^2/(2 sigma^2): a length dr moves it by about 2 dr/r relatively, at
        # most half of it at the radii of the outermost shells
        ratio = ((have - want).abs() / want.abs()).max() / 0.5
    elif op.out == "value":
        ratio = (have - want).abs().max() / tol
    elif op.out == "vector":
        ratio = (have - want).norm(dim=-1).max() / tol
    else:
        ratio = poincare.dist(_as_point(have, op.out, C), _as_point(want, op.out, C), c=C).max()
        ratio = ratio / tol
    assert float(ratio) <= 1, f"{what}: differs from the result for project({arg}) by {ratio}x"


#: Results beyond the dtype's range, documented as such: the log-density of a point a few
#: units from the mean under a scale of 3e-31 is about -1e60, below float32's range: -inf.
OVERFLOWS = {("WrappedNormal.log_prob", "scale", F32, 1e-30): -math.inf}


@pytest.mark.parametrize(("name", "arg", "dtype", "mag", "path"), CASES)
def test_every_magnitude_gives_the_documented_result(
    name: str, arg: str, dtype: torch.dtype, mag: float, path: str
) -> None:
    op = OPS[name]
    inputs = _inputs(op, dtype, arg, mag)
    what = f"{name}({arg} * {mag:g}, {dtype}, {path})"
    with poincare.branch_free() if path == "branch-free" else contextlib.nullcontext():
        out = op.call(inputs, C)
        assert out.dtype == dtype, f"{what}: dtype {out.dtype}"
        if (name, arg, dtype, mag) in OVERFLOWS:
            assert bool((out == OVERFLOWS[name, arg, dtype, mag]).all()), f"{what}: {out}"
            return
        _assert_finite_with_gradients(out, inputs, what)
    if op.out in ("point", "lorentz"):
        p = _as_point(out, op.out, C)
        poincare.check_point(p, c=C)
    huge = mag >= HUGE
    if huge and arg in op.shell:
        direction = op.shell[arg]
        _assert_on_shell(
            _as_point(out, op.out, C),
            None if direction is None else direction(inputs),
            dtype,
            what,
        )
    if huge and arg in op.projected:
        _assert_same_as_projected(op, out, inputs, arg, dtype, what)


# ---------------------------------------------------------------------------------------------
# Per-row curvature tensors
# ---------------------------------------------------------------------------------------------

ROW_C = (0.02, 0.5, 3.0, 90.0)


def _rows_of(op: Op, inputs: Inputs, i: int) -> Inputs:
    """Row ``i`` of every batched input (the matrix is shared)."""
    return {n: (t if op.args[n] == "matrix" else t[i : i + 1]) for n, t in inputs.items()}


def _curvature_shape(op: Op) -> tuple[int, ...]:
    """The shape of a per-row curvature: ``(B, 1)`` against the rows of the result, which for
    the ops on sets of points (``(B, N, D)``) is ``(B, 1, 1)`` for pairwise distances."""
    return (B, 1, 1) if op.args.get("x") == "points" and op.out == "value" else (B, 1)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", list(OPS))
def test_per_row_curvature_is_the_curvature_of_each_row(name: str, dtype: torch.dtype) -> None:
    op = OPS[name]
    shape = _curvature_shape(op)
    cs = torch.tensor(ROW_C, dtype=F64).reshape(shape)
    inputs = {}
    for arg, kind in op.args.items():
        t = BASE[kind]
        if kind.startswith("point"):
            # the same hyperbolic configuration in every row, whatever its curvature
            t = t * (C / cs.reshape((B,) + (1,) * (t.dim() - 1))).sqrt()
        inputs[arg] = t.to(dtype).requires_grad_(True)
    c = cs.to(dtype)
    out = op.call(inputs, c)
    _assert_finite_with_gradients(out, inputs, f"{name} with c of shape {shape}")
    tol = {F32: 1e-4, F64: 1e-9}[dtype]
    for i, ci in enumerate(ROW_C):
        row = op.call(_rows_of(op, inputs, i), ci)
        if op.random:
            assert row.shape[1:] == (1, D) and out.shape[1:] == (B, D)
            continue
        torch.testing.assert_close(
            out[i : i + 1].detach(),
            row.detach(),
            rtol=tol,
            atol=tol,
            msg=f"{name}, row {i} (c = {ci})",
        )


@pytest.mark.parametrize("name", list(OPS))
def test_curvature_of_another_batch_shape_names_c(name: str) -> None:
    op = OPS[name]
    inputs = _inputs(op, F32)
    shape = (5, *_curvature_shape(op)[1:])
    with pytest.raises(ValueError, match=r"\bc\b.*\(5, 1"):
        op.call(inputs, torch.full(shape, 0.5))


# ---------------------------------------------------------------------------------------------
# Numbers: numpy scalars, huge integers, NaN, bool
# ---------------------------------------------------------------------------------------------

X32 = BASE["point"].float()
Y32 = BASE["point2"].float()


@pytest.mark.parametrize("value", [np.float32(0.5), np.float16(0.5), np.float64(0.5), np.int64(2)])
def test_numpy_real_scalars_are_numbers(value: object) -> None:
    want_c = float(value)  # type: ignore[arg-type]
    x, y = X32 * 0.5, Y32 * 0.5
    torch.testing.assert_close(poincare.dist(x, y, c=value), poincare.dist(x, y, c=want_c))  # type: ignore[arg-type]
    torch.testing.assert_close(
        poincare.mobius_scalar_mul(value, x),  # type: ignore[arg-type]
        poincare.mobius_scalar_mul(want_c, x),
    )
    torch.testing.assert_close(
        poincare.geodesic(value, x, y),  # type: ignore[arg-type]
        poincare.geodesic(want_c, x, y),
    )
    layer = pnn.HyperbolicLinear(D, 2, c=value)  # type: ignore[arg-type]
    assert float(layer.c) == pytest.approx(want_c)
    q = poincare.WrappedNormal(x, value, c=value)  # type: ignore[arg-type]
    assert bool(torch.isfinite(q.log_prob(y)).all())


@pytest.mark.parametrize("value", [True, np.bool_(True)])
def test_booleans_are_not_numbers(value: object) -> None:
    with pytest.raises(TypeError, match=r"\bc\b"):
        poincare.dist(X32, Y32, c=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\br\b"):
        poincare.mobius_scalar_mul(value, X32)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\bt\b"):
        poincare.geodesic(value, X32, Y32)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\bscale\b"):
        poincare.WrappedNormal(X32, value)  # type: ignore[arg-type]


@pytest.mark.parametrize("sign", [1, -1])
def test_integers_beyond_the_float_range_saturate(sign: int) -> None:
    """A Python integer beyond the float range is a finite time or factor: its point lies on
    the outermost shell (a curvature that large is refused: it is outside every dtype's range)."""
    huge = sign * 10**400
    for dtype in (F32, F64):
        x, y, v = X32.to(dtype), Y32.to(dtype), BASE["vector"].to(dtype)
        for out in (
            poincare.geodesic(huge, x, y, c=C),
            poincare.geodesic_unit(huge, x, v, c=C),
            poincare.mobius_scalar_mul(huge, x, c=C),
        ):
            _assert_on_shell(out, None, dtype, f"{dtype} saturating integer")
    with pytest.raises(ValueError, match=r"\bc\b.*too large"):
        poincare.dist(X32, Y32, c=10**400)


NAN = float("nan")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda t: poincare.geodesic(t, X32, Y32), "t"),
        (lambda t: poincare.geodesic_unit(t, X32, Y32), "t"),
        (lambda t: poincare.mobius_scalar_mul(t, X32), "r"),
        (lambda t: poincare.dist(X32, Y32, c=t), "c"),
    ],
    ids=["geodesic", "geodesic_unit", "mobius_scalar_mul", "dist-c"],
)
@pytest.mark.parametrize(
    "value",
    [NAN, math.inf, torch.tensor(NAN), torch.full((B, 1), NAN), torch.tensor(-math.inf)],
    ids=["nan", "inf", "tensor-nan", "rows-nan", "tensor-inf"],
)
def test_non_finite_numbers_name_the_argument(
    call: Callable[[object], Tensor], name: str, value: object
) -> None:
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call(value)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


def _modules() -> dict[str, Callable[[Tensor], Tensor]]:
    torch.manual_seed(0)
    d = 4
    attn = pnn.HyperbolicMultiHeadAttention(d, 2, c=C)
    block = pnn.HyperbolicTransformerBlock(d, 2, 8, c=C)
    stack = pnn.HyperbolicTransformer(d, 2, 1, 8, c=C)

    def attend(x: Tensor) -> Tensor:
        out: Tensor = attn(x, x, x)[0]
        return out

    return {
        "HyperbolicLinear": pnn.HyperbolicLinear(d, 3, c=C),
        "HyperbolicActivation": pnn.HyperbolicActivation(torch.tanh, c=C),
        "HyperbolicLayerNorm": pnn.HyperbolicLayerNorm(d, c=C),
        "HyperbolicFeedForward": pnn.HyperbolicFeedForward(d, 8, c=C),
        "HyperbolicPositionalEncoding": pnn.HyperbolicPositionalEncoding(d, 8, c=C),
        "HyperbolicMLR": pnn.HyperbolicMLR(d, 3, c=C),
        "HyperbolicMultiHeadAttention": attend,
        "HyperbolicTransformerBlock": block,
        "HyperbolicTransformer": stack,
    }


MODULES = _modules()
MODULE_POINTS = poincare.expmap0(
    torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3), dtype=F64), c=C
)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("mag", [1e-30, 1e10, 1e30])
@pytest.mark.parametrize("name", list(MODULES))
def test_modules_on_every_magnitude(name: str, mag: float, dtype: torch.dtype) -> None:
    """Points scaled from near the origin to far outside the ball (a caller's error): finite
    outputs and gradients; point-valued outputs strictly inside the ball."""
    module = MODULES[name]
    x = (MODULE_POINTS * mag).to(dtype).requires_grad_(True)
    out = module(x)
    what = f"{name}(x * {mag:g}, {dtype})"
    assert out.dtype == dtype
    _assert_finite_with_gradients(out, {"x": x}, what)
    if name != "HyperbolicMLR":
        poincare.check_point(out.detach(), c=C)


@pytest.mark.parametrize("mag", [1e-30, 1.0, 1e30])
def test_conv_transformer_on_every_magnitude(mag: float) -> None:
    torch.manual_seed(0)
    conv = pnn.ConvHyperbolicTransformer(3, 4, 2, 1, c=C)
    x = (torch.randn(1, 2, 3, 2, 2) * mag).requires_grad_(True)
    out, context = conv(x)
    _assert_finite_with_gradients(out, {"x": x}, f"ConvHyperbolicTransformer(x * {mag:g})")
    poincare.check_point(out.movedim(2, -1).detach(), c=C)
    assert torch.equal(context, out[:, -1])


def test_conv_transformer_without_time_steps_names_x() -> None:
    conv = pnn.ConvHyperbolicTransformer(3, 4, 2, 1)
    with pytest.raises(ValueError, match=r"\bx\b.*time step"):
        conv(torch.zeros(1, 0, 3, 2, 2))


# ---------------------------------------------------------------------------------------------
# Single cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64])
def test_wrapped_normal_of_a_tiny_scale_at_its_mean(dtype: torch.dtype) -> None:
    """The density at the mean is ``(2 pi)^(-D/2) / sigma^D``: finite for any positive scale
    (its square underflows float32 at 1e-23)."""
    loc = BASE["point"][:1]
    for scale in (1e-23, 1e-30):
        got = poincare.WrappedNormal(loc.to(dtype), scale, c=C).log_prob(loc.to(dtype))
        want = -D * math.log(scale) - D / 2 * math.log(2 * math.pi)
        torch.testing.assert_close(got.double(), torch.tensor([want], dtype=F64))


def test_vmap_of_pairwise_dist_has_every_batching_rule() -> None:
    x, y = BASE["points"].float(), BASE["points2"].float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.func.vmap(poincare.pairwise_dist)(x, y)
    torch.testing.assert_close(got, poincare.pairwise_dist(x, y))
