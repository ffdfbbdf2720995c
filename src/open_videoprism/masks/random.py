"""Random (unstructured) masking: every token is masked independently of its place.

Exactly ``round(ratio * T * N)`` tokens per sample, chosen uniformly without
replacement (the ranks of i.i.d. uniform noise), as in VideoMAE v2's
``RandomMaskingGenerator``.
"""

from __future__ import annotations

import torch

from open_videoprism.masks.base import MaskGenerator, TokenGrid


class RandomMaskGenerator(MaskGenerator):
    """Uniformly random token masking at an exact ratio."""

    name = "random"

    def sample_mask(self, batch_size: int, grid: TokenGrid, generator: torch.Generator) -> torch.Tensor:
        m = self.num_masked(grid)
        noise = torch.rand(batch_size, grid.num_tokens, generator=generator)
        # The m smallest noise values are masked: an exact count, a uniform subset.
        ranks = noise.argsort(dim=-1).argsort(dim=-1)
        return (ranks < m).view(batch_size, grid.frames, grid.height, grid.width)
