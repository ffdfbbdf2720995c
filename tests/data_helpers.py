"""Test helpers of the data layer: videos whose frames encode their own index, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from open_videoprism.data.encode import write_video

INDEX_STEP = 4
INDEX_BASE = 8


def index_frames(n: int, size: int = 32) -> np.ndarray:
    """uint8 [n, size, size, 3]: frame i is uniformly grey at level 8 + 4 i (n <= 61)."""
    assert n <= 61
    levels = INDEX_BASE + INDEX_STEP * np.arange(n)
    return np.broadcast_to(levels[:, None, None, None], (n, size, size, 3)).astype(np.uint8).copy()


def write_index_video(path: Path, n: int = 40, fps: float = 10.0, size: int = 32, gop: int = 8, **kw) -> Path:
    """An h264 video of ``n`` frames whose frame i decodes back to index i (see :func:`decoded_indices`)."""
    return write_video(path, index_frames(n, size), fps, crf=0, options={"g": str(gop), "bf": "0"}, **kw)


def decoded_indices(frames) -> np.ndarray:
    """Frame indices from decoded index-video frames ([T, H, W, 3] uint8 or [T, 3, H, W] float in [0, 1])."""
    a = np.asarray(frames, dtype=np.float64)
    if a.max() <= 1.0 + 1e-6:
        a = a * 255.0
    axes = tuple(range(1, a.ndim))
    return np.round((a.mean(axis=axes) - INDEX_BASE) / INDEX_STEP).astype(np.int64)


def write_bad_files(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """Every kind of bad file, as ``{kind: (path, expected reason)}``; ``good`` is a valid mp4 to damage."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    out["missing"] = (folder / "does_not_exist.mp4", "missing")
    (folder / "empty.mp4").write_bytes(b"")
    out["empty"] = (folder / "empty.mp4", "empty")
    # Truncated: a faststart mp4 (index first) cut after a third of its bytes
    # opens fine, then runs out of frames. Noise frames, so that the frame
    # data (not the index) dominates the file size.
    fast = folder / "faststart.mp4"
    noise = np.random.default_rng(0).integers(0, 256, (60, 64, 64, 3), dtype=np.uint8)
    write_video(fast, noise, 10.0, options={"g": "4"}, container_options={"movflags": "faststart"})
    data = fast.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    fast.unlink()
    out["truncated"] = (folder / "truncated.mp4", "truncated")
    # Corrupted: the container header overwritten with garbage.
    raw = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    raw[:512] = rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    (folder / "corrupted.mp4").write_bytes(bytes(raw))
    out["corrupted"] = (folder / "corrupted.mp4", "not_video")
    # Wrong codec: an audio-only mp4 (AAC), no video stream to decode.
    audio = folder / "audio_only.mp4"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("aac", rate=16000)
        t = np.arange(16000 // 2, dtype=np.float32) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out["wrong_codec"] = (audio, "no_video_stream")
    # Not a video at all.
    (folder / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    out["not_video"] = (folder / "notes.mp4", "not_video")
    # A folder where a file was expected.
    (folder / "a_folder.mp4").mkdir(exist_ok=True)
    out["directory"] = (folder / "a_folder.mp4", "not_video")
    return out


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
