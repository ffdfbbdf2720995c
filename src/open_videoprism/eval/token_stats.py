"""How much each token says on its own: within-clip similarity and frame-to-frame change.

A frozen encoder whose tokens all look alike inside a clip gives a probe one summary repeated
``L`` times; one whose tokens do not change from frame to frame has little temporal signal left
for a motion probe. Stage 2's students move both ways (docs/reproduce.md), so the reproduce
report prints these next to the probe scores. Both are measured on cached tokens
``[N, K, T*H*W, D]`` (time-major, as :mod:`open_videoprism.eval.features` stores them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_stats(tokens: torch.Tensor, frames: int) -> dict[str, float]:
    """Mean within-clip cosine of token pairs, and the mean ``1 - cos`` between a token and
    the same patch one frame later.

    Args:
        tokens: ``[N, K, L, D]`` or ``[N, L, D]`` with ``L = frames * patches``.
        frames: token frames ``T`` of the clip.

    Returns:
        ``{"within_clip_cos": .., "frame_change": ..}``; ``frame_change`` is ``nan`` for one frame.
    """
    x = tokens.float().reshape(-1, *tokens.shape[-2:])  # [clips, L, D]
    n, length, dim = x.shape
    if frames < 1 or length % frames:
        raise ValueError(f"{length} tokens do not split into {frames} frames")
    u = F.normalize(x, dim=-1)
    # Mean over all ordered pairs (self-pairs included) = |mean of the unit tokens|^2.
    within = u.mean(1).pow(2).sum(-1).mean().item()
    per_frame = u.reshape(n, frames, length // frames, dim)
    change = (1 - (per_frame[:, 1:] * per_frame[:, :-1]).sum(-1)).mean().item() if frames > 1 else float("nan")
    return {"within_clip_cos": within, "frame_change": change}


__all__ = ["token_stats"]
