"""Rows of a batch gathered from every process of a ``torch.distributed`` job, with gradients.

Under ``torchrun`` each process holds a shard of the global batch. The batch statistics of the
method (the MMD and its pooled bandwidth, the KL batch mean, the centring and standardisation of
the DHF constraints) are then statistics of the shard unless its rows are gathered first.
:func:`gather_rows` concatenates every rank's rows in rank order (shards may differ in size);
its backward sums the gradient that every rank's copy of the global loss sends to a rank's rows
(one ``all_reduce``, which every backend, gloo included, implements). With DDP averaging the
parameter gradients over ranks, N processes on B/N rows each then get the gradient of one
process on all B rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["world_size", "global_batch_active", "gather_rows"]


def world_size() -> int:
    """Processes in the default group; 1 without an initialised ``torch.distributed``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def global_batch_active(flag: bool | None) -> bool:
    """Whether batch statistics span every rank: ``flag``, or when ``None`` whether this is a
    job of more than one process."""
    if flag is not None:
        return bool(flag) and world_size() > 1
    return world_size() > 1


def _sizes(n: int, device: torch.device) -> list[int]:
    import torch.distributed as dist

    mine = torch.tensor([n], dtype=torch.long, device=device)
    all_n = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(all_n, mine)
    return [int(t) for t in all_n]


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        rank, top = dist.get_rank(), max(sizes)
        pad = x.new_zeros((top - x.shape[0], *x.shape[1:]))
        full = torch.cat([x, pad]).contiguous()
        parts = [torch.empty_like(full) for _ in sizes]
        dist.all_gather(parts, full)
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's global loss depends on every rank's rows
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None


def gather_rows(x: Tensor) -> Tensor:
    """``x`` (N_r, ...) of every rank concatenated along dim 0 in rank order, differentiable
    with respect to this rank's rows; ``x`` itself in a one-process run. Boolean and integer
    tensors are gathered without a gradient."""
    if world_size() == 1:
        return x
    sizes = _sizes(x.shape[0], x.device)
    if x.dtype == torch.bool:  # gloo has no bool all_gather
        return _GatherRows.apply(x.to(torch.uint8), sizes).bool()
    return _GatherRows.apply(x, sizes)
