"""Decoding videos (and images, as 1-frame videos) into frame arrays with PyAV.

:class:`VideoReader` opens a file once, tells its frame count and frame rate,
and decodes only the frames asked for: it seeks to the key frame before the
first wanted frame (so a clip cut from the middle of a long file does not
decode the whole file) and stops after the last one. :func:`read_video` is the
one-call form.

Frames come back as ``uint8 [T, H, W, 3]`` numpy arrays (RGB); use
:func:`to_tensor` for ``float [T, 3, H, W]`` in [0, 1].

Every failure is raised as :class:`DecodeError` with a short ``reason``
(``missing``, ``empty``, ``not_video``, ``no_video_stream``, ``corrupt``,
``truncated``) so that the robust loading layer can count skips by reason.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from open_videoprism.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})

# Seeking costs a container-level seek plus decoding from the previous key
# frame; for wanted frames close to the start, decoding straight through is
# cheaper and immune to imprecise seeks in badly muxed files.
_SEEK_MIN_SECONDS = 2.0
# Decoder threads only pay off from about this frame size (measured on 72x72
# vs 512x512 h264: threads slow small frames down).
_THREADS_MIN_PIXELS = 256 * 256


class DecodeError(DataError):
    """A video could not be decoded; ``reason`` is a short category for skip counters."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{path}: cannot decode ({reason})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


def _classify_av_error(exc: Exception) -> str:
    text = str(exc).lower()
    if "invalid data" in text or "moov atom" in text or "not found" in text:
        return "not_video"
    return "corrupt"


class VideoReader:
    """Random access to the frames of one video (or image) file.

    >>> with VideoReader("clip.mp4") as r:
    ...     frames = r.get_frames(uniform_indices(r.num_frames, 16))   # uint8 [16, H, W, 3]
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0, *, data: bytes | None = None) -> None:
        # `data`: the file's bytes (a WebDataset member); `path` then only names it.
        self.path = Path(path)
        self._data = data
        if data is None:
            if not self.path.exists():
                raise DecodeError(path, "missing", "file not found")
            if not self.path.is_file():
                raise DecodeError(path, "not_video", "not a regular file")
            if self.path.stat().st_size == 0:
                raise DecodeError(path, "empty", "zero bytes")
        elif len(data) == 0:
            raise DecodeError(path, "empty", "zero bytes")
        self.is_image = self.path.suffix.lower() in IMAGE_EXTENSIONS
        self._container: Any = None  # av.container.InputContainer once opened
        self._read_before = False  # a fresh container needs no rewind
        self._image: np.ndarray | None = None
        if self.is_image:
            self._open_image()
        else:
            self._open_video(threads)

    # -- opening ---------------------------------------------------------
    def _open_image(self) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(self._data) if self._data is not None else self.path) as im:
                self._image = np.asarray(im.convert("RGB"))[None]
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DecodeError(self.path, "not_video", f"unreadable image ({exc})") from None
        self.fps = 1.0
        self.num_frames = 1
        self.height, self.width = self._image.shape[1:3]

    def _open_video(self, threads: int) -> None:
        self._threads = threads
        self._open_container()
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            self.close()
            raise DecodeError(self.path, "corrupt", "the video stream has no frame rate")
        self._rate = Fraction(rate)
        self.fps = float(self._rate)
        self._time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
        self._start_pts = stream.start_time or 0
        self.height, self.width = stream.codec_context.height, stream.codec_context.width
        n = stream.frames
        if not n:
            dur = None
            if stream.duration:
                dur = float(stream.duration * self._time_base)
            elif self._container.duration:
                dur = self._container.duration / 1_000_000
            n = int(round(dur * self.fps)) if dur else 0
        if n <= 0:
            # Neither the header nor the duration tells: count by demuxing.
            n = sum(1 for p in self._container.demux(stream) if p.size)
            self._rewind()
            self._read_before = False
        self.num_frames = int(n)
        if self.num_frames <= 0:
            self.close()
            raise DecodeError(self.path, "corrupt", "the video stream has no frames")

    def _open_container(self) -> None:
        import av

        try:
            src = io.BytesIO(self._data) if self._data is not None else str(self.path)
            self._container = av.open(src, metadata_errors="ignore")
        except (av.FFmpegError, ValueError) as exc:
            raise DecodeError(self.path, _classify_av_error(exc), str(exc)) from None
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError(self.path, "no_video_stream", "the file has no video stream")
        stream = self._container.streams.video[0]
        cc = stream.codec_context
        if cc is None:  # a damaged header naming no codec FFmpeg knows
            self._container.close()
            raise DecodeError(self.path, "corrupt", "no decoder for the video stream")
        threads = self._threads
        if threads == 1 or (threads == 0 and cc.width * cc.height < _THREADS_MIN_PIXELS):
            # Small frames: thread start-up costs more than it saves.
            cc.thread_count = 1
        else:
            # "AUTO" lets FFmpeg choose frame or slice threads per codec.
            stream.thread_type = "AUTO"
            if threads:
                cc.thread_count = threads
        self._stream = stream

    def _rewind(self) -> None:
        """Back to the first frame: seek, or reopen where the input cannot seek (a raw .h264 stream)."""
        import av

        assert self._container is not None
        try:
            self._container.seek(0)
        except av.FFmpegError:
            self._container.close()
            self._open_container()

    # -- reading ---------------------------------------------------------
    @property
    def duration(self) -> float:
        """Length in seconds (``num_frames / fps``)."""
        return self.num_frames / self.fps

    def _frame_index(self, frame) -> int:
        if frame.pts is None:
            return -1
        t = (frame.pts - self._start_pts) * self._time_base
        return int(round(t * self._rate))

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed) -> uint8 ``[T, H, W, 3]``.

        Headers often overstate the length by a frame or two; wanted frames
        past the last decodable one are then served with the last decoded
        frame, as long as the stream ends within 5% (at least 2 frames) of the
        length the header claims. A file that ends earlier raises
        :class:`DecodeError` ``truncated``.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("get_frames needs at least one index")
        if idx.min() < 0:
            raise ValueError(f"negative frame index {int(idx.min())}")
        if self.is_image:
            assert self._image is not None
            return np.repeat(self._image, idx.size, axis=0)
        wanted = np.unique(idx)
        got, last_seen = self._decode_range(int(wanted[0]), int(wanted[-1]), set(wanted.tolist()))
        missing = [i for i in wanted.tolist() if i not in got]
        if missing:
            slack = max(2, int(0.05 * self.num_frames))
            tail_only = bool(got) and min(missing) > last_seen
            if not tail_only or max(missing) - last_seen > slack:
                raise DecodeError(
                    self.path, "truncated",
                    f"decoded {len(wanted) - len(missing)} of {len(wanted)} wanted frames; the stream ends "
                    f"at frame {last_seen} but the header says {self.num_frames} frames",
                )
            last = got[max(got)]
            for i in missing:
                got[i] = last
        return np.stack([got[int(i)] for i in idx])

    def _decode_range(
        self, first: int, last: int, wanted: set[int], allow_seek: bool = True
    ) -> tuple[dict[int, np.ndarray], int]:
        """Decoded wanted frames and the highest frame index seen (-1: none)."""
        import av

        assert self._container is not None
        out: dict[int, np.ndarray] = {}
        seen = -1
        seek = allow_seek and first / self.fps >= _SEEK_MIN_SECONDS
        try:
            if seek:
                # Lands on the key frame at or before the target time.
                target = int(first / self.fps / self._time_base) + self._start_pts
                try:
                    self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
                except av.FFmpegError:  # not seekable (raw streams): decode from the start
                    self._read_before = True
                    return self._decode_range(first, last, wanted, allow_seek=False)
            elif self._read_before:
                self._rewind()
            self._read_before = True
            counter = -1
            for frame in self._container.decode(self._stream):
                i = self._frame_index(frame)
                if seek and (i < 0 or (seen < 0 and i > first)):
                    # No timestamps, or an imprecise index overshot the target:
                    # decode from the start instead.
                    return self._decode_range(first, last, wanted, allow_seek=False)
                if i < 0:  # no timestamps: count frames from the start
                    counter += 1
                    i = counter
                seen = max(seen, i)
                if i > last:
                    break
                if i in wanted:
                    out[i] = frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            if seen < 0:
                raise DecodeError(self.path, "corrupt", str(exc)) from None
            # A broken tail: keep what was decoded, get_frames decides.
        return out, seen

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()


def read_video(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    num_frames: int | None = None,
    threads: int = 0,
    as_tensor: bool = False,
) -> np.ndarray | torch.Tensor:
    """Read frames of a video file.

    Args:
        path: a video (anything FFmpeg reads) or an image (a 1-frame video).
        indices: frame indices to decode. Default: ``num_frames`` frames with the
            official uniform sampling (``np.linspace(0, n, T, endpoint=False)``),
            or every frame when ``num_frames`` is None too.
        as_tensor: return float ``[T, 3, H, W]`` in [0, 1] instead of uint8 ``[T, H, W, 3]``.
    """
    from open_videoprism.data.sampling import uniform_indices

    with VideoReader(path, threads=threads) as reader:
        if indices is None:
            n = reader.num_frames
            indices = uniform_indices(n, num_frames) if num_frames else np.arange(n)
        frames = reader.get_frames(indices)
    return to_tensor(frames) if as_tensor else frames


def to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` in [0, 1]."""
    t = torch.as_tensor(frames)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected [T, H, W, 3] frames, got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).float().div_(255.0)
