"""Process-group plumbing, kept apart from the training loop: torchrun's environment, the backend, small collectives.

A plain `fromnet train` is a world of one and never touches torch.distributed; under `torchrun` every process
joins one group (NCCL when it drives a GPU, Gloo on CPU), and the helpers below reduce to no-ops at world 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: str = "auto") -> World:
    """Join torchrun's group if launched by it; pick this process's device ("auto": its GPU if any, else CPU)."""
    rank = int(os.environ.get("RANK", 0))
    size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=size,
            timeout=timedelta(minutes=30),
            device_id=dev if dev.type == "cuda" else None,
        )
    return World(rank, size, local_rank, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum over ranks, in place, wherever the tensor lives (NCCL only reduces GPU tensors); returns it."""
    if world.distributed:
        work = tensor.to(world.device)
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        if work is not tensor:
            tensor.copy_(work)
    return tensor


def all_gather_cat(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate equal-shaped tensors from every rank along dim 0 (no gradient)."""
    if not world.distributed:
        return tensor
    work = tensor.to(world.device).contiguous()
    parts = [torch.empty_like(work) for _ in range(world.size)]
    dist.all_gather(parts, work)
    return torch.cat(parts).to(tensor.device)
