"""torchrun / DDP setup and rank helpers.

``torchrun --nproc-per-node N -m open_videoprism.cli.main pretrain ...`` sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` reads them
and starts the process group (``nccl`` on GPUs, ``gloo`` on CPUs). Without
those variables everything runs as a single process and the helpers below are
no-ops, so the same code path serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from open_videoprism.ranks import get_rank, get_world_size, is_dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks the local GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Start the process group if launched by torchrun; returns this process's :class:`DistInfo`.

    ``backend="auto"``: NCCL when this rank uses a GPU, else Gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a detached copy), for logging."""
    if not is_dist():
        return x.detach()
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / get_world_size()


def wrap_ddp(module: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel when running on several ranks, else the module itself."""
    if not info.distributed:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod  # type: ignore[assignment]
        else:
            return module


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_dist",
    "resolve_device",
    "unwrap",
    "wrap_ddp",
]
