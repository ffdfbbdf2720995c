"""Capped attention as one compiled FlexAttention kernel (``attn_impl="flex"``).

``cap * tanh(logits / cap)``, the key mask, the causal mask and the float32 softmax
become a ``score_mod`` of :func:`torch.nn.attention.flex_attention.flex_attention`,
compiled once per process: no ``L x L`` logits in memory and no separate elementwise
passes. Masked scores take the official finite value, so a fully masked row attends
uniformly as in the reference. Shapes are compiled statically: each new (batch,
heads, length, dtype) costs a compilation (tens of seconds on a CPU), so this suits
fixed-shape inference, not training with packed rows of varying length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

MASK_VALUE = -0.7 * torch.finfo(torch.float32).max


@functools.lru_cache(maxsize=1)
def _compiled() -> Callable[..., Any]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def capped_flex_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    cap: float,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """``softmax(mask(cap * tanh(q k^T * scale / cap))) v`` for ``[B, H, L, Dh]`` inputs."""

    def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
        s = cap * torch.tanh(score / cap)
        if key_mask is not None:
            s = torch.where(key_mask[b, ki], s, MASK_VALUE)
        if causal:
            s = torch.where(qi >= ki, s, MASK_VALUE)
        return s

    return _compiled()(q.contiguous(), k.contiguous(), v.contiguous(), score_mod=score_mod, scale=scale)
