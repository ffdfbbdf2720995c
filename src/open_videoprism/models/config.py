"""Model configs as data: plain dataclasses that round-trip through JSON.

A checkpoint written by this library stores ``VideoPrismConfig.to_dict()`` in
its metadata, so a file always knows how to rebuild its model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from open_videoprism.config import build


@dataclass
class VisionConfig:
    """The factorized video encoder.

    ``grid`` x ``grid`` patches and ``num_frames`` frames are the sizes of the
    learned position tables; other sizes are served by resizing them.
    """

    patch_size: int = 18
    grid: int = 16
    num_frames: int = 16
    width: int = 768
    spatial_layers: int = 12
    temporal_layers: int = 4
    num_heads: int = 12
    mlp_dim: int = 3072
    logit_cap: float = 50.0

    @property
    def image_size(self) -> int:
        return self.patch_size * self.grid


@dataclass
class TextConfig:
    """The CoCa-style causal text encoder (class token appended last)."""

    vocab_size: int = 32_000
    width: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    logit_cap: float = 50.0
    norm_policy: str = "pre"
    max_length: int = 64


@dataclass
class VideoPrismConfig:
    """A whole model: video encoder, optional video-text parts.

    ``pooler_dim`` > 0 adds the attention-pooling head that gives the global
    video embedding (its q/k/v width; the official LvT uses 4 x width).
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    auxiliary_layers: int = 0
    pooler_dim: int = 0
    text: TextConfig | None = None

    @property
    def has_pooler(self) -> bool:
        return self.pooler_dim > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model config") -> VideoPrismConfig:
        """Strictly typed: an unknown key or a wrong type fails naming it."""
        return build(cls, [(source, d)], source=source)

    @classmethod
    def from_json(cls, s: str) -> VideoPrismConfig:
        return cls.from_dict(json.loads(s))
