"""Data-parallel helpers: a no-op in a single process, torch.distributed under `torchrun`.

`torchrun --nproc-per-node N` sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1,
`init_distributed` starts the process group (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank, world size and local rank from the environment `torchrun` sets (1 process otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo(
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def is_primary() -> bool:
    """True on rank 0 (the one that logs and writes checkpoints)."""
    return dist_info().rank == 0


def init_distributed(device: torch.device | None = None) -> DistInfo:
    """Join the process group when launched with WORLD_SIZE > 1 (idempotent); returns the ranks."""
    info = dist_info()
    if info.enabled and not dist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist_info()


def _comm_device() -> torch.device:
    """Where collective tensors must live: CUDA for NCCL, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few floats over all ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_reduce_min(values: list[float]) -> list[float]:
    """Element-wise minimum of a few floats over all ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.cpu().tolist()


def all_gather_bytes(data: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's uint8 tensor of the same size (e.g. RNG states), in rank order, on the CPU."""
    if not (dist.is_available() and dist.is_initialized()):
        return [data.clone()]
    local = data.to(_comm_device())
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
