"""The fused CPU kernel of the attention's explicit scores (:mod:`poincare.nn._kernel`).

Its scores against mpmath (the contract of the unfused scores), its outputs and gradients
against the pure-PyTorch blockwise path it replaces, the custom operator under
``torch.library.opcheck`` and ``torch.compile(fullgraph=True)``, its memory, and the fallback
of a machine that cannot build it.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import HULP_BOUND, note_tensors
from hypothesis import given
from hypothesis import strategies as st
from test_property_fused import _draw_pairs, _score_errors
from torch import Tensor

import poincare
from poincare.nn import HyperbolicMultiHeadAttention
from poincare.nn import _kernel as K
from poincare.nn import functional as NF

F64 = torch.float64
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        os.environ.get("POINCARE_FUSED_ATTENTION") == "0", reason="the kernel is turned off"
    ),
]


def test_the_kernel_builds_here() -> None:
    """A machine with a compiler (this one, CI's) builds and loads the kernel."""
    assert K.available(), K.unavailable_reason()


def _lorentz(x: Tensor, c: float) -> Tensor:
    return NF._even(poincare.poincare_to_lorentz(x.to(F64), c=c))


@pytest.mark.parametrize("score", ["distance", "squared", "cosh"])
@given(data=st.data())
def test_property_kernel_scores_match_reference(score: str, data: st.DataObject) -> None:
    """The kernel's scores (float32 from float64 Lorentz coordinates of float32 points, close
    pairs from the coordinate differences) meet the contract of the unfused scores: within 16
    hULP of the exact ``-f(d(x, y))`` with the points' allowances, for every pair (equal and
    nearly equal ones included), over the whole verified range of curvatures and radii."""
    c, x, y = _draw_pairs(data, torch.float32)
    hx, hy = _lorentz(x, c).unsqueeze(1), _lorentz(y, c).unsqueeze(1)
    s = K.kernel_scores(hx, hy, torch.ones(x.shape[0]), c=c, score=score)
    note_tensors(s=s)
    errs = _score_errors(s.reshape(-1), x, y, c, torch.float32, score)
    assert max(errs) <= HULP_BOUND, f"kernel scores ({score}): {max(errs):.3g} hULP"


def _unfused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NF, "_kernel_runs", lambda *args: False)


def _module_run(
    score: str,
    c: float,
    *,
    seed: int,
    causal: bool,
    padding: bool,
    learn_c: bool,
    scale: float = 0.2,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, list[Tensor]]:
    """The module's output and the gradients of its input and parameters, for inputs at
    ``scale`` (0.2: every head within FAR_COSH; 1.2: far-out heads)."""
    torch.manual_seed(seed)
    ball = poincare.PoincareBall(c, learnable=learn_c)
    m = HyperbolicMultiHeadAttention(24, 3, score=score, c=ball).to(dtype)
    with torch.no_grad():
        m.beta.mul_(torch.tensor([0.5, 1.0, 2.0], dtype=dtype).view_as(m.beta))
    g = torch.Generator().manual_seed(seed + 1)
    u = torch.randn(2, 37, 24, generator=g) * (scale / math.sqrt(c))
    x = poincare.expmap0(u, c=c).to(dtype).requires_grad_(True)
    kpm = None
    if padding:
        kpm = torch.zeros(2, 37, dtype=torch.bool)
        kpm[0, 30:] = True
        kpm[1, :3] = True
    out, _ = m(x, x, x, is_causal=causal, key_padding_mask=kpm)
    loss = poincare.dist0(out, c=c).sum()
    params = [x, *m.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return out.detach(), [
        g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
    ]


@pytest.mark.parametrize("score", ["distance", "squared"])
@pytest.mark.parametrize(
    ("c", "causal", "padding"), [(1.0, False, False), (0.1, True, False), (10.0, False, True)]
)
def test_fused_matches_the_blockwise_path(
    score: str, c: float, causal: bool, padding: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module's outputs and the gradients of its input and of every parameter (the
    temperatures and a learnable curvature included) agree with the blockwise path."""
    out, grads = _module_run(score, c, seed=3, causal=causal, padding=padding, learn_c=True)
    _unfused(monkeypatch)
    ref_out, ref_grads = _module_run(score, c, seed=3, causal=causal, padding=padding, learn_c=True)
    assert float(poincare.dist(out, ref_out, c=c).max()) < 1e-5
    for g, r in zip(grads, ref_grads, strict=True):
        assert float((g - r).norm()) <= 2e-5 * float(r.norm()) + 1e-12


@pytest.mark.parametrize("score", ["distance", "squared"])
@pytest.mark.parametrize("c", [1.0, 0.1])
def test_far_out_heads_in_the_kernel_are_as_accurate_as_the_path_they_replace(
    score: str, c: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far-out heads (beyond FAR_COSH) run in the kernel with float64 values: the module's
    output is as close to the float64 module's as that of the unfused far-out path (points,
    float64 value sums), and the kernel really ran with float64 values."""
    seen: list[torch.dtype] = []
    real = NF.fused_lorentz_attention

    def spy(*args: Any, **kwargs: Any) -> Tensor:
        seen.append(args[2].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(NF, "fused_lorentz_attention", spy)
    run = functools.partial(
        _module_run, score, c, seed=3, causal=False, padding=True, learn_c=False, scale=1.2
    )
    out = run()[0].double()
    assert seen == [F64]
    exact = run(dtype=F64)[0]
    _unfused(monkeypatch)
    unfused = run()[0].double()
    err, ref_err = (float(poincare.dist(t, exact, c=c).max()) for t in (out, unfused))
    assert err <= 1.5 * ref_err + 1e-6, (err, ref_err)


def _gram_inputs(
    bh: int, n: int, m: int, width: int, c: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    pts = [
        poincare.expmap0(torch.randn(bh, k, width, dtype=F64, generator=g) / math.sqrt(c), c=c)
        for k in (n, m, m)
    ]
    hq, hk, hv = (_lorentz(p, c) for p in pts)
    hk[:, :3] = hq[:, :3]  # equal pairs: the close-pair correction
    return hq, hk, hv.float()


@pytest.mark.parametrize("score", ["distance", "squared", "cosh"])
def test_direct_call_against_the_blockwise_path(
    score: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """:func:`fused_lorentz_attention` against ``_attend`` on the ``"gram"`` path with an
    additive mask (a dead row included), per-slice temperatures and a tensor curvature, for
    more keys than one block holds: values and the gradients of the values and the
    temperatures. (The partial derivatives in the coordinates and the curvature of a close
    pair differ between the Gram form and the difference form, which agree only on the
    hyperboloid; the module test compares the full gradients, through the coordinates.)"""
    hq, hk, hv = _gram_inputs(4, 45, 300, 5, 0.5, seed=0)
    mask = torch.zeros(4, 45, 300)
    mask[1, :, 100:] = float("-inf")
    mask[3] = -torch.rand(45, 300)

    def run(fused: bool, mask: Tensor = mask) -> tuple[Tensor, ...]:
        v = hv.clone().requires_grad_(True)
        beta = torch.tensor([0.5, 1.0, 2.0, 3.0]).view(4, 1, 1).requires_grad_(True)
        c = torch.tensor(0.5, requires_grad=True)
        if fused:
            out = K.fused_lorentz_attention(
                hq, hk, v, beta, c=c, score=score, mask=mask, causal=False
            )
        else:
            out, _ = NF._attend(
                NF._Encoded("gram", hq, hk, v),
                beta=beta,
                c=c.double(),
                score=score,  # type: ignore[arg-type]
                mask=mask,
                is_causal=False,
                dropout_p=0.0,
                need_weights=False,
            )
        w = torch.linspace(-1, 1, out.numel()).view_as(out)
        return (out.detach(), *torch.autograd.grad((out * w).sum(), (v, beta)))

    _unfused(monkeypatch)
    ref = run(False)
    got = run(True)
    assert float((got[0] - ref[0]).abs().max()) <= 1e-5 * float(ref[0].abs().max())
    for g, r in zip(got[1:], ref[1:], strict=True):
        assert float((g - r).abs().max()) <= 1e-4 * float(r.abs().max()) + 1e-7
    # a row whose keys are all masked: zero sums, finite gradients, the other rows unchanged
    dead = mask.clone()
    dead[2, 7, :] = float("-inf")
    with_dead = run(True, dead)
    assert torch.equal(with_dead[0][2, 7], torch.zeros_like(with_dead[0][2, 7]))
    others = torch.ones(4, 45, dtype=torch.bool)
    others[2, 7] = False
    assert torch.equal(with_dead[0][others], got[0][others])
    assert all(bool(torch.isfinite(g).all()) for g in with_dead[1:])


def test_opcheck() -> None:
    """``torch.library.opcheck``: schema, fake (meta) implementation, autograd registration."""
    hq, hk, hv = _gram_inputs(2, 9, 11, 3, 1.0, seed=1)
    sign = torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64)
    args = (
        (hq * sign).contiguous(),
        hk.requires_grad_(True),
        hv.requires_grad_(True),
        torch.tensor([1.0, 2.0]),
        torch.tensor(1.0, dtype=F64),
        None,
        None,
        0,
        0,
        0,
        True,
        0.0,
        torch.zeros((), dtype=torch.int64),
    )
    torch.library.opcheck(K._lorentz_attention, args)
    dropped = (*args[:-2], 0.3, torch.tensor(1234, dtype=torch.int64))
    torch.library.opcheck(K._lorentz_attention, dropped)


def _seed_after(manual_seed: int) -> int:
    """The dropout seed that the fused call draws right after ``torch.manual_seed``."""
    torch.manual_seed(manual_seed)
    return int(K._seed(torch.device("cpu")))


@pytest.mark.parametrize("score", ["distance", "squared", "cosh"])
def test_dropout_matches_the_unfused_pipeline_with_the_same_mask(score: str) -> None:
    """Dropout in the kernel is the unfused pipeline with the kernel's mask: ``softmax`` of the
    scores (mask and causality included), times ``z`` (0 or ``1/(1 - p)``), times the values;
    the outputs and the gradients of the coordinates, values, temperatures and curvature
    agree with that pipeline evaluated in float64. The mask drops about ``p`` of the weights,
    and ``torch.manual_seed`` reproduces it.

    (Points within radius about 2 here: as in FlashAttention, the backward pass forms
    ``<ō_i, o_i>`` from the rounded output, so where a row's softmax
    saturates on a huge score the temperature's gradient carries an absolute error of about
    ``eps |ō| |h_v| f`` against an exact value near 0.)"""
    p, bh, n, m = 0.3, 3, 40, 300
    g = torch.Generator().manual_seed(6)
    hq, hk, hv = (
        _lorentz(poincare.expmap0(torch.randn(bh, k, 5, dtype=F64, generator=g) * 0.4), 1.0)
        for k in (n, m, m)
    )
    hv = hv.float()
    mask = torch.zeros(bh, n, m)
    mask[1, :, 250:] = float("-inf")
    seed = _seed_after(11)
    z = K.dropout_mask(bh, n, m, p, seed)
    assert abs(float((z == 0).float().mean()) - p) < 0.01
    assert z.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]

    def run(fused: bool) -> tuple[Tensor, ...]:
        q, k, v = (t.clone().requires_grad_(True) for t in (hq, hk, hv))
        beta = torch.tensor([0.5, 1.0, 2.0]).view(bh, 1, 1).requires_grad_(True)
        c = torch.tensor(1.0, dtype=F64, requires_grad=True)
        if fused:
            torch.manual_seed(11)
            out = K.fused_lorentz_attention(
                q, k, v, beta, c=c, score=score, mask=mask, causal=True, dropout_p=p
            )
        else:
            v64, b64 = v.double(), beta.double()
            s = NF._scores(q, k, v64, path="gram", beta=b64, c=c, score=score)  # type: ignore[arg-type]
            causal = torch.ones(n, m, dtype=torch.bool).triu(1)
            w = torch.softmax((s + mask.double()).masked_fill(causal, float("-inf")), dim=-1)
            out = (w * z.double()) @ v64
        wts = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        grads = torch.autograd.grad((out * wts).sum(), (q, k, v, beta, c))
        return (out.detach(), *grads)

    got, ref = run(True), run(False)
    for g_, r in zip(got, ref, strict=True):
        err = float((g_.double() - r.double()).abs().max())
        assert err <= 1e-5 * float(r.abs().max()) + 1e-7
    assert all(torch.equal(a, b) for a, b in zip(run(True), got, strict=True))  # reproducible
    torch.manual_seed(12)
    other = K.fused_lorentz_attention(
        hq, hk, hv, torch.ones(()), c=1.0, score=score, mask=mask, causal=True, dropout_p=p
    )
    assert not torch.equal(other, got[0])


def test_the_module_trains_with_dropout_in_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module with attention dropout takes the kernel in training (and without dropout in
    evaluation); a bad ``dropout_p`` of a direct call is refused by name."""
    calls: list[float] = []
    real = NF.fused_lorentz_attention

    def spy(*args: object, **kwargs: object) -> Tensor:
        calls.append(float(kwargs.get("dropout_p", 0.0)))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(NF, "fused_lorentz_attention", spy)
    m = HyperbolicMultiHeadAttention(16, 2, score="distance", dropout=0.25)
    x = poincare.expmap0(torch.randn(2, 20, 16) * 0.1)
    out, _ = m(x, x, x)
    poincare.dist0(out).sum().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in m.parameters())
    m.eval()
    m(x, x, x)
    assert calls == [0.25, 0.0]
    hq, hk, hv = _gram_inputs(1, 4, 4, 3, 1.0, seed=0)
    with pytest.raises(ValueError, match="dropout_p"):
        K.fused_lorentz_attention(
            hq,
            hk,
            hv,
            torch.ones(()),
            c=1.0,
            score="distance",
            mask=None,
            causal=False,
            dropout_p=1.0,
        )


class _Fused(torch.nn.Module):
    """The fused call as a module (for ``torch.compile`` and ``torch.export``)."""

    def forward(self, hq: Tensor, hk: Tensor, hv: Tensor, beta: Tensor) -> Tensor:
        return K.fused_lorentz_attention(
            hq, hk, hv, beta, c=0.5, score="distance", mask=None, causal=True
        )


def test_compiled_call_is_one_node_and_matches_eager() -> None:
    """``torch.compile(fullgraph=True)`` of the fused call, forward and backward, keeps the
    kernel as one node and gives the eager result."""
    hq, hk, hv = _gram_inputs(3, 40, 40, 5, 0.5, seed=4)
    seen: list[str] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., object]:
        seen.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    def step(fn: Callable[..., Tensor]) -> tuple[Tensor, ...]:
        v = hv.clone().requires_grad_(True)
        q = hq.clone().requires_grad_(True)
        out = fn(q, hk, v, torch.ones(3, 1, 1))
        return (out.detach(), *torch.autograd.grad(out.square().sum(), (q, v)))

    eager = step(_Fused())
    compiled = step(torch.compile(_Fused(), fullgraph=True, backend=backend))
    for a, b in zip(eager, compiled, strict=True):
        assert torch.equal(a, b)
    assert sum("lorentz_attention" in t for t in seen) == 1, seen


def test_the_compiled_module_runs_the_kernel_with_float64_values() -> None:
    """The module under ``torch.compile(fullgraph=True)`` (Inductor) runs the kernel once per
    call, with float64 values (it cannot test which heads lie far out), and its output and
    input gradient are the eager module's within float32 rounding."""
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 2, score="distance")
    x = poincare.expmap0(torch.randn(2, 24, 16) * 0.1)
    seen: list[str] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., object]:
        seen.extend(
            f"{node.target}:{node.args[2].meta['example_value'].dtype}"
            for node in gm.graph.nodes
            if "lorentz_attention" in str(node.target)
        )
        return torch._inductor.compile(gm, example_inputs)  # type: ignore[arg-type, no-any-return]

    def step(module: Callable[..., tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor]:
        xs = x.clone().requires_grad_(True)
        out = module(xs, xs, xs)[0]
        (grad,) = torch.autograd.grad(poincare.dist0(out).sum(), (xs,))
        return out.detach(), grad

    eager = step(m)
    compiled = step(torch.compile(m, fullgraph=True, backend=backend))
    assert seen == ["poincare.lorentz_attention.default:torch.float64"]
    assert float(poincare.dist(eager[0], compiled[0]).max()) < 1e-6
    assert float((eager[1] - compiled[1]).norm()) <= 1e-5 * float(eager[1].norm())


def test_a_module_compiled_before_any_eager_call_runs_the_kernel(tmp_path: Path) -> None:
    """In a fresh process, ``import poincare.nn`` does not import ``torch._dynamo``, and a
    module compiled (``fullgraph=True``) before any eager call builds the kernel at trace time
    and runs it (the traced availability test is a constant of the graph)."""
    code = textwrap.dedent(
        """
        import sys, torch, poincare
        from poincare.nn import HyperbolicMultiHeadAttention
        print("torch._dynamo" in sys.modules)
        torch.manual_seed(0)
        m = HyperbolicMultiHeadAttention(16, 2, score="distance")
        x = poincare.expmap0(torch.randn(2, 12, 16) * 0.1)
        seen = []
        def backend(gm, example_inputs):
            seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
            return gm.forward
        out, _ = torch.compile(m, fullgraph=True, backend=backend)(x, x, x)
        print(sum("lorentz_attention" in t for t in seen))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "1"]


def test_export_keeps_the_kernel_as_one_node() -> None:
    """``torch.export`` of the fused call holds the custom operator once, and the exported
    program gives the eager result."""
    hq, hk, hv = _gram_inputs(3, 40, 40, 5, 0.5, seed=5)
    args = (hq, hk, hv, torch.ones(3, 1, 1))
    ep = torch.export.export(_Fused(), args)
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("poincare.lorentz_attention" in t for t in targets) == 1, targets
    assert torch.equal(ep.module()(*args), _Fused()(*args))


def test_memory_is_linear_in_the_length() -> None:
    """What autograd keeps for the backward pass of the fused call grows linearly with the
    length: no ``N x M`` matrix (at N = 2048, one would take 16 MiB per slice)."""
    hq, hk, hv = _gram_inputs(1, 2048, 2048, 7, 1.0, seed=2)
    sizes: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    hv.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = K.fused_lorentz_attention(
            hq, hk, hv, torch.ones(()), c=1.0, score="distance", mask=None, causal=True
        )
    assert out.shape == (1, 2048, hv.shape[-1])
    assert sum(sizes.values()) < 2048 * 64 * 8


def _run_child(env: dict[str, str], tmp_path: Path) -> list[str]:
    code = textwrap.dedent(
        """
        import torch, poincare
        from poincare.nn import HyperbolicMultiHeadAttention, _kernel
        torch.manual_seed(0)
        m = HyperbolicMultiHeadAttention(16, 2, score="distance")
        x = poincare.expmap0(torch.randn(2, 20, 16) * 0.5)
        out, _ = m(x, x, x)
        poincare.dist0(out).sum().backward()
        torch.save(out.detach(), "out.pt")
        print(_kernel.available())
        print(_kernel.unavailable_reason())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()


@pytest.mark.parametrize("how", ["turned off", "no compiler"])
def test_a_machine_without_the_kernel_takes_the_fallback(how: str, tmp_path: Path) -> None:
    """Turned off (``POINCARE_FUSED_ATTENTION=0``) or unbuildable (no C++ compiler, a fresh
    extension directory), the attention runs on its blockwise path and gives the kernel's
    result within the contract's float32 rounding."""
    env = {"POINCARE_FUSED_ATTENTION": "0"}
    if how == "no compiler":
        env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    lines = _run_child(env, tmp_path)
    assert lines[0] == "False"
    assert ("POINCARE_FUSED_ATTENTION" in lines[1]) == (how == "turned off")
    fallback = torch.load(tmp_path / "out.pt")
    torch.manual_seed(0)
    m = HyperbolicMultiHeadAttention(16, 2, score="distance")
    x = poincare.expmap0(torch.randn(2, 20, 16) * 0.5)
    out, _ = m(x, x, x)
    assert float(poincare.dist(out.detach(), fallback).max()) < 1e-5
