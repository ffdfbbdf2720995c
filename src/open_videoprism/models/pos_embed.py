"""Position embeddings: resizing the learned tables, and the text sinusoid.

The official code resizes the learned space/time tables on every call with
``jax.image.resize(..., "bilinear")``, which uses half-pixel centres and, when
shrinking, a triangle filter widened by the scale (antialiasing). PyTorch's
``F.interpolate(mode="bilinear", align_corners=False, antialias=True)`` computes
the same weights (tests compare against the official outputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_spatial_table(table: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Resize a flattened ``[h*w, D]`` table laid out row-major on ``src`` to ``dst``."""
    if tuple(src) == tuple(dst):
        return table
    d = table.shape[-1]
    grid = table.float().reshape(1, src[0], src[1], d).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=dst, mode="bilinear", align_corners=False, antialias=True)
    return out.permute(0, 2, 3, 1).reshape(dst[0] * dst[1], d).to(table.dtype)


def resize_temporal_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a ``[T0, D]`` table along time to ``[length, D]``."""
    if table.shape[0] == length:
        return table
    d = table.shape[-1]
    seq = table.float().t().reshape(1, d, 1, table.shape[0])
    out = F.interpolate(seq, size=(1, length), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(d, length).t().to(table.dtype)


def sinusoidal_table(length: int, dim: int, max_timescale: float = 10_000.0) -> torch.Tensor:
    """The official text position table ``[length, dim]`` (float32).

    ``inv_ts_i = exp(-i * ln(max_timescale) / max(dim/2 - 1, 1))`` and
    ``concat(sin(p * inv_ts), cos(p * inv_ts))``; note the ``dim/2 - 1``
    denominator (HF transformers uses ``dim/2``).
    """
    half = dim // 2
    increment = math.log(max_timescale) / max(half - 1, 1)
    inv = torch.exp(torch.arange(half, dtype=torch.float32) * -increment)
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    table = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table
