"""Symmetric InfoNCE with a cross-rank gather that keeps gradients.

This is open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``, the
setting its maintainers recommend as the one that scales: every rank gathers
the embeddings of all ranks with ``torch.distributed.nn.functional.all_gather``
(whose backward sends each rank the gradient of its own rows, summed over
ranks), and computes the loss only for its *local* rows against *all* columns,
with labels offset by ``rank * n``. The mean of the ranks' local losses is the
full-batch loss, and DDP's gradient averaging then gives exactly the
full-batch gradient (tested in ``tests/test_contrastive_ddp.py``).

All ranks must hold the same number of pairs (the training loader guarantees it).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from open_videoprism.ranks import get_rank, get_world_size


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from all ranks along dim 0, differentiably."""
    if get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    # Deprecated in favour of the functional collectives, whose reduce-scatter
    # backward gloo lacks; this one works on every backend (tested with gloo).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


def positive_columns(n: int, device: torch.device | str | None = None, gather: bool = True) -> torch.Tensor:
    """Columns of this rank's ``n`` positives among the (gathered) logits: ``rank * n + i``."""
    offset = n * get_rank() if gather else 0
    return torch.arange(n, device=device) + offset


def info_nce(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between L2-normalised ``video`` [n, D] and ``text`` [n, D].

    Row ``i`` of ``video`` and row ``i`` of ``text`` are a positive pair; every
    other row (on every rank when ``gather``) is a negative. The logits are
    computed in float32 whatever the autocast dtype, because a temperature of
    up to 100 on bf16 cosines loses the small differences that matter.

    Returns ``(loss, logits_per_video)`` with ``logits_per_video`` [n, n * world].
    """
    if video.shape != text.shape or video.dim() != 2:
        raise ValueError(f"video and text embeddings must both be [n, D]; got {tuple(video.shape)} and {tuple(text.shape)}")
    video = video.float()
    text = text.float()
    if gather and get_world_size() > 1:
        all_video, all_text = gather_with_grad(video), gather_with_grad(text)
    else:
        all_video, all_text = video, text
    labels = positive_columns(video.shape[0], video.device, gather)
    logits_per_video = logit_scale * video @ all_text.T
    logits_per_text = logit_scale * text @ all_video.T
    loss = 0.5 * (F.cross_entropy(logits_per_video, labels) + F.cross_entropy(logits_per_text, labels))
    return loss, logits_per_video


__all__ = ["gather_with_grad", "info_nce", "positive_columns"]
