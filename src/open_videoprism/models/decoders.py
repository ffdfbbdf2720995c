"""The stage-2 decoders: token-wise (local) and global distillation heads.

Both follow the paper's Table 11 (paper App. C.2): a linear
projector from the encoder width to the decoder width (512), a 4-layer
Transformer (MLP 2048), and a projector to the teacher width. They are model
parts, not losses, so they live here; the stage-2 objective
(:mod:`open_videoprism.objectives.distillation`) owns and trains them.

* :class:`TokenDecoder` (Algorithm 1): the visible encoder tokens and a
  learnable MASK token fill the full ``T*N`` sequence, the sequence is
  *shuffled per sample*, decoder positions are added *after* the shuffle in
  canonical order, and output ``i`` predicts the teacher's token ``i``. The
  shuffle stops the decoder from copying visible inputs to their own slots.
* :class:`GlobalDecoder`: visible tokens only, no shuffle, no positions, then
  a MAP head -> one embedding that predicts the teacher's global embedding.

The MASK token and the decoder positions live at the encoder width, before
the projector (Table 11 applies the projector after the mask/shuffle step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from open_videoprism.models.layers import INIT_STD, AttentionPool, Transformer, init_dense, init_norm, layer_norm, trunc_normal_
from open_videoprism.models.pos_embed import resize_spatial_table, resize_temporal_table


@dataclass
class DecoderConfig:
    """Width and depth of one stage-2 decoder (paper: 4 layers, width 512, MLP 2048).

    ``num_heads`` is not stated in the paper; 8 gives 64-dim heads as in ViT-B.
    """

    width: int = 512
    depth: int = 4
    num_heads: int = 8
    mlp_dim: int = 2048


def shuffle_tokens(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Permute each sample's sequence independently.

    Returns ``(x[b, perm[b]], perm)`` with ``perm`` ``[B, L]``: slot ``i`` of
    sample ``b`` holds the input token ``perm[b, i]``.
    """
    b, length = x.shape[:2]
    noise = torch.rand(b, length, generator=generator, device=x.device if generator is None else generator.device)
    perm = noise.to(x.device).argsort(dim=-1)
    return torch.gather(x, 1, perm[..., None].expand(-1, -1, x.shape[-1])), perm


class TokenDecoder(nn.Module):
    """Token-wise decoder: fill, (shuffle), add positions, decode, project.

    Args:
        in_dim: student encoder width.
        out_dim: teacher token width.
        cfg: decoder sizes.
        grid: ``(frames, height, width)`` of the position tables (resized for
            other clip sizes, like the encoder's).
        shuffle: shuffle the sequence before adding positions (paper default);
            False is the "w/o token shuffling" ablation: tokens stay in place.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: DecoderConfig, grid: tuple[int, int, int], shuffle: bool = True) -> None:
        super().__init__()
        t, h, w = grid
        self.grid = (t, h, w)
        self.shuffle = shuffle
        self.mask_token = nn.Parameter(torch.zeros(in_dim))
        self.spatial_pos = nn.Parameter(torch.zeros(h * w, in_dim))
        self.temporal_pos = nn.Parameter(torch.zeros(t, in_dim))
        self.proj_in = nn.Linear(in_dim, cfg.width)
        self.blocks = Transformer(cfg.depth, cfg.width, cfg.num_heads, cfg.mlp_dim, "gelu")
        self.norm = layer_norm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, out_dim)
        self.init_weights()

    def init_weights(self) -> None:
        trunc_normal_(self.mask_token, std=INIT_STD)
        for table in (self.spatial_pos, self.temporal_pos):  # as the encoder's tables: 1 / sqrt(rows)
            trunc_normal_(table, std=table.shape[0] ** -0.5)
        init_dense(self.proj_in)
        init_dense(self.proj_out)
        init_norm(self.norm)

    def no_weight_decay(self) -> set[str]:
        return {"spatial_pos", "temporal_pos"}

    def positions(self, t: int, h: int, w: int) -> torch.Tensor:
        """``[t*h*w, in_dim]`` decoder positions in canonical (time-major) order."""
        sp = resize_spatial_table(self.spatial_pos, self.grid[1:], (h, w)).to(self.spatial_pos.dtype)
        tp = resize_temporal_table(self.temporal_pos, t).to(self.temporal_pos.dtype)
        return (tp[:, None, :] + sp[None, :, :]).reshape(t * h * w, -1)

    def fill(self, visible_tokens: torch.Tensor, visible_idx: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """The full canonical-order sequence ``[B, L, D]``: visible tokens at their
        indices, the MASK token everywhere else."""
        b, _, d = visible_tokens.shape
        full = self.mask_token.to(visible_tokens.dtype).expand(b, num_tokens, d).clone()
        return full.scatter(1, visible_idx[..., None].expand(-1, -1, d), visible_tokens)

    def forward(
        self,
        visible_tokens: torch.Tensor,
        visible_idx: torch.Tensor,
        grid: tuple[int, int, int],
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict all ``T*N`` teacher tokens from the visible student tokens.

        Args:
            visible_tokens: ``[B, V, in_dim]`` student outputs.
            visible_idx: ``[B, V]`` their flat indices.
            grid: the clip's ``(T, H', W')`` token grid.
            generator: RNG for the shuffle (default: the global one).

        Returns:
            ``(pred [B, L, out_dim], perm [B, L] or None)``; ``pred[:, i]`` is the
            prediction for canonical token ``i`` in both modes.
        """
        t, h, w = grid
        x = self.fill(visible_tokens, visible_idx, t * h * w)
        perm = None
        if self.shuffle:
            x, perm = shuffle_tokens(x, generator)
        # Positions are added after the shuffle, in canonical order: slot i gets
        # position i whatever token now sits there.
        x = x + self.positions(t, h, w).to(x.dtype)
        x = self.norm(self.blocks(self.proj_in(x)))
        return self.proj_out(x), perm


class GlobalDecoder(nn.Module):
    """Global decoder: visible tokens, no shuffle, no positions -> MAP -> ``[B, out_dim]``.

    Args:
        in_dim: student encoder width.
        out_dim: teacher embedding width (the teacher encoder width).
        cfg: decoder sizes.
        num_heads: MAP head heads; ``pool_dim`` its q/k/v width (the stage-1
            pooler's, so it can start from the teacher's MAP head).
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: DecoderConfig, num_heads: int, pool_dim: int | None = None) -> None:
        super().__init__()
        self.proj_in = nn.Linear(in_dim, cfg.width)
        self.blocks = Transformer(cfg.depth, cfg.width, cfg.num_heads, cfg.mlp_dim, "gelu")
        self.norm = layer_norm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, out_dim)
        self.pool = AttentionPool(out_dim, num_heads, pool_dim)
        self.init_weights()

    def init_weights(self) -> None:
        init_dense(self.proj_in)
        init_dense(self.proj_out)
        init_norm(self.norm)

    def forward(self, visible_tokens: torch.Tensor) -> torch.Tensor:
        """``[B, V, in_dim]`` -> ``[B, out_dim]`` (not normalised)."""
        x = self.norm(self.blocks(self.proj_in(visible_tokens)))
        return self.pool(self.proj_out(x)).squeeze(1)
