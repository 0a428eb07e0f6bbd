"""Training on several processes: the ``torchrun`` set-up, the sampler and the gathers.

``torchrun --nproc_per_node N train_cli.py ...`` starts ``N`` copies of the trainer with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_distributed` reads them, joins the process group (``gloo`` on the
CPU, ``nccl`` on CUDA, one GPU per local rank) and returns a :class:`DistContext`; without
them, or with ``WORLD_SIZE=1``, the run is the plain one-process run and nothing here touches
``torch.distributed``.

The model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the
gradients over the ranks. ``--batch_size`` is the *global* batch: every rank takes
``batch_size / world_size`` clips of it, so that a step of ``N`` processes sees the same clips
as a step of one process (:func:`local_slice`, :func:`shard_batches`).

``--cross_rank_negatives`` (hyperfuture's ``--cross_gpu_score``) scores every rank's
predictions against the targets of all ranks: :func:`gather_with_grad` concatenates them,
and its backward pass returns to each rank the gradient of every rank's loss with respect to
its own targets. With it, the mean of the ranks' losses is the one-process loss of the global
batch, and so are the averaged gradients.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistContext",
    "DistributedSetupError",
    "all_reduce_mean",
    "broadcast_object",
    "gather_with_grad",
    "init_distributed",
    "local_slice",
    "shard_batches",
]


class DistributedSetupError(RuntimeError):
    """The ``torchrun`` environment is unusable (bad variables, a batch that does not split)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the processes of a run.

    Attributes:
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: the number of processes (1: a plain run).
        local_rank: the rank on this machine (the GPU index on CUDA).
        device: the device this process trains on.
        active: a process group was initialised (``world_size > 1``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    active: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes checkpoints, metrics and plots."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (nothing in a one-process run)."""
        if self.active:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (nothing in a one-process run)."""
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedSetupError(
            f"environment variable {name} must be an integer, got {raw!r}"
        ) from None


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment.

    ``device`` is the device the run asked for (resolved from ``--device``). With
    ``WORLD_SIZE`` unset or 1, returns a one-process context on ``device``. Otherwise
    initialises ``torch.distributed`` with ``gloo`` (CPU) or ``nccl`` (CUDA; this process
    then trains on ``cuda:LOCAL_RANK``).

    Raises:
        DistributedSetupError: a variable is not an integer, ``RANK`` is out of range, or
            CUDA has fewer devices than ``LOCAL_RANK`` needs.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=device)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world:
        raise DistributedSetupError(f"RANK must be in [0, {world}), got {rank}")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"LOCAL_RANK {local} needs {local + 1} CUDA devices, found "
                f"{torch.cuda.device_count()}"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device, active=True)


def local_slice(global_batch: int, ctx: DistContext) -> slice:
    """The part of a global batch of ``global_batch`` clips that ``ctx``'s rank trains on:
    rows ``[rank * b, (rank + 1) * b)`` with ``b = global_batch / world_size``.

    Raises:
        DistributedSetupError: ``global_batch`` is not a multiple of the world size.
    """
    if global_batch % ctx.world_size:
        raise DistributedSetupError(
            f"--batch_size ({global_batch}) is the global batch and must be a multiple of the "
            f"number of processes ({ctx.world_size})"
        )
    b = global_batch // ctx.world_size
    return slice(ctx.rank * b, (ctx.rank + 1) * b)


def shard_batches(order: Sequence[int], global_batch: int, ctx: DistContext) -> list[list[int]]:
    """Cut a data order (a permutation of item indices) into global batches of
    ``global_batch`` items (the last partial one dropped) and return this rank's part of each
    (:func:`local_slice`): every rank gets the same number of batches, and the union of the
    ranks' parts of batch ``k`` is batch ``k`` of a one-process run."""
    part = local_slice(global_batch, ctx)
    full = len(order) // global_batch
    return [list(order[k * global_batch : (k + 1) * global_batch][part]) for k in range(full)]


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward returns, to each rank, the sum over ranks of
    the gradients with respect to its rows.

    Forward: ``out = cat([t_0, ..., t_{W-1}])`` (``t_r``: rank ``r``'s tensor, equal shapes).
    Backward: rank ``r``'s loss ``L_r`` depends on every block of ``out``; the gradient of
    ``Σ_s L_s`` with respect to ``t_r`` is ``Σ_s ∂L_s/∂out[block r]``: an ``all_reduce`` (sum)
    of the incoming gradients, of which each rank keeps its own block. (``all_reduce`` works on
    every backend; gloo has no ``reduce_scatter``.)
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        world = dist.get_world_size()
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor)
        ctx.rows = tensor.shape[0]
        ctx.rank = dist.get_rank()
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return total[start : start + ctx.rows]


def gather_with_grad(tensor: Tensor, ctx: DistContext) -> Tensor:
    """Every rank's ``tensor (n, ...)`` concatenated in rank order, ``(world_size * n, ...)``,
    differentiable (see :class:`_GatherWithGrad`); ``tensor`` itself in a one-process run.
    Every rank must pass the same shape."""
    if not ctx.active:
        return tensor
    out: Tensor = _GatherWithGrad.apply(tensor)  # type: ignore[no-untyped-call]
    return out


def all_reduce_mean(values: Tensor, ctx: DistContext) -> Tensor:
    """The mean over ranks of ``values`` (a float tensor of the same shape on every rank);
    ``values`` itself in a one-process run."""
    if not ctx.active:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / ctx.world_size


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable Python object); ``obj`` in a one-process
    run."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
