"""Turning one sample description into tensors: decode, sample frames, transform, pick a caption.

:class:`ClipSampler` is the per-sample work shared by the manifest loader, the
WebDataset reader and ``videoprism check-data``. It is a pure function of the
sample, the config and a numpy generator, which the loaders derive from
(seed, epoch, sample index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from open_videoprism.data.config import VideoDataConfig
from open_videoprism.data.decode import DecodeError, VideoReader
from open_videoprism.data.manifest import ManifestEntry
from open_videoprism.data.sampling import sample_indices, time_range
from open_videoprism.data.transforms import VideoTransform


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample's randomness (clip start, crop, flip, caption)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, 0x5EED])


@dataclass
class ClipSampler:
    """Loads one sample: ``entry`` (+ optional bytes) -> ``{"video", "caption", "label", ...}``."""

    cfg: VideoDataConfig
    training: bool

    def __post_init__(self) -> None:
        self.transform = VideoTransform(
            size=self.cfg.image_size, training=self.training,
            random_resized_crop=self.cfg.random_resized_crop, crop_scale=self.cfg.crop_scale, hflip=self.cfg.hflip,
        )

    def frame_indices(self, reader: VideoReader, entry: ManifestEntry, rng: np.random.Generator | None) -> np.ndarray:
        n, offset = reader.num_frames, 0
        if entry.start is not None or entry.end is not None:
            first, stop = time_range(reader.fps, n, entry.start, entry.end)
            n, offset = stop - first, first
        return sample_indices(
            self.cfg.sampling, n, self.cfg.num_frames, stride=self.cfg.frame_stride,
            num_clips=self.cfg.num_clips, rng=rng if self.training else None, offset=offset,
        )

    def load(self, entry: ManifestEntry, rng: np.random.Generator, data: bytes | None = None,
             check_tail: bool = False) -> dict[str, Any]:
        """Decode and transform; raises :class:`DecodeError` (with a ``reason``) on bad input.

        ``check_tail`` also decodes the last frame of the video (or of its time
        range), so a truncated file is caught even when the sampled clip lies
        in its intact part (``videoprism check-data`` uses it).
        """
        try:
            with VideoReader(entry.path, threads=self.cfg.decode_threads, data=data) as reader:
                idx = self.frame_indices(reader, entry, rng)
                flat = idx.reshape(-1)
                if check_tail:
                    last = reader.num_frames - 1
                    if entry.end is not None:
                        last = time_range(reader.fps, reader.num_frames, entry.start, entry.end)[1] - 1
                    flat = np.concatenate([flat, [last]])
                frames = reader.get_frames(flat)[: idx.size]
        except DecodeError:
            raise
        except (OSError, ValueError, RuntimeError, MemoryError) as exc:
            # PyAV/FFmpeg surface some damage as generic errors (bad dims, EOF).
            raise DecodeError(entry.path, "corrupt", f"{type(exc).__name__}: {exc}") from None
        if frames.ndim != 4 or frames.shape[1] < 2 or frames.shape[2] < 2:
            raise DecodeError(entry.path, "corrupt", f"unusable frame shape {frames.shape}")
        if idx.ndim == 2:  # multiclip: the same crop for every clip of the sample
            k, t = idx.shape
            video = self.transform(frames, rng if self.training else None).reshape(
                k, t, 3, self.cfg.image_size, self.cfg.image_size)
        else:
            video = self.transform(frames, rng if self.training else None)
        sample: dict[str, Any] = {"video": video, "path": entry.path}
        if entry.captions:
            i = int(rng.integers(len(entry.captions))) if self.training else 0
            sample["caption"] = entry.captions[i]
        label = entry.label(self.cfg.label_field)
        if label is not None:
            sample["label"] = label
        return sample


def collate(samples: list[dict[str, Any]], cfg: VideoDataConfig, tokenizer=None) -> dict[str, Any]:
    """Stack samples into the batch dict of docs/architecture.md."""
    batch: dict[str, Any] = {
        "video": torch.stack([s["video"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "path": [s["path"] for s in samples],
    }
    if all("caption" in s for s in samples):
        batch["caption"] = [s["caption"] for s in samples]
        if tokenizer is not None:
            batch["text_ids"], batch["text_paddings"] = tokenizer(batch["caption"], cfg.max_text_length)
    if all("label" in s for s in samples):
        labels = [s["label"] for s in samples]
        if any(isinstance(lab, list) for lab in labels):
            if cfg.num_classes is None:
                from open_videoprism.errors import ConfigError

                raise ConfigError("multi-label samples (label lists) need VideoDataConfig.num_classes for multi-hot labels")
            hot = torch.zeros(len(labels), cfg.num_classes)
            for i, lab in enumerate(labels):
                hot[i, lab if isinstance(lab, list) else [lab]] = 1.0
            batch["label"] = hot
        else:
            batch["label"] = torch.tensor(labels, dtype=torch.long)
    return batch
