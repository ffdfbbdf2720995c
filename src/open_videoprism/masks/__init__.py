"""Mask generators for masked video modelling, as batch collators.

>>> from open_videoprism.masks import MaskCollator, build_mask_generator
>>> collate = MaskCollator(build_mask_generator(MaskConfig(type="bevt", ratio=0.65)), patch_size=18)
>>> batch = collate({"video": video, "index": index})   # adds visible_idx [B, V], masked_idx [B, M]

See docs/stage2.md for the structure of each mask and the design choices.
"""

from open_videoprism.masks.base import MaskGenerator, MaskIndices, TokenGrid, mask_to_indices
from open_videoprism.masks.bevt import BEVTMaskGenerator
from open_videoprism.masks.collator import MASK_TYPES, MaskCollator, MaskConfig, build_mask_generator
from open_videoprism.masks.random import RandomMaskGenerator
from open_videoprism.masks.tube import TubeMaskGenerator

__all__ = [
    "BEVTMaskGenerator",
    "MASK_TYPES",
    "MaskCollator",
    "MaskConfig",
    "MaskGenerator",
    "MaskIndices",
    "RandomMaskGenerator",
    "TokenGrid",
    "TubeMaskGenerator",
    "build_mask_generator",
    "mask_to_indices",
]
