"""Forward+backward time and activation memory of hyperbolic vs Euclidean multi-head attention.

Compares, in one process and interleaved round by round, for the same (B, N, E, heads), float32
on the CPU:

* ``euclid``: :class:`torch.nn.MultiheadAttention` (the reference, ratio 1);
* ``eucl-sdpa``: Euclidean self-attention written directly on ``scaled_dot_product_attention``
  with contiguous heads (a second, leaner Euclidean peer);
* ``hyp-cosh``: :class:`poincare.nn.HyperbolicMultiHeadAttention` with ``score="cosh"``, whose
  attention runs inside ``scaled_dot_product_attention`` on augmented Lorentz vectors;
* ``cosh-lean``: the same with ``memory_efficient=True`` (the elementwise hyperbolic maps are
  recomputed in backward rather than stored);
* ``hyp-dist``: the same module with ``score="distance"`` (explicit ``N x M`` scores from
  ``poincare.pairwise_dist``, then one matrix product for the midpoint);
* ``naive``: the same projections with the broadcast design: distances from
  ``poincare.dist`` on ``(..., N, M, D)`` broadcast pairs and the midpoint from
  ``poincare.einstein_midpoint`` over ``(..., N, M, D)`` (skipped above ``--naive-max``).

Time: the median over rounds of the forward+backward wall time of each implementation, and the
medians of the per-round ratios to ``euclid`` and to ``eucl-sdpa`` ("vs sdpa"). Memory: the
bytes of the distinct tensor storages saved for backward by autograd
(``torch.autograd.graph.saved_tensors_hooks``), i.e. the activation memory a training step
holds between forward and backward; parameters and inputs are excluded.

Run: ``python benchmarks/attention.py [--batch 4 --embed 128 --heads 8 --rounds 7]``;
``--impls hyp-cosh hyp-dist`` restricts the run to some implementations (the two Euclidean
references always run). The machine running it may be shared: the ratios are medians of
per-round ratios of interleaved runs, which absorbs slow drifts of the load but not bursts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import poincare
from poincare.nn import HyperbolicMultiHeadAttention

Step = Callable[[Tensor], Tensor]


class EuclideanSDPAttention(nn.Module):
    """Euclidean multi-head self-attention written directly on ``scaled_dot_product_attention``
    with contiguous heads (the layout in which the fused CPU kernel applies)."""

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(embed, 3 * embed)
        self.out_proj = nn.Linear(embed, embed)

    def forward(self, x: Tensor) -> Tensor:
        b, n, e = x.shape
        qkv = self.in_proj(x).view(b, n, 3, self.heads, e // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out2: Tensor = self.out_proj(out.transpose(1, 2).reshape(b, n, e))
        return out2


class NaiveHyperbolicAttention(nn.Module):
    """The broadcast design: every pair (i, j) materialises a D-vector."""

    def __init__(self, hyp: HyperbolicMultiHeadAttention) -> None:
        super().__init__()
        self.hyp = hyp

    def forward(self, x: Tensor) -> Tensor:
        h = self.hyp
        assert h.in_proj_weight is not None
        u = poincare.logmap0(x, c=h.c)
        b, n = x.shape[0], x.shape[1]
        z = torch.nn.functional.linear(u, h.in_proj_weight).view(b, n, 3, h.num_heads, -1)
        if h.in_proj_bias is None:
            pts = poincare.expmap0(z, c=h.c)
        else:
            bias = h.in_proj_bias.view(3, h.num_heads, -1)
            pts = poincare.expmap0_add(z, bias, c=h.c)
        q, k, v = pts.permute(2, 0, 3, 1, 4).unbind(0)
        d = poincare.dist(q.unsqueeze(-2), k.unsqueeze(-3), c=h.c)  # (B, H, N, M) via N x M x D
        w = torch.softmax(-h.beta.view(-1, 1, 1) * d, dim=-1)
        out = poincare.einstein_midpoint(v.unsqueeze(-3), w, c=h.c, dim=-2)  # N x M x D inside
        t = poincare.logmap0(out, c=h.c).transpose(1, 2).reshape(x.shape)
        return h.out_proj.forward_tangent(t)


def make_steps(embed: int, heads: int) -> dict[str, Step]:
    torch.manual_seed(0)
    euclid = nn.MultiheadAttention(embed, heads, batch_first=True)
    cosh = HyperbolicMultiHeadAttention(embed, heads, score="cosh")
    lean = HyperbolicMultiHeadAttention(embed, heads, score="cosh", memory_efficient=True)
    lean.load_state_dict(cosh.state_dict())
    dist = HyperbolicMultiHeadAttention(embed, heads, score="distance")
    naive = NaiveHyperbolicAttention(dist)

    def self_attention(m: nn.Module) -> Step:
        def step(x: Tensor) -> Tensor:
            out: Tensor = m(x, x, x)[0]
            return out

        return step

    def nv(x: Tensor) -> Tensor:
        out: Tensor = naive(x)
        return out

    sdpa = EuclideanSDPAttention(embed, heads)

    def es(x: Tensor) -> Tensor:
        out: Tensor = sdpa(x)
        return out

    return {
        "euclid": self_attention(euclid),
        "eucl-sdpa": es,
        "hyp-cosh": self_attention(cosh),
        "cosh-lean": self_attention(lean),
        "hyp-dist": self_attention(dist),
        "naive": nv,
    }


def run_once(step: Step, x: Tensor) -> float:
    """Seconds for one forward+backward of ``step(x).sum()``."""
    xx = x.detach().requires_grad_(True)
    t0 = time.perf_counter()
    step(xx).sum().backward()  # type: ignore[no-untyped-call]
    return time.perf_counter() - t0


def saved_bytes(step: Step, x: Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``step(x)``."""
    xx = x.detach().requires_grad_(True)
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    def unpack(t: Tensor) -> Tensor:
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = step(xx)
    out.sum().backward()  # type: ignore[no-untyped-call]
    skip = {xx.untyped_storage().data_ptr()}
    return sum(n for ptr, n in seen.items() if ptr not in skip and n > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--naive-max", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--impls",
        nargs="+",
        default=None,
        help="implementations to run (default: all); euclid and eucl-sdpa always run",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    steps = make_steps(args.embed, args.heads)
    print(
        f"B={args.batch} E={args.embed} heads={args.heads} float32 CPU, "
        f"threads={torch.get_num_threads()}, rounds={args.rounds}; ratios = median over rounds "
        "of impl/euclid; memory = bytes saved for backward"
    )
    header = (
        f"{'N':>5} {'impl':>10} {'median ms':>10} {'time ratio':>10} {'vs sdpa':>8} "
        f"{'saved MiB':>10} {'mem ratio':>9} {'vs sdpa':>8}"
    )
    print(header)
    print("-" * len(header))
    for n in args.lengths:
        g = torch.Generator().manual_seed(n)
        tangent = torch.randn(args.batch, n, args.embed, generator=g) / args.embed**0.5
        x = poincare.expmap0(tangent)
        names = [k for k in steps if k != "naive" or n <= args.naive_max]
        if args.impls is not None:
            names = [k for k in names if k in ("euclid", "eucl-sdpa") or k in args.impls]
        for name in names:  # warm-up
            run_once(steps[name], x)
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(run_once(steps[name], x))
        mem = {k: saved_bytes(steps[k], x) for k in names}
        for name in names:
            ratios = [t / e for t, e in zip(times[name], times["euclid"], strict=True)]
            ratios_sdpa = [t / e for t, e in zip(times[name], times["eucl-sdpa"], strict=True)]
            print(
                f"{n:>5} {name:>10} {1e3 * statistics.median(times[name]):>10.2f} "
                f"{statistics.median(ratios):>10.2f} {statistics.median(ratios_sdpa):>8.2f} "
                f"{mem[name] / 2**20:>10.2f} {mem[name] / mem['euclid']:>9.2f} "
                f"{mem[name] / mem['eucl-sdpa']:>8.2f}"
            )
        if "naive" not in names and (args.impls is None or "naive" in args.impls):
            print(f"{n:>5} {'naive':>10}   skipped (its N x N x D tensors are too large)")


if __name__ == "__main__":
    main()
