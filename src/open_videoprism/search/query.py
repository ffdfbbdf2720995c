"""Exact top-k search over the moments of a database.

Exact search is one matrix-vector product in numpy; docs/benchmarks.md measures
it at 10k-1M moments and explains why no approximate index is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from open_videoprism.errors import UserError
from open_videoprism.search.db import Database


@dataclass
class Hit:
    path: str
    start: float
    end: float
    score: float
    whole: bool
    moment_id: int
    file_id: int

    def to_json(self) -> dict:
        return asdict(self)


def top_k(embeddings: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(row indices, scores)`` of the ``k`` best rows by dot product, best first."""
    if len(embeddings) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    scores = embeddings @ query.astype(np.float32)
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind="stable")]
    return order, scores[order]


class SearchIndex:
    """A database opened for queries: the embeddings in memory and the model that embeds queries."""

    def __init__(self, db_path: str | Path, model=None, tokenizer: str | None = None) -> None:
        self.db = Database(db_path)
        self.meta = self.db.meta()
        if "checkpoint" not in self.meta:
            raise UserError(f"{db_path}: empty search database; run `videoprism index FOLDER --db {db_path}` first")
        self.ids, self.embeddings = self.db.cached_embeddings()
        self._model = model
        self._tokenizer = tokenizer or self.meta.get("tokenizer") or None

    @property
    def model(self):
        if self._model is None:
            from open_videoprism.search.indexer import load_model

            self._model = load_model(self.meta["checkpoint"], self._tokenizer, self.meta.get("dtype", "fp32"))
        return self._model

    def embed_text(self, text: str) -> np.ndarray:
        model = self.model
        if model.text is None:
            raise UserError(f"{self.meta['checkpoint']}: no text encoder; search by video with --like")
        if getattr(model, "tokenizer", None) is None:
            raise UserError(f"{self.db.path}: no tokenizer recorded for this index; pass --tokenizer PATH.model")
        with torch.inference_mode():
            return F.normalize(model.encode_text([text]).float(), dim=-1).numpy()[0]  # unit in float32 (bf16 models)

    def embed_video(self, path: str | Path) -> np.ndarray:
        from open_videoprism.data.decode import read_video
        from open_videoprism.data.transforms import center_crop, resize_short_side

        if not Path(path).is_file():
            raise UserError(f"{path}: no such file (--like takes a video file)")
        frames, size = int(self.meta["frames"]), int(self.meta["size"])
        clip = center_crop(resize_short_side(cast(torch.Tensor, read_video(path, num_frames=frames, as_tensor=True)), size), size)
        clip = (clip * 255).round().div(255)  # the index stores uint8 frames: match it
        with torch.inference_mode():
            emb = self.model.encode_video(clip[None], frame_embeddings=False).embedding.float()
            return F.normalize(emb, dim=-1).numpy()[0]

    def search(self, query: str | None = None, k: int = 10, like: str | Path | None = None) -> list[Hit]:
        if (query is None) == (like is None):
            raise UserError("give a text query or --like VIDEO (one of them)")
        if k < 1:
            raise UserError("--top-k must be at least 1")
        vec = self.embed_video(like) if like is not None else self.embed_text(cast(str, query))
        return self.search_vector(vec, k)

    def search_vector(self, vec: np.ndarray, k: int = 10) -> list[Hit]:
        rows, scores = top_k(self.embeddings, vec, k)
        info = self.db.moments(self.ids[rows])
        return [Hit(score=float(s), moment_id=int(self.ids[r]), **info[int(self.ids[r])]) for r, s in zip(rows, scores)]
