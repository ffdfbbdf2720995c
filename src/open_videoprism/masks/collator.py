"""Mask generators as batch collators (V-JEPA ``src/masks`` style).

:class:`MaskCollator` takes a collated batch dict and adds ``visible_idx``
``[B, V]`` and ``masked_idx`` ``[B, M]`` (docs/architecture.md). It is what a
stage-2 objective exposes as ``collate_fn``; the data loader runs it after its
own collation, possibly in worker processes.

Seeding: the masks of a batch are a pure function of ``(seed, the batch's
sample indices)`` (``batch["index"]``), never of global RNG state or worker
identity -- the same principle as the data loader's randomness, so masks are
identical whatever the worker count and across resume. (A given sample gets a
different mask whenever it lands in a different batch, i.e. every epoch.)
Batches without ``index`` fall back to a per-collator call counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from open_videoprism.errors import ConfigError
from open_videoprism.masks.base import MaskGenerator, MaskIndices, TokenGrid, check_ratio
from open_videoprism.masks.bevt import BEVTMaskGenerator
from open_videoprism.masks.random import RandomMaskGenerator
from open_videoprism.masks.tube import TubeMaskGenerator

MASK_TYPES: dict[str, type[MaskGenerator]] = {
    "bevt": BEVTMaskGenerator,
    "tube": TubeMaskGenerator,
    "random": RandomMaskGenerator,
}


@dataclass
class MaskConfig:
    """The ``mask:`` section of a stage-2 config.

    Attributes:
        type: ``bevt`` (paper default), ``tube`` or ``random``.
        ratio: fraction of tokens masked (paper: 0.65).
        span_range: BEVT only: span of masked frames as fractions of T.
        min_block: BEVT only: smallest rectangle, fraction of a frame.
        aspect_range: BEVT only: rectangle aspect ratios (log-uniform).
        seed: base seed of the collator.
    """

    type: str = "bevt"
    ratio: float = 0.65
    span_range: tuple[float, float] = (1.0, 1.0)
    min_block: float = 16 / 196
    aspect_range: tuple[float, float] = (0.3, 1 / 0.3)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.type not in MASK_TYPES:
            raise ConfigError(f"type: unknown mask {self.type!r}; choose one of {', '.join(MASK_TYPES)}")
        check_ratio(self.ratio)


def build_mask_generator(cfg: MaskConfig) -> MaskGenerator:
    """The generator a :class:`MaskConfig` describes."""
    if cfg.type not in MASK_TYPES:
        raise ConfigError(f"unknown mask.type {cfg.type!r}; choose one of {sorted(MASK_TYPES)}")
    if cfg.type == "bevt":
        return BEVTMaskGenerator(cfg.ratio, cfg.span_range, cfg.min_block, cfg.aspect_range)
    return MASK_TYPES[cfg.type](cfg.ratio)


@dataclass
class MaskCollator:
    """Adds ``visible_idx`` / ``masked_idx`` to a batch dict.

    Args:
        generator: the mask generator.
        patch_size: the model's patch size (the token grid comes from the video shape).
        seed: base seed (see the module docstring).
    """

    generator: MaskGenerator
    patch_size: int = 18
    seed: int = 0
    _calls: int = field(default=0, init=False, repr=False)

    def seed_for(self, batch: Mapping[str, Any]) -> int:
        """The 64-bit seed of this batch's masks (see the module docstring)."""
        index = batch.get("index")
        if index is not None:
            indices = np.asarray(torch.as_tensor(index).cpu(), dtype=np.int64).ravel()
            entropy = [int(self.seed), *(int(i) for i in indices)]
        else:  # no sample identity: fall back to this collator's call count
            entropy = [int(self.seed), 1 << 32, self._calls]
        return int(np.random.SeedSequence([abs(x) for x in entropy]).generate_state(1, np.uint64)[0])

    def sample(self, batch_size: int, grid: TokenGrid, seed: int) -> MaskIndices:
        return self.generator(batch_size, grid, torch.Generator().manual_seed(seed))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        video = batch.get("video")
        if video is None:
            raise KeyError("MaskCollator needs batch['video'] [B, T, 3, H, W] to size the token grid")
        grid = TokenGrid.from_video(video.shape, self.patch_size)
        seed = self.seed_for(batch)
        self._calls += 1
        idx = self.sample(video.shape[0], grid, seed)
        batch["visible_idx"] = idx.visible
        batch["masked_idx"] = idx.masked
        return batch
