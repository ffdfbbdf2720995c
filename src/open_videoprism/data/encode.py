"""Writing frame arrays as video files with PyAV (h264, yuv420p), atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from open_videoprism.atomic import atomic_path


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 8.0,
    *,
    codec: str = "libx264",
    crf: int = 18,
    preset: str = "veryfast",
    threads: int = 1,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 ``[T, H, W, 3]`` RGB frames to ``path`` (mp4 unless the suffix says otherwise).

    Written to a temporary file in the same folder, then renamed: a reader never
    sees a half-written video, and an interrupted job leaves no broken file.
    ``crf`` 18 keeps saturated colours and single-pixel-step grey levels close
    to the input even after the yuv420p chroma subsampling. H and W must be even.
    ``options`` are extra encoder options (e.g. ``{"g": "10"}`` for a key frame
    every 10 frames), ``container_options`` muxer options (``{"movflags": "faststart"}``).
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {h}x{w}")
    path = Path(path)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4" if path.suffix.lower() in (".mp4", "") else None,
                 options=container_options or {}) as container:
        from fractions import Fraction

        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads), **(options or {})}
        elif options:
            stream.options = dict(options)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
