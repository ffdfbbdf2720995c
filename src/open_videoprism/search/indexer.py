"""``videoprism index``: split videos into moments, embed them, store them.

A moment is a fixed window (``window`` seconds every ``stride`` seconds) or the
whole video; each is sampled like the official demo (``frames`` frames spread
evenly over it, short-side resize + centre crop to ``size``). Decoding runs in
DataLoader worker processes that stream chunks of moments, so a long video
never sits in memory whole; the main process embeds and writes one video per
transaction (see :mod:`open_videoprism.search.db`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from open_videoprism.errors import UserError
from open_videoprism.search.db import SCHEMA_VERSION, Database, Moment

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".3gp", ".ts", ".ogv", ".gif"})
THUMB_HEIGHT = 120


@dataclass
class IndexSettings:
    checkpoint: str
    tokenizer: str | None = None
    window: float = 4.0      # seconds; 0: whole videos only
    stride: float | None = None  # default: the window (no overlap)
    frames: int | None = None    # default: the model's
    size: int | None = None      # default: the model's
    batch_size: int = 8
    workers: int = 2
    dtype: str = "fp32"  # "fp32", "bf16" or "auto" (open_videoprism.precision); not part of the database identity

    def meta(self, frames: int, size: int) -> dict[str, str]:
        return {"version": SCHEMA_VERSION, "checkpoint": self.checkpoint, "window": repr(float(self.window)),
                "stride": repr(float(self.stride or self.window)), "frames": str(frames), "size": str(size)}


@dataclass
class Summary:
    new: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    moments: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        # The exact words are an interface: scripts parse this line.
        return f"indexed: {self.new} new, {self.unchanged} unchanged, {self.removed} removed, {self.skipped} skipped"


def find_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursive, any name, hidden folders skipped), sorted."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in files if Path(f).suffix.lower() in VIDEO_EXTENSIONS and not f.startswith(".")]
    return sorted(out)


def windows(duration: float, window: float, stride: float) -> list[tuple[float, float, bool]]:
    """``(start, end, whole)`` of each moment: the whole video, then windows covering it."""
    out = [(0.0, duration, True)]
    if window <= 0 or duration <= window:
        return out
    starts = list(np.arange(0.0, duration - window + 1e-6, stride))
    if duration - (starts[-1] + window) > 1e-3:  # a tail left uncovered: one last window ending at the end
        starts.append(duration - window)
    return out + [(round(float(s), 3), round(float(s) + window, 3), False) for s in starts]


def _thumbnail(frame: np.ndarray) -> bytes:
    from PIL import Image

    im = Image.fromarray(frame)
    im = im.resize((max(1, round(im.width * THUMB_HEIGHT / im.height)), THUMB_HEIGHT), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


class _Decode(torch.utils.data.IterableDataset):
    """Streams ``{i, chunk, last, ...}`` per video; worker ``w`` takes videos ``i % workers == w``."""

    def __init__(self, paths: list[str], frames: int, size: int, window: float, stride: float, chunk: int) -> None:
        self.paths, self.frames, self.size = paths, frames, size
        self.window, self.stride, self.chunk = window, stride, chunk

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i in range(wid, len(self.paths), nw):
            try:
                yield from self._video(i)
            except Exception as exc:  # noqa: BLE001 - any decoder failure skips the file, counted
                yield {"i": i, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300], "last": True}

    def _video(self, i: int) -> Iterator[dict[str, Any]]:
        from open_videoprism.data.decode import VideoReader, to_tensor
        from open_videoprism.data.sampling import uniform_indices
        from open_videoprism.data.transforms import center_crop, resize_short_side

        with VideoReader(self.paths[i], threads=1) as reader:
            n, fps, dur = reader.num_frames, reader.fps, reader.duration
            spans = windows(dur, self.window, self.stride)
            for c in range(0, len(spans), self.chunk):
                part = spans[c:c + self.chunk]
                idx = []
                for s, e, whole in part:
                    if whole:
                        idx.append(uniform_indices(n, self.frames))
                    else:
                        f0, f1 = s * fps, max(e * fps, s * fps + 1)
                        idx.append(np.floor(np.linspace(f0, f1, self.frames, endpoint=False)).astype(np.int64))
                flat = np.clip(np.concatenate(idx), 0, n - 1)
                frames = reader.get_frames(flat)  # uint8 [M*T, H, W, 3]
                clips = center_crop(resize_short_side(to_tensor(frames), self.size), self.size)
                clips = (clips * 255).round().to(torch.uint8).reshape(len(part), self.frames, 3, self.size, self.size)
                thumbs = [_thumbnail(frames[k * self.frames]) for k in range(len(part))]
                yield {"i": i, "clips": clips, "spans": part, "thumbs": thumbs, "duration": dur,
                       "last": c + self.chunk >= len(spans)}


def _identity(batch: Any) -> Any:
    return batch


def load_model(checkpoint: str, tokenizer: str | None = None, dtype: str = "fp32"):
    """The embedding model of an index, with its tokenizer attached when known."""
    from open_videoprism.checkpoints import load
    from open_videoprism.tokenizer import Tokenizer

    model = load(checkpoint, dtype=dtype)
    if model.pooler is None:
        raise UserError(f"{checkpoint}: a video-only checkpoint; search needs a video-text (LvT) model "
                        "(e.g. google/videoprism-lvt-base-f16r288)")
    if tokenizer:
        model.tokenizer = Tokenizer(tokenizer)
    return model


def _normalise_checkpoint(checkpoint: str) -> str:
    from open_videoprism.hub import is_hub_name

    return checkpoint if is_hub_name(checkpoint) else str(Path(checkpoint).resolve())


def index_folder(folder: str | Path, db_path: str | Path, settings: IndexSettings, progress: bool = True) -> Summary:
    """Bring ``db_path`` up to date with the videos under ``folder``; see the module docstring."""
    from open_videoprism.progress import progress_bar

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; pass the folder of videos to index")
    settings.checkpoint = _normalise_checkpoint(settings.checkpoint)
    if settings.tokenizer:
        settings.tokenizer = str(Path(settings.tokenizer).resolve())
    db = Database(db_path, create=True)
    try:
        old = db.meta()
        model = load_model(settings.checkpoint, settings.tokenizer, settings.dtype)
        frames = settings.frames or model.cfg.vision.num_frames
        size = settings.size or model.cfg.vision.image_size
        meta = settings.meta(frames, size)
        if old.get("checkpoint") and any(old.get(k) != v for k, v in meta.items()):
            diff = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in meta.items() if old.get(k) != v)
            raise UserError(f"{db.path}: built with other settings ({diff}); use the same settings or another --db")
        tok = settings.tokenizer or (str(model.tokenizer.path) if getattr(model, "tokenizer", None) else "")
        # The dtype is recorded (queries embed in it: --like finds a video itself) but is no part of the identity.
        dtype = "bf16" if model.dtype == torch.bfloat16 else "fp32"
        db.set_meta({**meta, "tokenizer": tok or old.get("tokenizer", ""), "dim": str(model.cfg.vision.width), "dtype": dtype})

        summary = Summary()
        known = db.files()
        under = str(folder.resolve()) + os.sep
        todo: list[tuple[str, int, int]] = []
        seen = set()
        for p in find_videos(folder):
            path = str(p.resolve())
            seen.add(path)
            st = p.stat()
            row = known.get(path)
            if row and (row[1], row[2]) == (st.st_size, st.st_mtime_ns):
                if row[3] is None:
                    summary.unchanged += 1
                else:
                    summary.skipped += 1  # still the same unreadable file
                continue
            todo.append((path, st.st_size, st.st_mtime_ns))
        gone = [p for p in known if p.startswith(under) and p not in seen]
        db.remove(gone)
        summary.removed = len(gone)

        stride = settings.stride or settings.window
        data = _Decode([t[0] for t in todo], frames, size, settings.window, stride, settings.batch_size)
        workers = max(0, min(settings.workers, len(todo)))
        loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, collate_fn=_identity,
                                             prefetch_factor=2 if workers else None)
        pending: dict[int, list[Moment]] = {}
        bar = progress_bar(total=len(todo), desc="index", unit="video", enabled=progress)
        with torch.inference_mode():
            for item in loader:
                i = item["i"]
                path, fsize, mtime = todo[i]
                if "error" in item:
                    db.put_file(path, fsize, mtime, None, [], error=item["error"])
                    summary.skipped += 1
                    summary.errors.append(f"{path}: {item['error']}")
                    pending.pop(i, None)
                    bar.update(1)
                    continue
                video = item["clips"].float().div_(255.0)
                # Renormalised in float32: a bf16 unit vector is not one, and a moment must score 1 with itself.
                emb = F.normalize(model.encode_video(video, frame_embeddings=False).embedding.float(), dim=-1).numpy()
                pending.setdefault(i, []).extend(
                    Moment(s, e, w, emb[k], item["thumbs"][k]) for k, (s, e, w) in enumerate(item["spans"]))
                if item["last"]:
                    moments = pending.pop(i)
                    db.put_file(path, fsize, mtime, item["duration"], moments)
                    summary.new += 1
                    summary.moments += len(moments)
                    bar.update(1)
        bar.close()
        return summary
    finally:
        db.close()
