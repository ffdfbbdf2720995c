"""Which frames of a video make a clip.

All functions return ``int64`` numpy arrays of frame indices in ``[0, n)``.
Randomness comes from an explicit :class:`numpy.random.Generator`, never from
global state, so the loader can derive it from (seed, epoch, sample index).

- :func:`uniform_indices`: the official VideoPrism sampling, ``T`` frames spread
  over the whole video, ``np.linspace(0, n, T, endpoint=False)`` truncated to int.
- :func:`random_clip_indices`: ``T`` frames every ``stride`` frames from a random
  start (training).
- :func:`multiclip_indices`: ``K`` evenly spaced clips of ``T`` frames with stride
  ``stride`` (multi-clip evaluation), ``[K, T]``.
- :func:`time_range` : the frame span of ``[start, end)`` seconds, to combine
  with the above for clips cut from long videos.

Videos shorter than a clip repeat their last frame (the clip keeps its temporal
spacing at the start and then holds still), as SlowFast/VideoMAE loaders do.
"""

from __future__ import annotations

import numpy as np

SAMPLING_STRATEGIES = ("uniform", "random", "multiclip")


def _check(n: int, num_frames: int) -> None:
    if n <= 0:
        raise ValueError(f"a video needs at least one frame, got n={n}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")


def uniform_indices(n: int, num_frames: int, offset: int = 0) -> np.ndarray:
    """The official sampling: ``np.linspace(0, n, num_frames, endpoint=False).astype(int32)`` (+ offset)."""
    _check(n, num_frames)
    return np.linspace(0, n, num=num_frames, endpoint=False, dtype=np.int32).astype(np.int64) + offset


def _clip(start: int, n: int, num_frames: int, stride: int) -> np.ndarray:
    idx = start + stride * np.arange(num_frames, dtype=np.int64)
    return np.minimum(idx, n - 1)


def random_clip_indices(
    n: int, num_frames: int, stride: int, rng: np.random.Generator, offset: int = 0
) -> np.ndarray:
    """``num_frames`` frames ``stride`` apart, starting at a uniformly random valid frame."""
    _check(n, num_frames)
    span = (num_frames - 1) * stride + 1
    start = int(rng.integers(0, n - span + 1)) if n > span else 0
    return _clip(start, n, num_frames, stride) + offset


def center_clip_indices(n: int, num_frames: int, stride: int, offset: int = 0) -> np.ndarray:
    """The clip of :func:`random_clip_indices` placed in the middle (deterministic evaluation)."""
    _check(n, num_frames)
    span = (num_frames - 1) * stride + 1
    start = max(0, (n - span) // 2)
    return _clip(start, n, num_frames, stride) + offset


def multiclip_indices(n: int, num_frames: int, stride: int, num_clips: int, offset: int = 0) -> np.ndarray:
    """``[num_clips, num_frames]``: clips with evenly spaced starts covering the video.

    The first clip starts at frame 0 and the last ends at the last frame (when
    the video is long enough); starts are ``linspace(0, n - span, K)`` rounded.
    """
    _check(n, num_frames)
    if num_clips <= 0:
        raise ValueError(f"num_clips must be positive, got {num_clips}")
    span = (num_frames - 1) * stride + 1
    last_start = max(0, n - span)
    starts = np.round(np.linspace(0, last_start, num_clips)).astype(np.int64)
    return np.stack([_clip(int(s), n, num_frames, stride) for s in starts]) + offset


def time_range(fps: float, n: int, start: float | None, end: float | None) -> tuple[int, int]:
    """Frames ``[first, last_exclusive)`` covering ``[start, end)`` seconds, clamped to the video.

    A frame belongs to the range when its timestamp ``i / fps`` lies in it.
    Always at least one frame long.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    first = 0 if start is None else int(np.ceil(start * fps - 1e-6))
    stop = n if end is None else int(np.ceil(end * fps - 1e-6))
    first = min(max(first, 0), n - 1)
    stop = min(max(stop, first + 1), n)
    return first, stop


def sample_indices(
    strategy: str,
    n: int,
    num_frames: int,
    *,
    stride: int = 1,
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
    offset: int = 0,
) -> np.ndarray:
    """Dispatch by name; returns ``[T]`` (uniform, random) or ``[K, T]`` (multiclip).

    ``random`` without ``rng`` gives the centre clip (evaluation of a training sampler).
    """
    if strategy == "uniform":
        return uniform_indices(n, num_frames, offset)
    if strategy == "random":
        if rng is None:
            return center_clip_indices(n, num_frames, stride, offset)
        return random_clip_indices(n, num_frames, stride, rng, offset)
    if strategy == "multiclip":
        return multiclip_indices(n, num_frames, stride, num_clips, offset)
    raise ValueError(f"unknown sampling {strategy!r}; choose one of {', '.join(SAMPLING_STRATEGIES)}")
