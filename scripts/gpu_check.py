"""CUDA checks of the hyperbolic attention's FlexAttention path: one line per check, exit 1 on
any failure.

(a) Forward+backward time, float32, B=4, E=128, 8 heads, N in {256, 1024, 4096}, against a
    Euclidean multi-head attention on ``scaled_dot_product_attention``
    (:class:`benchmarks.attention.EuclideanSDPAttention`): the module's parameters run through
    :func:`poincare.nn._flex.flex_lorentz_attention` for each score (``flex-*``), the module as
    it dispatches now on CUDA (``module-cosh``: SDPA on float64 Lorentz coordinates;
    ``module-distance``: the point-based path, N <= 1024), and ``flex-distance`` with a frozen
    temperature (what the gradient of the captured ``beta`` costs). Interleaved rounds, the
    median of per-round ratios. At N=256 each ``flex-*`` output and input gradient is also
    compared with the module's own.
(b) One training step (attention + loss + backward + Adam step) of a small model (E=32, 4 heads,
    N=64) under ``torch.cuda.set_sync_debug_mode("error")``, after two warm-up steps: the module
    per score, and the ``flex-*`` forward per score. A synchronising call fails the check.
(c) Peak CUDA memory of one forward+backward at N=8192 (B=1, E=32, 4 heads) against SDPA.
(d) FlexAttention's Gram product stays IEEE float32 with TF32 allowed
    (``torch.set_float32_matmul_precision("high")``).

Run from the repository root: ``python scripts/gpu_check.py``. Without CUDA it prints one line
and exits 0. The FlexAttention calls are compiled with dynamic lengths from the start (one
compilation per score and head width rather than a static one and then a dynamic one).
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import poincare
from benchmarks.attention import EuclideanSDPAttention
from poincare._fused import expmap0_add_lorentz_raw, midpoint_logmap0, saturation
from poincare.nn import HyperbolicMultiHeadAttention
from poincare.nn._flex import flex_lorentz_attention
from poincare.nn.functional import hyperbolic_linear_tangent

Forward = Callable[[Tensor], Tensor]
SCORES = ("distance", "squared", "cosh")
FAILURES: list[str] = []
START = time.perf_counter()


def report(ok: bool, check: str, text: str) -> None:
    if not ok:
        FAILURES.append(check)
    print(f"{'PASS' if ok else 'FAIL'} {check}: {text} [{time.perf_counter() - START:.0f} s]")
    sys.stdout.flush()


def flex_forward(m: HyperbolicMultiHeadAttention, x: Tensor, *, score: str) -> Tensor:
    """The module's self-attention with its scores on FlexAttention: the steps of
    :func:`poincare.nn.functional.multi_head_attention_forward` on its Lorentz paths."""
    b, n, e = x.shape
    heads, hd, c = m.num_heads, m.head_dim, m.c
    assert m.in_proj_weight is not None
    z = F.linear(poincare.logmap0(x, c=c), m.in_proj_weight).view(b, n, 3, heads, hd)
    bias = None if m.in_proj_bias is None else m.in_proj_bias.view(3, heads, hd)
    h = expmap0_add_lorentz_raw(z, bias, c=c, t_max=saturation(x.dtype))
    hq, hk, hv = h.permute(2, 0, 3, 1, 4).unbind(0)
    beta = m.beta.view(heads, 1, 1)
    agg = flex_lorentz_attention(hq, hk, hv, beta, c=c, score=score, mask=None, causal=False)
    t = midpoint_logmap0(agg, None, c=c, dim=hd, dtype=x.dtype).transpose(1, 2).reshape(b, n, e)
    return hyperbolic_linear_tangent(t, m.out_proj.weight, m.out_proj.bias, c=c)


def models(embed: int, heads: int) -> dict[str, tuple[nn.Module, Forward]]:
    """Every implementation by name: its module and its self-attention forward."""
    torch.manual_seed(0)
    sdpa = EuclideanSDPAttention(embed, heads).cuda()
    out: dict[str, tuple[nn.Module, Forward]] = {"sdpa": (sdpa, sdpa)}
    for score in SCORES:
        m = HyperbolicMultiHeadAttention(embed, heads, score=score).cuda()

        def module_fwd(x: Tensor, m: HyperbolicMultiHeadAttention = m) -> Tensor:
            out: Tensor = m(x, x, x)[0]
            return out

        def flex_fwd(x: Tensor, m: HyperbolicMultiHeadAttention = m, s: str = score) -> Tensor:
            return flex_forward(m, x, score=s)

        out[f"module-{score}"] = (m, module_fwd)
        out[f"flex-{score}"] = (m, flex_fwd)
    frozen = HyperbolicMultiHeadAttention(embed, heads, score="distance").cuda()
    frozen.load_state_dict(out["flex-distance"][0].state_dict())
    frozen.beta_raw.requires_grad_(False)
    out["flex-distance-frozen-beta"] = (frozen, lambda x: flex_forward(frozen, x, score="distance"))
    return out


def points(b: int, n: int, e: int) -> Tensor:
    g = torch.Generator().manual_seed(n)
    return poincare.expmap0(torch.randn(b, n, e, generator=g) / e**0.5).cuda()


def fwd_bwd(model: nn.Module, fwd: Forward, x: Tensor) -> Tensor:
    model.zero_grad(set_to_none=True)
    xx = x.detach().requires_grad_(True)
    out = fwd(xx)
    out.float().square().mean().backward()  # type: ignore[no-untyped-call]
    assert xx.grad is not None
    return xx.grad


def elapsed_ms(step: Callable[[], object]) -> float:
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    step()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))


def compare_to_module(impls: dict[str, tuple[nn.Module, Forward]], x: Tensor) -> None:
    """(a) correctness at one length: outputs in hyperbolic distance, gradients relatively. The
    thresholds catch a wrong forward or backward; precision is in flex_lorentz_attention's
    docstring (close pairs of ``distance`` lose half the float32 digits)."""
    for score in SCORES:
        model, module_fwd = impls[f"module-{score}"]
        _, flex_fwd = impls[f"flex-{score}"]
        try:
            with torch.no_grad():
                gap = float(poincare.dist(flex_fwd(x), module_fwd(x)).max())
            g_flex, g_mod = fwd_bwd(model, flex_fwd, x), fwd_bwd(model, module_fwd, x)
            rel = float((g_flex - g_mod).norm() / g_mod.norm())
            ok = math.isfinite(gap + rel) and gap < 2e-3 and rel < 1e-2
            report(
                ok,
                f"a flex-{score} vs module",
                f"N={x.shape[1]} max dist {gap:.1e}, grad rel {rel:.1e}",
            )
        except Exception as exc:
            report(False, f"a flex-{score} vs module", describe(exc))


def check_times(rounds: int = 10) -> None:
    impls = models(128, 8)
    for n in (256, 1024, 4096):
        x = points(4, n, 128)
        names = ["sdpa", "module-cosh", *(k for k in impls if k.startswith("flex"))]
        names += ["module-distance"] if n <= 1024 else []
        live: list[str] = []
        for name in names:
            model, fwd = impls[name]
            try:
                for _ in range(2):
                    fwd_bwd(model, fwd, x)
                live.append(name)
            except Exception as exc:
                report(False, f"a {name}", f"N={n}: {describe(exc)}")
        if n == 256:
            compare_to_module(impls, x)
        times: dict[str, list[float]] = {k: [] for k in live}
        for _ in range(rounds if n <= 1024 else rounds // 2):
            for name in live:
                model, fwd = impls[name]
                times[name].append(elapsed_ms(functools.partial(fwd_bwd, model, fwd, x)))
        for name in live:
            if name == "sdpa":
                continue
            ratio = statistics.median(
                a / b for a, b in zip(times[name], times["sdpa"], strict=True)
            )
            ms = statistics.median(times[name])
            report(True, f"a {name}", f"N={n} fwd+bwd {ms:.2f} ms, {ratio:.2f}x sdpa")


def check_sync() -> None:
    """(b) one training step under sync debug mode "error" (after two warm-up steps)."""
    impls = models(32, 4)
    x = points(2, 64, 32)
    for name in [k for k in impls if k.startswith(("module", "flex")) and "frozen" not in k]:
        model, fwd = impls[name]
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def step(
            model: nn.Module = model, fwd: Forward = fwd, opt: torch.optim.Optimizer = opt
        ) -> None:
            opt.zero_grad(set_to_none=True)
            loss = poincare.dist0(fwd(x)).square().mean()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()

        try:
            step()
            step()
            torch.cuda.synchronize()
        except Exception as exc:
            report(False, f"b {name}", f"warm-up failed: {describe(exc)}")
            continue
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
            verdict, text = True, "no synchronising call in one training step"
        except Exception as exc:
            sync = "synchroniz" in str(exc)
            verdict, text = False, f"{'synchronising call' if sync else 'failed'}: {describe(exc)}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        report(verdict, f"b {name}", text)


def check_memory() -> None:
    """(c) peak memory of one forward+backward at N=8192 over the memory held before it."""
    impls = models(32, 4)
    x = points(1, 8192, 32)
    peaks: dict[str, float] = {}
    for name in [k for k in impls if "frozen" not in k]:
        model, fwd = impls[name]
        try:
            fwd_bwd(model, fwd, x)
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fwd_bwd(model, fwd, x)
            torch.cuda.synchronize()
            peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
        except Exception as exc:
            report(False, f"c {name}", describe(exc))
    for name, mib in peaks.items():
        if name != "sdpa" and "sdpa" in peaks:
            ratio = mib / max(peaks["sdpa"], 1e-9)
            report(
                True,
                f"c {name}",
                f"N=8192 peak {mib:.1f} MiB, {ratio:.2f}x sdpa ({peaks['sdpa']:.1f} MiB)",
            )


def check_tf32() -> None:
    """(d) the Gram product ignores a global permission of TF32 (kernel option 'ieee'): the
    same call, compiled afresh with TF32 allowed, gives the same sums. Self-attention of points
    at radius up to 2.5 (``c h_q0 h_k0`` up to 37), where TF32 would move the distances of the
    equal pairs by up to about ``sqrt(2 * 37 * 5e-4) = 0.2``."""
    g = torch.Generator().manual_seed(1)
    u = F.normalize(torch.randn(1, 8, 256, 16, generator=g), dim=-1)
    r = 2.5 * torch.rand(1, 8, 256, 1, generator=g)
    h = poincare.poincare_to_lorentz(poincare.expmap0(u * r / 2)).cuda()
    beta = torch.ones(8, 1, 1, device="cuda")
    try:
        with torch.no_grad():
            ieee = flex_lorentz_attention(
                h, h, h, beta, c=1.0, score="distance", mask=None, causal=False
            )
            torch.set_float32_matmul_precision("high")
            torch._dynamo.reset()
            try:
                loose = flex_lorentz_attention(
                    h, h, h, beta, c=1.0, score="distance", mask=None, causal=False
                )
            finally:
                torch.set_float32_matmul_precision("highest")
        gap = float((ieee - loose).abs().max() / h.abs().max())
        report(gap < 1e-5, "d tf32 allowed", f"sums move by {gap:.1e} of the largest coordinate")
    except Exception as exc:
        report(False, "d tf32 allowed", describe(exc))


def describe(exc: BaseException) -> str:
    """The exception's first line and the innermost frame of this repository's code."""
    ours = [
        f"{Path(f.filename).name}:{f.lineno}"
        for f in traceback.extract_tb(exc.__traceback__)
        if "site-packages" not in f.filename
    ]
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first} (at {ours[-1] if ours else '?'})"


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    torch._dynamo.config.assume_static_by_default = False
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for check in (check_times, check_sync, check_memory, check_tf32):
        try:
            check()
        except Exception as exc:
            report(False, check.__name__, describe(exc))
    print(f"{len(FAILURES)} failed" if FAILURES else "all checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
