"""torchrun setup, the data-parallel wrappers (DDP, FSDP2) and rank helpers.

``torchrun --nproc-per-node N -m open_videoprism.cli.main pretrain ...`` sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` reads them
and starts the process group (``nccl`` on GPUs, ``gloo`` on CPUs). Without
those variables everything runs as a single process and the helpers below are
no-ops, so the same code path serves both.

:func:`parallelize` applies ``distributed.strategy``: DDP, or FSDP2
(``torch.distributed.fsdp.fully_shard``) on every transformer block and then on
the objective, the torchtitan layout. Blocks are found through the models'
:class:`~open_videoprism.models.layers.Transformer` stacks, so model code knows
nothing about sharding. An objective names its frozen submodules (the stage-2
teacher) in ``frozen_submodules``; they are replicated (left out of FSDP) or
sharded as ``distributed.frozen`` says, and never checkpointed (the builder
rebuilds them).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from open_videoprism.ranks import get_rank, get_world_size, is_dist

# The frozen modules' methods the objectives call instead of forward(): FSDP2 must gather their
# root parameters around these too (register_fsdp_forward_method).
FROZEN_FORWARD_METHODS: tuple[str, ...] = ("encode_video", "encode_text")


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


def free_port() -> int:
    """A free TCP port on this host, for a single-node rendezvous (``MASTER_PORT``) in scripts and tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def frozen_submodules(objective: nn.Module) -> tuple[str, ...]:
    """Names of the objective's frozen submodules (``objective.frozen_submodules``; default none)."""
    return tuple(getattr(objective, "frozen_submodules", ()))


def frozen_prefixes(objective: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the frozen submodules (``"teacher."``): never checkpointed."""
    return tuple(f"{name}." for name in frozen_submodules(objective))


def transformer_blocks(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> list[nn.Module]:
    """Every transformer block under ``module`` (outside the modules in ``skip``), in order:
    the FSDP2 units. Found by type, so the model code needs no sharding hooks."""
    from open_videoprism.models.layers import Transformer

    skipped = {id(m) for s in skip for m in s.modules()}
    return [b for m in module.modules() if isinstance(m, Transformer) and id(m) not in skipped for b in m.blocks]


def mixed_precision_policy(precision: str) -> Any:
    """FSDP2's policy for ``precision``: bf16 compute with fp32 gradient reduction, or plain fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def apply_fsdp(
    objective: nn.Module,
    info: DistInfo,
    precision: str = "fp32",
    frozen: str = "replicate",
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Shard ``objective`` in place with FSDP2 over all ranks; returns it (now an ``FSDPModule``).

    Trainable transformer blocks are one unit each, the rest of the objective the root unit.
    Frozen submodules are left out (``replicate``: a full copy per rank) or sharded per block
    plus one unit for the rest (``shard``), in their own dtype. Activation checkpointing
    (``model.grad_checkpointing``) composes: the blocks' recompute gathers their weights again.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = mixed_precision_policy(precision)
    frozen_mods = tuple(objective.get_submodule(n) for n in frozen_submodules(objective))
    # Every rank must run each sharded block as often as the others (each call gathers its
    # weights), but the number of length groups of packed visible tokens depends on the rank's
    # masks: pack each stage in one group.
    from open_videoprism.models.videoprism import FactorizedEncoder

    for m in objective.modules():
        if isinstance(m, FactorizedEncoder):
            m.pack_groups = 1
    for block in transformer_blocks(objective, skip=frozen_mods):
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    ignored: set[nn.Parameter] = set()
    for mod in frozen_mods:
        if frozen == "shard":
            for block in transformer_blocks(mod):
                fully_shard(block, mesh=mesh)
            fully_shard(mod, mesh=mesh)
            for name in FROZEN_FORWARD_METHODS:
                if callable(getattr(mod, name, None)):
                    register_fsdp_forward_method(mod, name)
        else:
            ignored.update(mod.parameters())
    # fully_shard cannot shard 0-dim parameters (the contrastive temperature): they stay replicated and
    # sync_replicated_grads averages their gradients, as DDP would.
    ignored.update(p for p in objective.parameters() if p.dim() == 0)
    fully_shard(objective, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward, ignored_params=ignored or None)
    return objective


def parallelize(objective: nn.Module, info: DistInfo, cfg: Any, precision: str = "fp32") -> nn.Module:
    """The module the engine calls: ``objective`` itself (one rank), DDP, or the FSDP2-sharded objective.

    ``cfg`` is the run's :class:`~open_videoprism.train.config.DistributedConfig`.
    """
    if cfg.strategy == "fsdp" and is_dist():  # also on one rank inside a process group (benchmarks/gpu_distributed_check.py)
        return apply_fsdp(objective, info, precision, cfg.frozen, cfg.reshard_after_forward)
    if not info.distributed:
        return objective
    return wrap_ddp(objective, info, cfg.find_unused_parameters)


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(module), FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter inside the block when ``enabled`` is False
    (the first micro-batches of an accumulated step): DDP's ``no_sync``, FSDP2's
    ``set_requires_gradient_sync``. Gradients still accumulate locally."""
    if enabled or not is_dist():
        yield
        return
    inner = unwrap(model)
    if is_fsdp(inner):
        inner.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)  # type: ignore[operator]
        return
    no_sync = getattr(model, "no_sync", None)  # DDP, also through torch.compile
    with no_sync() if no_sync is not None else contextlib.nullcontext():
        yield


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` as full CPU tensors, however it is sharded. A collective under FSDP:
    every rank must call it; ranks other than 0 may get an empty dict."""
    if not is_fsdp(module):
        return {k: v.detach().cpu() for k, v in unwrap(module).state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(unwrap(module), options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def sync_replicated_grads(model: nn.Module, params: list[nn.Parameter]) -> None:
    """Average over ranks the gradients of trainable parameters FSDP2 left unsharded (0-dim ones);
    a no-op without FSDP (DDP already averaged everything)."""
    if not is_dist() or not is_fsdp(model):
        return
    grads = [p.grad for p in params if p.grad is not None and not _is_dtensor(p.grad)]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` over a mix of sharded (DTensor) and plain gradients: the global L2 norm of
    all of them, every gradient scaled by the same factor. Returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g for g in grads if _is_dtensor(g)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    plain = [g for g in grads if not _is_dtensor(g)]
    total = torch.nn.utils.get_total_norm(sharded).full_tensor() ** 2  # type: ignore[attr-defined]
    if plain:
        total = total + torch.nn.utils.get_total_norm(plain).to(total.device) ** 2
    norm = total.sqrt()
    coef = float((max_norm / (norm + 1e-6)).clamp(max=1.0))
    if coef < 1.0:
        torch._foreach_mul_(sharded, coef)
        if plain:
            torch._foreach_mul_(plain, coef)
    return norm


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm as a plain tensor: FSDP2's ``clip_grad_norm_`` returns a replicated DTensor."""
    full = getattr(norm, "full_tensor", None)
    return full() if callable(full) else norm


def local_norm(norm: torch.Tensor) -> float:
    """A gradient norm as a float (a host sync)."""
    return float(full_norm(norm))


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
    "FROZEN_FORWARD_METHODS",
    "full_norm",
    "DistInfo",
    "all_reduce_mean",
    "apply_fsdp",
    "barrier",
    "cleanup",
    "clip_grad_norm",
    "frozen_prefixes",
    "frozen_submodules",
    "full_state_dict",
    "get_rank",
    "get_world_size",
    "gradient_sync",
    "init_distributed",
    "is_dist",
    "is_fsdp",
    "local_norm",
    "mixed_precision_policy",
    "parallelize",
    "resolve_device",
    "sync_replicated_grads",
    "transformer_blocks",
    "unwrap",
    "wrap_ddp",
]
