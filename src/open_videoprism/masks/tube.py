"""Tube masking (VideoMAE): one random spatial mask repeated in every frame.

The masked count per frame is ``round(ratio * N)``, so a sample has
``T * round(ratio * N)`` masked tokens: the count closest to ``ratio * T * N``
that a tube can have. Every frame then has the same visible positions, which
is the cheapest case for the factorized student (see docs/stage2.md): the
spatial stage packs ``N - m`` tokens per frame without padding and the
temporal stage drops every masked position entirely.
"""

from __future__ import annotations

import torch

from open_videoprism.masks.base import MaskGenerator, TokenGrid


class TubeMaskGenerator(MaskGenerator):
    """Random spatial positions masked through the whole clip."""

    name = "tube"

    def num_masked(self, grid: TokenGrid) -> int:
        per_frame = min(round(self.ratio * grid.tokens_per_frame), grid.tokens_per_frame - 1)
        return grid.frames * per_frame

    def sample_mask(self, batch_size: int, grid: TokenGrid, generator: torch.Generator) -> torch.Tensor:
        per_frame = self.num_masked(grid) // grid.frames
        noise = torch.rand(batch_size, grid.tokens_per_frame, generator=generator)
        spatial = noise.argsort(dim=-1).argsort(dim=-1) < per_frame
        spatial = spatial.view(batch_size, 1, grid.height, grid.width)
        return spatial.expand(-1, grid.frames, -1, -1).contiguous()
