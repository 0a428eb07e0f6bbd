"""PyTorch's program transforms run every op and module: ``torch.compile(fullgraph=True)``
(forward and backward), ``torch.func.vmap``/``grad`` and ``torch.export``, with the results of
eager code.

The cheap backends (``eager``, ``aot_eager``) trace with Dynamo and AOTAutograd exactly as
inductor does, without its code generation, which keeps this file within the test budget; one
test compiles a module with inductor.
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import pytest
import torch
from torch import Tensor

import poincare
import poincare.nn as hnn
from verification import metrics
from verification import reference as ref

HULP_BOUND = 16.0

B, D = 3, 4


def _points(*shape: int, scale: float = 0.3, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    return poincare.expmap0(v).to(torch.float32)


def _tangent(*shape: int, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(torch.float32)


def _far(*shape: int, seed: int = 2) -> Tensor:
    """Points out to the outermost float32 shell (the precision fallbacks' territory)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=g, dtype=torch.float64)
    radius = torch.rand(*shape[:-1], 1, generator=g, dtype=torch.float64) * 10
    return poincare.expmap0(v / torch.linalg.vector_norm(v, dim=-1, keepdim=True) * radius).to(
        torch.float32
    )


def _inputs() -> dict[str, tuple[Callable[..., Tensor], tuple[Tensor, ...]]]:
    x, y, v = _far(B, D), _points(B, D, seed=3), _tangent(B, D)
    m = _tangent(5, D, seed=4)
    w = torch.rand(B, 6, generator=torch.Generator().manual_seed(5))
    xs = _far(B, 6, D, seed=6)
    h = poincare.poincare_to_lorentz(y)
    return {
        "project": (lambda a: poincare.project(a * 3), (x,)),
        "conformal_factor": (poincare.conformal_factor, (x,)),
        "mobius_add": (poincare.mobius_add, (x, y)),
        "mobius_sub": (poincare.mobius_sub, (x, y)),
        "mobius_scalar_mul": (lambda a: poincare.mobius_scalar_mul(1.7, a), (x,)),
        "mobius_scalar_mul_tensor": (
            lambda r, a: poincare.mobius_scalar_mul(r, a),
            (w[:, :1], x),
        ),
        "mobius_matvec": (poincare.mobius_matvec, (m, x)),
        "expmap0": (poincare.expmap0, (v,)),
        "logmap0": (poincare.logmap0, (x,)),
        "expmap": (poincare.expmap, (x, v)),
        "logmap": (poincare.logmap, (x, y)),
        "dist": (poincare.dist, (x, y)),
        "dist0": (poincare.dist0, (x,)),
        "pairwise_dist": (poincare.pairwise_dist, (xs, xs)),
        "gyration": (poincare.gyration, (x, y, v)),
        "transp": (poincare.transp, (x, y, v)),
        "transp0": (poincare.transp0, (y, v)),
        "egrad2rgrad": (poincare.egrad2rgrad, (x, v)),
        "einstein_midpoint": (poincare.einstein_midpoint, (xs, w)),
        "poincare_to_klein": (poincare.poincare_to_klein, (x,)),
        "klein_to_poincare": (poincare.klein_to_poincare, (y,)),
        "poincare_to_lorentz": (poincare.poincare_to_lorentz, (x,)),
        "lorentz_to_poincare": (poincare.lorentz_to_poincare, (h,)),
        "expmap0_add": (poincare.expmap0_add, (v, v * 0.5)),
        "expmap0_add_lorentz": (poincare.expmap0_add_lorentz, (v, v * 0.5)),
        "tensor_c": (
            lambda a, b, c: (
                poincare.dist(a, b, c=c) + poincare.dist0(poincare.mobius_add(a, b, c=c), c=c)
            ),
            # the points of the unit ball scaled into the ball of c = 1.5 (unscaled, x would
            # lie outside it, and every sum on its outermost shell)
            (x * 1.5**-0.5, y * 1.5**-0.5, torch.tensor(1.5)),
        ),
        "upcast": (poincare.upcast(torch.float64)(poincare.logmap), (x, y)),
        "dist2plane": (poincare.dist2plane, (x, y, v)),
        "geodesic": (lambda a, b: poincare.geodesic(0.3, a, b), (x, y)),
        "geodesic_unit": (lambda a, b: poincare.geodesic_unit(2.0, a, b), (x, v)),
        "mobius_fn_apply": (lambda a: poincare.mobius_fn_apply(torch.tanh, a), (x,)),
        "frechet_mean": (poincare.frechet_mean, (xs, w)),
        "wrapped_normal_log_prob": (
            lambda a, b: poincare.WrappedNormal(b, 0.7).log_prob(a),
            (x, y),
        ),
    }


INPUTS = _inputs()


def _leaves(args: tuple[Tensor, ...]) -> list[Tensor]:
    return [a.detach().clone().requires_grad_(True) for a in args]


def _forward_backward(fn: Callable[..., Tensor], args: tuple[Tensor, ...]) -> list[Tensor]:
    leaves = _leaves(args)
    out = fn(*leaves)
    weight = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape).to(out.dtype)
    grads = torch.autograd.grad((out * weight).sum(), leaves, allow_unused=True)
    return [
        out.detach(),
        *[torch.zeros_like(a) if g is None else g for g, a in zip(grads, leaves, strict=True)],
    ]


def _assert_close(got: list[Tensor], want: list[Tensor], name: str) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{name}[{i}]: {g.shape} vs {w.shape}"
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=f"{name}: output {i}")


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_compile_fullgraph_op(name: str) -> None:
    """One graph, forward and backward (AOTAutograd traces the backward too), with exactly the
    results of the branch-free form that eager code takes under ``poincare.branch_free`` (and
    within rounding of eager code's shortcuts, both being under the contract)."""
    torch._dynamo.reset()
    fn, args = INPUTS[name]
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = _forward_backward(compiled, args)
    with poincare.branch_free():
        free = _forward_backward(fn, args)
    for i, (g, w) in enumerate(zip(got, free, strict=True)):
        assert torch.equal(g, w), f"{name}: output {i} differs from the branch-free eager form"
    _assert_close(got, _forward_backward(fn, args), name)


def _outermost(n: int, d: int, dtype: torch.dtype, c: float, seed: int) -> Tensor:
    """``n`` points of the outermost representable shell at curvature ``c``, and as many at
    radius 10 / sqrt(c) (alternating), in random directions."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    shell = poincare.project((u * 2 / c**0.5).to(dtype), c=c)
    inner = poincare.expmap0(u * 5 / c**0.5, c=c).to(dtype)
    return torch.where(torch.arange(n).unsqueeze(-1) % 2 == 0, shell, inner)


@pytest.mark.parametrize("c", [1.0, 0.1])
def test_inductor_ops_meet_the_contract_on_the_outermost_shell(c: float) -> None:
    """Inductor's generated kernels round differently from eager kernels (fused, reordered
    sums), so compiled and eager results are not always bit for bit the same: on the outermost
    float32 shell a norm one ulp apart moves a distance by ln 2 / sqrt(c). Both are within the
    contract: each output of the compiled ops is within 16 hULP of mpmath, and so the two
    differ by at most the sum of their budgets."""
    torch._dynamo.reset()
    x = _outermost(6, 4, torch.float32, c, seed=11)
    y = _outermost(6, 4, torch.float32, c, seed=12).flip(0)

    def ops(a: Tensor, b: Tensor) -> tuple[Tensor, ...]:
        return (
            poincare.dist(a, b, c=c),
            poincare.dist0(a, c=c),
            poincare.mobius_add(a, b, c=c),
            poincare.logmap0(a, c=c),
        )

    eager = ops(x, y)
    compiled = torch.compile(ops, fullgraph=True)(x, y)
    xs, ys = ref.to_mp(x.double()), ref.to_mp(y.double())
    f32 = torch.float32
    for i in range(x.shape[0]):
        hx, hy = metrics.hulp(xs[i], c, f32), metrics.hulp(ys[i], c, f32)
        exact_d, exact_d0 = ref.dist(xs[i], ys[i], c), ref.dist0(xs[i], c)
        exact_p, exact_l = ref.mobius_add(xs[i], ys[i], c), ref.logmap0(xs[i], c)
        for out in (eager, compiled):
            errs = {
                "dist": metrics.scalar_error(
                    ref.to_mp(out[0][i].double()), exact_d, c, f32, [hx + hy]
                ),
                "dist0": metrics.scalar_error(
                    ref.to_mp(out[1][i].double()), exact_d0, c, f32, [hx]
                ),
                "mobius_add": metrics.point_error(
                    ref.to_mp(out[2][i].double()), exact_p, c, f32, [hx + hy]
                ),
                "logmap0": metrics.tangent_error(
                    [mpmath.mpf(0)] * 4, ref.to_mp(out[3][i].double()), exact_l, c, f32, [hx]
                ),
            }
            worst = max(errs.values())
            assert worst <= HULP_BOUND, f"row {i}: {errs}"


def test_compile_three_ops_one_graph() -> None:
    """The README's three-op function: one graph, no break."""
    torch._dynamo.reset()

    def f(x: Tensor, y: Tensor) -> Tensor:
        return poincare.dist(x, y) + poincare.dist0(poincare.mobius_add(x, y))

    x, y = _far(B, D), _points(B, D)
    explain = torch._dynamo.explain(f)(x, y)
    assert explain.graph_count == 1 and explain.graph_break_count == 0, explain.break_reasons


# vmap: every op over a batch dimension that the op itself never sees.
VMAP_SKIP: set[str] = set()


@pytest.mark.parametrize("name", sorted(set(INPUTS) - VMAP_SKIP))
def test_vmap_op(name: str) -> None:
    fn, args = INPUTS[name]
    batched = tuple(torch.stack([a, a.flip(0) if a.dim() > 0 else a]) for a in args)
    got = torch.func.vmap(fn)(*batched)
    want = torch.stack([fn(*(b[i] for b in batched)) for i in range(2)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_vmap_grad_dist() -> None:
    x, y = _far(B, D), _points(B, D)
    g = torch.func.vmap(torch.func.grad(lambda a, b: poincare.dist(a, b)))(x, y)
    a = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(poincare.dist(a, y).sum(), a)
    torch.testing.assert_close(g, want)


def test_grad_of_every_scalar_op() -> None:
    """``torch.func.grad`` (functorch's autograd) agrees with ``torch.autograd``."""
    for name, (fn, args) in INPUTS.items():

        def total(*a: Tensor, fn: Callable[..., Tensor] = fn) -> Tensor:
            return fn(*a).sum()

        grads = torch.func.grad(total, argnums=tuple(range(len(args))))(*args)
        leaves = _leaves(args)
        want = torch.autograd.grad(fn(*leaves).sum(), leaves, allow_unused=True)
        for g, w, a in zip(grads, want, leaves, strict=True):
            torch.testing.assert_close(g, torch.zeros_like(a) if w is None else w, msg=name)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


def _modules() -> dict[str, tuple[torch.nn.Module, tuple[Tensor, ...]]]:
    torch.manual_seed(0)
    x = _points(2, 5, 8, seed=7)
    conv_in = torch.randn(2, 3, 6, 4, 4)  # (B, T, C, H, W)
    ball = poincare.PoincareBall(1.0, learnable=True)
    return {
        "linear": (hnn.HyperbolicLinear(8, 6), (x,)),
        "mlr": (hnn.HyperbolicMLR(8, 5), (x,)),
        "activation": (hnn.HyperbolicActivation(torch.nn.Tanh()), (x,)),
        "layer_norm": (hnn.HyperbolicLayerNorm(8), (x,)),
        "feed_forward": (hnn.HyperbolicFeedForward(8, 16, dropout=0.0), (x,)),
        "positional": (hnn.HyperbolicPositionalEncoding(8, max_len=16), (x,)),
        "attention_cosh": (
            hnn.HyperbolicMultiHeadAttention(8, 2, score="cosh", batch_first=True),
            (x, x, x),
        ),
        "attention_distance": (
            hnn.HyperbolicMultiHeadAttention(8, 2, score="distance", batch_first=True),
            (x, x, x),
        ),
        "block": (hnn.HyperbolicTransformerBlock(8, 2, 16, dropout=0.0), (x,)),
        "transformer": (hnn.HyperbolicTransformer(8, 2, 2, 16, dropout=0.0, c=ball), (x,)),
        "transformer_1": (hnn.HyperbolicTransformer(8, 2, 1, 16, dropout=0.0), (x,)),
        "conv_transformer": (
            hnn.ConvHyperbolicTransformer(6, 8, num_heads=2, num_layers=1, dropout=0.0),
            (conv_in,),
        ),
    }


MODULES = _modules()


def _module_fn(module: torch.nn.Module) -> Callable[..., Tensor]:
    def run(*args: Tensor) -> Tensor:
        out = module(*args)
        return out[0] if isinstance(out, tuple) else out

    return run


def _module_forward_backward(module: torch.nn.Module, args: tuple[Tensor, ...]) -> list[Tensor]:
    module.zero_grad()
    leaves = _leaves(args)
    out = _module_fn(module)(*leaves)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    return [out.detach(), *grads, *(a.grad for a in leaves if a.grad is not None)]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_compile_fullgraph_module(name: str) -> None:
    torch._dynamo.reset()
    module, args = MODULES[name]
    module.train()
    want = _module_forward_backward(module, args)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    got = _module_forward_backward(compiled, args)  # type: ignore[arg-type]
    _assert_close(got, want, name)


def test_attention_one_graph() -> None:
    torch._dynamo.reset()
    module, args = MODULES["attention_distance"]
    explain = torch._dynamo.explain(_module_fn(module))(*args)
    assert explain.graph_count == 1 and explain.graph_break_count == 0, explain.break_reasons


def test_inductor_module() -> None:
    """One module through the default (inductor) backend, forward and backward."""
    torch._dynamo.reset()
    module, args = MODULES["linear"]
    want = _module_forward_backward(module, args)
    got = _module_forward_backward(torch.compile(module, fullgraph=True), args)  # type: ignore[arg-type]
    _assert_close(got, want, "linear")


@pytest.mark.parametrize("name", ["attention_cosh", "attention_distance", "transformer_1"])
def test_export_module(name: str) -> None:
    module, args = MODULES[name]
    module.eval()
    exported = torch.export.export(module, args)
    got = exported.module()(*args)
    want = module(*args)
    g = got[0] if isinstance(got, tuple) else got
    w = want[0] if isinstance(want, tuple) else want
    torch.testing.assert_close(g, w)
