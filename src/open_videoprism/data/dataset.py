"""Turning one sample description into tensors: decode, sample frames, transform, pick a caption.

:class:`ClipSampler` is the per-sample work shared by the manifest loader, the
WebDataset reader and ``videoprism check-data``. It is a pure function of the
sample, the config and a numpy generator, which the loaders derive from
(seed, epoch, sample index).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from open_videoprism.data.config import VideoDataConfig
from open_videoprism.data.decode import DecodeError, VideoReader
from open_videoprism.data.manifest import ManifestEntry
from open_videoprism.data.sampling import sample_indices, time_range
from open_videoprism.data.transforms import VideoTransform

NO_CAPTION = "no_caption"
BAD_TIME_RANGE = "bad_time_range"


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample's randomness (clip start, crop, flip, caption)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, 0x5EED])


class MemoryVideo:
    """A decoded video held in memory, read through :class:`VideoReader`'s interface."""

    def __init__(self, frames: np.ndarray, fps: float) -> None:
        self.frames, self.fps, self.num_frames = frames, fps, len(frames)

    def __enter__(self) -> MemoryVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        return self.frames[np.clip(np.asarray(indices, dtype=np.int64), 0, self.num_frames - 1)]


class DecodedVideoCache:
    """Least-recently-used decoded videos, bounded in bytes.

    Small corpora (the synthetic benchmark: 600 clips of 16 x 72 x 72 take 150 MB) are
    read every epoch; decoding them again dominates a tiny model's step (3x its compute on 2 CPU
    cores). One cache per budget is shared by every loader of a process (:func:`shared_cache`),
    so runs after the first one in a process (``videoprism reproduce``) decode nothing; loader
    workers hold their own copies, so it pays with ``num_workers: 0`` or persistent workers.
    Keys include the file's size and modification time: a rewritten file is decoded again.
    A video larger than the budget is never cached.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, MemoryVideo] = OrderedDict()

    def get(self, key: str) -> MemoryVideo | None:
        video = self._items.get(key)
        if video is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return video

    def put(self, key: str, video: MemoryVideo) -> None:
        size = video.frames.nbytes
        if size > self.max_bytes or key in self._items:
            return
        while self._items and self.bytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.frames.nbytes
        self._items[key] = video
        self.bytes += size


_SHARED: dict[int, DecodedVideoCache] = {}


def shared_cache(max_bytes: int) -> DecodedVideoCache:
    """The process's decoded-video cache of this budget."""
    if max_bytes not in _SHARED:
        _SHARED[max_bytes] = DecodedVideoCache(max_bytes)
    return _SHARED[max_bytes]


def _cache_key(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # the reader reports the missing file with its reason
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}"


@dataclass
class ClipSampler:
    """Loads one sample: ``entry`` (+ optional bytes) -> ``{"video", "caption", "label", ...}``.

    ``require_caption``: an entry without text is a bad sample (reason ``no_caption``), skipped
    and counted like an undecodable video, instead of a batch without ``caption`` further on.
    Loaders set it when they tokenize captions (stage 1 and retrieval need a text per video).
    """

    cfg: VideoDataConfig
    training: bool
    require_caption: bool = False

    def __post_init__(self) -> None:
        self.transform = VideoTransform(
            size=self.cfg.image_size, training=self.training,
            random_resized_crop=self.cfg.random_resized_crop, crop_scale=self.cfg.crop_scale, hflip=self.cfg.hflip,
        )
        mb = self.cfg.decode_cache_mb
        self.cache = shared_cache(mb * 2**20) if mb > 0 else None

    def open(self, entry: ManifestEntry, data: bytes | None = None) -> VideoReader | MemoryVideo:
        """A reader for ``entry``: from the decoded-video cache when enabled (whole video decoded once)."""
        cache = self.cache
        key = _cache_key(entry.path) if cache is not None and data is None else None
        if cache is None or key is None:
            return VideoReader(entry.path, threads=self.cfg.decode_threads, data=data)
        video = cache.get(key)
        if video is None:
            with VideoReader(entry.path, threads=self.cfg.decode_threads) as reader:
                video = MemoryVideo(reader.get_frames(np.arange(reader.num_frames)), reader.fps)
            cache.put(key, video)
        return video

    def frame_indices(self, reader: VideoReader | MemoryVideo, entry: ManifestEntry, rng: np.random.Generator | None) -> np.ndarray:
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
        if self.require_caption and not entry.captions:
            raise DecodeError(entry.path, NO_CAPTION, "no 'caption' or 'captions' text; video-text training needs one")
        if entry.start is not None and entry.end is not None and entry.start >= entry.end:
            raise DecodeError(entry.path, BAD_TIME_RANGE, f"start {entry.start} s is not before end {entry.end} s")
        try:
            with (VideoReader(entry.path, threads=self.cfg.decode_threads, data=data) if check_tail
                  else self.open(entry, data)) as reader:
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
