"""Training on several processes: ``torchrun`` with the gloo backend over loopback, on the CPU.

The end-to-end tests launch ``torchrun --nproc_per_node 2`` on ``tests/ddp_worker.py`` and
compare with a one-process run on the same global batch.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_config import TINY

from training.config import TrainConfig
from training.distributed import (
    DistContext,
    DistributedSetupError,
    gather_with_grad,
    init_distributed,
    local_slice,
    shard_batches,
)
from training.trainer import run

ROOT = Path(__file__).resolve().parents[1]

# dropout 0: one process and two draw their dropout masks from different streams
DDP_TINY: dict[str, Any] = {
    **TINY,
    "transformer_dropout": 0.0,
    "batch_size": 8,
    "tensorboard": False,
    "cross_rank_negatives": True,
    "lr": 2e-3,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(out: Path, settings: dict[str, Any], **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(ROOT / "tests" / "ddp_worker.py"),
        str(out),
        json.dumps(settings),
    ]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(out: Path, rank: int) -> dict[str, torch.Tensor]:
    w: dict[str, torch.Tensor] = torch.load(
        Path(str(out) + "-ranks") / f"weights_rank{rank}.pt", weights_only=True
    )
    return w


def _history(out: Path, rank: int) -> list[dict[str, Any]]:
    h: list[dict[str, Any]] = json.loads(
        (Path(str(out) + "-ranks") / f"history_rank{rank}.json").read_text()
    )
    return h


def test_two_processes_match_one_on_the_same_global_batch(tmp_path: Path) -> None:
    """Two ranks end with identical weights; with cross-rank negatives their loss is the
    one-process loss of the global batch (stated tolerance: 1e-5 relative on the epoch's mean
    training loss, 1e-4 absolute on the weights after 6 AdamW steps: the two runs differ only
    by the order of floating-point sums)."""
    two = tmp_path / "two"
    _torchrun(two, DDP_TINY)
    w0, w1 = _weights(two, 0), _weights(two, 1)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    torch.set_num_threads(1)
    one = run(TrainConfig(**{**DDP_TINY, "out": str(tmp_path / "one")}))
    assert one.model is not None
    h2 = _history(two, 0)
    assert [h["processes"] for h in h2] == [2, 2]
    assert all(h["ranks_in_sync"] == 1.0 for h in h2)
    for a, b in zip(one.history, h2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    ref = one.model.state_dict()
    noise = _bias_before_instance_norm(one.model)
    assert noise  # the tiny encoder has such biases: the exception below is not empty talk
    for k in ref:
        if k in noise:
            # GroupNorm with one channel per group subtracts this bias exactly, so its gradient
            # is rounding noise and AdamW's normalised step follows the noise's sign: the two
            # runs may differ by up to lr per step
            assert (w0[k] - ref[k]).abs().max() <= 2 * DDP_TINY["lr"] * 6
            continue
        torch.testing.assert_close(w0[k], ref[k], atol=1e-4, rtol=1e-4, msg=k)
    # only rank 0 writes the run folder
    names = sorted(p.name for p in two.iterdir())
    assert "checkpoint_last.pt" in names and "metrics.csv" in names


def _bias_before_instance_norm(model: torch.nn.Module) -> set[str]:
    """Names of the convolution biases followed by a GroupNorm of one channel per group."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            layers = list(module.named_children())
            for (name, a), (_, b) in itertools.pairwise(layers):
                if (
                    isinstance(a, torch.nn.Conv3d)
                    and a.bias is not None
                    and isinstance(b, torch.nn.GroupNorm)
                    and b.num_groups == b.num_channels
                ):
                    names.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return names


def test_two_processes_resume_exactly(tmp_path: Path) -> None:
    """Stopped after step 4 of 6 and resumed, two processes end bit for bit where an
    uninterrupted two-process run ends."""
    settings = {**DDP_TINY, "transformer_dropout": 0.1, "cross_rank_negatives": False}
    full = tmp_path / "full"
    _torchrun(full, settings)
    part = tmp_path / "part"
    _torchrun(part, settings, DDP_WORKER_STOP_AT="4")
    _torchrun(part, {**settings, "resume": str(part / "checkpoint_last.pt")})
    a, b = _weights(full, 0), _weights(part, 0)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _history(full, 0)[-1]["val_loss"] == _history(part, 0)[-1]["val_loss"]


def _gather_worker(rank: int, world: int, init: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, world_size=world, active=True)
        x = torch.full((2, 3), float(rank + 1), requires_grad=True)
        allx = gather_with_grad(x, ctx)
        assert allx.shape == (2 * world, 3)
        assert torch.equal(allx[:2], torch.ones(2, 3)) and torch.equal(
            allx[2:], 2 * torch.ones(2, 3)
        )
        # rank r's loss weights block s by (r + 1) * (s + 1): the gradient reaching rank s's
        # rows is the sum over r, (s + 1) * Σ_r (r + 1) = 3 (s + 1) for two ranks
        weights = torch.cat([torch.full((2, 3), float((rank + 1) * (s + 1))) for s in range(world)])
        (allx * weights).sum().backward()
        assert x.grad is not None
        expected = (rank + 1) * sum(r + 1 for r in range(world))
        assert torch.equal(x.grad, torch.full((2, 3), float(expected))), x.grad
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_sums_every_ranks_gradient(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_gather_worker, args=(2, init), nprocs=2, join=True)


def test_batches_split_across_ranks_like_one_process() -> None:
    order = list(range(10))
    one = shard_batches(order, 4, DistContext())
    assert one == [[0, 1, 2, 3], [4, 5, 6, 7]]
    r0 = shard_batches(order, 4, DistContext(rank=0, world_size=2))
    r1 = shard_batches(order, 4, DistContext(rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one
    assert local_slice(8, DistContext(rank=1, world_size=2)) == slice(4, 8)
    with pytest.raises(DistributedSetupError, match="multiple of the number of processes"):
        local_slice(5, DistContext(rank=0, world_size=2))


def test_one_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed(torch.device("cpu"))
    assert not ctx.active and ctx.world_size == 1 and ctx.is_main
    x = torch.ones(2, requires_grad=True)
    assert gather_with_grad(x, ctx) is x
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DistributedSetupError, match="WORLD_SIZE must be an integer"):
        init_distributed(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(DistributedSetupError, match=r"RANK must be in \[0, 2\)"):
        init_distributed(torch.device("cpu"))
