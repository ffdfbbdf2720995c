"""The data configuration shared by pretraining and evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from open_videoprism.errors import ConfigError


@dataclass
class VideoDataConfig:
    """How clips are sampled, transformed and batched (see docs/data.md)."""

    num_frames: int = 16          # T
    image_size: int = 288         # output H == W (divisible by the patch size, 18)
    frame_stride: int = 2         # "random"/"multiclip": T frames every `stride` frames
    sampling: str = "random"      # "random" (train) | "uniform" (official linspace) | "multiclip"
    num_clips: int = 1            # for "multiclip": video is [B, K, T, 3, H, W]
    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = False           # off: flipping swaps the synthetic left/right motion labels
    max_text_length: int = 64
    max_failure_ratio: float = 0.1
    label_field: str = "label"    # manifest field used as `label` ("motion_label" for the synthetic motion task)
    num_classes: int | None = None  # needed only for multi-label (list) labels -> multi-hot
    decode_threads: int = 0       # PyAV decoder threads per sample (0: auto, threaded from 256x256 frames up)
    shuffle_buffer: int = 256     # WebDataset sources: samples in the shuffling buffer
    decode_cache_mb: int = 0      # keep up to this many MB of decoded videos in memory (small corpora; 0: off)

    def __post_init__(self) -> None:
        if self.sampling not in ("random", "uniform", "multiclip"):
            raise ConfigError(f"sampling must be 'random', 'uniform' or 'multiclip', got {self.sampling!r}")
        if self.num_frames < 1 or self.image_size < 1 or self.frame_stride < 1 or self.num_clips < 1:
            raise ConfigError("num_frames, image_size, frame_stride and num_clips must be positive")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if self.decode_cache_mb < 0:
            raise ConfigError(f"decode_cache_mb must be >= 0, got {self.decode_cache_mb}")
        if not 0 <= self.max_failure_ratio <= 1:
            raise ConfigError(f"max_failure_ratio must be in [0, 1], got {self.max_failure_ratio}")
        self.crop_scale = (float(lo), float(hi))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoDataConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown data config keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "crop_scale" in d:
            d["crop_scale"] = tuple(d["crop_scale"])
        return cls(**d)
