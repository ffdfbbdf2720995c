"""Rank and world-size queries that hold with or without a process group.

The lowest layer that needs them is the objectives' cross-rank loss, so they
live here, below every layer; :mod:`open_videoprism.train.distributed` builds
the process-group setup on top of them.
"""

from __future__ import annotations

import torch.distributed as dist


def is_dist() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


__all__ = ["get_rank", "get_world_size", "is_dist"]
