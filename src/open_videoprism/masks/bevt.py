"""BEVT block-wise masking: a 2-D BEiT block mask repeated over a temporal span.

BEVT (its ``mask_generator.py``; paper Sec. 2.3.2) draws a BEiT
block mask on the ``H' x W'`` grid -- rectangles of random area and
log-uniform aspect ratio, counting only newly masked cells, until the target
is reached -- and copies it onto a random contiguous span of frames (the span
wraps around the clip end). VideoPrism uses "BEVT masking at ratio 0.65"
without giving the parameters, so this generator is made *exact*:

1. Span length ``s`` uniform in ``span_range * T``, raised to at least
   ``ceil(M / N)`` frames so that ``M = round(ratio * T * N)`` cells fit in it.
   Random start, wrapping.
2. A 2-D block mask ``B`` of exactly ``a = M // s`` cells: BEiT rectangles
   (area uniform in [min block, remaining], aspect in ``aspect_range``,
   accepted only if their new cells fit), then, if the rectangles stall short
   of ``a``, single cells next to the block (``B`` stays one connected blob
   as far as possible).
3. ``B`` is masked in every span frame; the ``r = M - s * a < s`` leftover
   cells are one extra cell ``e`` next to ``B``, masked in the first ``r``
   frames of the span.

So every sample has exactly ``M`` masked tokens, the span frames share the
block ``B`` (differing by at most the one cell ``e``), and frames outside the
span are fully visible. ``span_range=(1, 1)`` (the default in
configs/stage2-*.yaml) puts the block in every frame -- a "block tube" whose
equal per-frame visible counts make the student cheapest; see docs/stage2.md.

Everything is vectorised over the batch: each iteration proposes one
rectangle per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from open_videoprism.errors import ConfigError
from open_videoprism.masks.base import MaskGenerator, TokenGrid, ceil_div, uniform_int


class BEVTMaskGenerator(MaskGenerator):
    """Exact-ratio BEVT block masking.

    Args:
        ratio: fraction of the clip's tokens to mask.
        span_range: ``(lo, hi)`` fractions of the clip length for the span of
            masked frames (BEVT: (0.5, 1.0)); raised to what the ratio needs.
        min_block: smallest rectangle as a fraction of a frame's tokens (BEVT:
            16 of 196 patches); at least one cell.
        aspect_range: ``(lo, hi)`` rectangle aspect ratios, sampled log-uniformly
            (BEiT: (0.3, 1 / 0.3)).
        max_rectangles: rectangle proposals per sample before the top-up.
    """

    name = "bevt"

    def __init__(
        self,
        ratio: float,
        span_range: tuple[float, float] = (1.0, 1.0),
        min_block: float = 16 / 196,
        aspect_range: tuple[float, float] = (0.3, 1 / 0.3),
        max_rectangles: int = 64,
    ) -> None:
        super().__init__(ratio)
        lo, hi = (float(x) for x in span_range)
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"mask.span_range must satisfy 0 < lo <= hi <= 1; got {span_range}")
        a_lo, a_hi = (float(x) for x in aspect_range)
        if not 0.0 < a_lo <= a_hi:
            raise ConfigError(f"mask.aspect_range must satisfy 0 < lo <= hi; got {aspect_range}")
        if not 0.0 < min_block <= 1.0:
            raise ConfigError(f"mask.min_block must be in (0, 1]; got {min_block}")
        if max_rectangles < 1:
            raise ConfigError(f"mask.max_rectangles must be >= 1; got {max_rectangles}")
        self.span_range = (lo, hi)
        self.min_block = float(min_block)
        self.aspect_range = (a_lo, a_hi)
        self.max_rectangles = int(max_rectangles)

    # -- the pieces, public so tests can check each structure -------------------

    def sample_span(self, batch_size: int, grid: TokenGrid, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(start [B], length [B])`` of the masked span of frames."""
        t, n = grid.frames, grid.tokens_per_frame
        need = ceil_div(self.num_masked(grid), n)
        lo = max(math.ceil(self.span_range[0] * t - 1e-9), need, 1)
        hi = max(math.floor(self.span_range[1] * t + 1e-9), lo)
        length = uniform_int(lo, min(hi, t), (batch_size,), generator)
        start = uniform_int(0, t - 1, (batch_size,), generator)
        return start, length

    def sample_blocks(self, target: torch.Tensor, grid: TokenGrid, generator: torch.Generator) -> torch.Tensor:
        """``[B, H', W']`` bool 2-D masks with exactly ``target[b]`` cells each.

        BEiT's rectangle sampler, run for all samples at once, then a top-up
        with cells adjacent to the block for the few the rectangles missed.
        """
        b, h, w = target.shape[0], grid.height, grid.width
        n = h * w
        target = target.long()
        if bool((target > n).any()):
            raise ValueError("block target larger than the frame")
        mask = torch.zeros(b, h, w, dtype=torch.bool)
        count = torch.zeros(b, dtype=torch.long)
        min_area = max(1, round(self.min_block * n))
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        log_lo, log_hi = math.log(self.aspect_range[0]), math.log(self.aspect_range[1])
        for _ in range(self.max_rectangles):
            remaining = target - count
            active = remaining > 0
            if not bool(active.any()):
                break
            # BEiT: area ~ U(min_area, remaining); aspect log-uniform.
            hi_area = remaining.clamp(min=min_area).double()
            area = min_area + torch.rand(b, generator=generator, dtype=torch.float64) * (hi_area - min_area)
            aspect = torch.exp(log_lo + torch.rand(b, generator=generator, dtype=torch.float64) * (log_hi - log_lo))
            rh = torch.sqrt(area * aspect).round().long().clamp(1, h)
            rw = torch.sqrt(area / aspect).round().long().clamp(1, w)
            top = uniform_int(0, h - rh, (b,), generator)
            left = uniform_int(0, w - rw, (b,), generator)
            rect = (
                (rows >= top.view(b, 1, 1)) & (rows < (top + rh).view(b, 1, 1))
                & (cols >= left.view(b, 1, 1)) & (cols < (left + rw).view(b, 1, 1))
            )
            new = (rect & ~mask).flatten(1).sum(-1)
            accept = active & (new > 0) & (new <= remaining)
            mask |= rect & accept.view(b, 1, 1)
            count += torch.where(accept, new, torch.zeros_like(new))
        remaining = target - count
        if bool((remaining > 0).any()):
            mask = self._grow(mask, remaining, generator)
        return mask

    def _grow(self, mask: torch.Tensor, need: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Add ``need[b]`` unmasked cells to each mask, cells touching it first."""
        b, h, w = mask.shape
        touching = F.max_pool2d(mask[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
        noise = torch.rand(b, h, w, generator=generator)
        # Order: free cells touching the block, other free cells, then masked cells.
        score = noise + (~touching).float() + 2.0 * mask.float()
        ranks = score.flatten(1).argsort(-1).argsort(-1).view(b, h, w)
        return mask | (ranks < need.view(b, 1, 1))

    # -- the generator -----------------------------------------------------------

    def sample_mask(self, batch_size: int, grid: TokenGrid, generator: torch.Generator) -> torch.Tensor:
        t = grid.frames
        m = self.num_masked(grid)
        start, length = self.sample_span(batch_size, grid, generator)
        per_frame = m // length
        leftover = m - per_frame * length  # < length
        block = self.sample_blocks(per_frame, grid, generator)
        extra = self._grow(block, (leftover > 0).long(), generator) & ~block
        # Position of each frame inside its sample's span (span frames: 0..length-1).
        offset = (torch.arange(t).view(1, t) - start.view(-1, 1)) % t
        in_span = offset < length.view(-1, 1)
        with_extra = offset < leftover.view(-1, 1)
        return (
            (block[:, None] & in_span[..., None, None])
            | (extra[:, None] & with_extra[..., None, None])
        )
