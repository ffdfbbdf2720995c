"""The search database: one SQLite file of files, moments, embeddings and thumbnails.

Why SQLite: one file, no server, transactions. Each video is written in one
transaction (its file row and all its moments), so a killed ``index`` leaves
only whole videos behind and the next run continues with the rest. WAL mode
lets ``search``/``serve`` read while ``index`` writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from open_videoprism.errors import UserError

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,      -- absolute
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    duration REAL,
    error TEXT                      -- set for files that could not be decoded (skipped)
);
CREATE TABLE IF NOT EXISTS moments (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    start REAL NOT NULL,
    end REAL NOT NULL,
    whole INTEGER NOT NULL,         -- 1: the whole video
    embedding BLOB NOT NULL,        -- float32 [D], L2-normalised
    thumbnail BLOB                  -- JPEG
);
CREATE INDEX IF NOT EXISTS moments_file ON moments(file_id);
"""


@dataclass
class Moment:
    start: float
    end: float
    whole: bool
    embedding: np.ndarray
    thumbnail: bytes | None


class Database:
    """Thin wrapper over the SQLite file; every method is one short transaction."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError(f"{self.path}: no such search database; build it with `videoprism index FOLDER --db {self.path}`")
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not a search database ({exc}); pass another --db") from None

    def close(self) -> None:
        self.conn.close()

    # -- settings ------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    # -- files -----------------------------------------------------------------
    def files(self) -> dict[str, tuple[int, int, int, str | None]]:
        """``path -> (id, size, mtime_ns, error)``."""
        rows = self.conn.execute("SELECT path, id, size, mtime_ns, error FROM files").fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def file_path(self, file_id: int) -> str | None:
        row = self.conn.execute("SELECT path FROM files WHERE id = ? AND error IS NULL", (file_id,)).fetchone()
        return row[0] if row else None

    def remove(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if not paths:
            return
        with self.conn:
            self.conn.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
            self._bump()

    def _bump(self) -> None:
        """Count changes to the moments, so caches of the embeddings know when they are stale."""
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def put_file(self, path: str, size: int, mtime_ns: int, duration: float | None, moments: list[Moment],
                 error: str | None = None) -> None:
        """Replace ``path`` and its moments in one transaction."""
        with self.conn:
            self.conn.execute("DELETE FROM files WHERE path = ?", (path,))
            cur = self.conn.execute(
                "INSERT INTO files (path, size, mtime_ns, duration, error) VALUES (?, ?, ?, ?, ?)",
                (path, size, mtime_ns, duration, error),
            )
            fid = cur.lastrowid
            self.conn.executemany(
                "INSERT INTO moments (file_id, start, end, whole, embedding, thumbnail) VALUES (?, ?, ?, ?, ?, ?)",
                [(fid, m.start, m.end, int(m.whole), np.asarray(m.embedding, np.float32).tobytes(), m.thumbnail)
                 for m in moments],
            )
            self._bump()

    # -- moments ---------------------------------------------------------------
    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(moment ids [N] int64, embeddings [N, D] float32)`` of every moment."""
        rows = self.conn.execute("SELECT id, embedding FROM moments ORDER BY id").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, int(self.meta().get("dim", 0))), np.float32)
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        emb = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)
        return ids, emb

    def cached_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`embeddings`, through a ``.npy`` cache beside the database (memory-mapped).

        Reading 1M embeddings out of SQLite takes tens of seconds (docs/benchmarks.md); the cache is
        rebuilt whenever the database has changed since (its ``generation``), and skipped silently
        where the folder is read-only.
        """
        gen = self.meta().get("generation", "0")
        vec, ids, stamp = (self.path.with_name(self.path.name + s) for s in (".vectors.npy", ".ids.npy", ".vectors.json"))
        try:
            if json.loads(stamp.read_text()).get("generation") == gen:
                return np.load(ids), np.load(vec, mmap_mode="r")
        except (OSError, ValueError):
            pass
        out = self.embeddings()
        try:
            from open_videoprism.atomic import atomic_path, write_text

            stamp.unlink(missing_ok=True)
            for path, arr in ((ids, out[0]), (vec, out[1])):
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, arr)
            write_text(stamp, json.dumps({"generation": gen}))  # last: marks the pair complete
        except OSError:
            pass
        return out

    def moments(self, ids: Iterable[int]) -> dict[int, dict]:
        """``id -> {path, start, end, whole, file_id}`` for the given moment ids."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        q = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT m.id, f.path, m.start, m.end, m.whole, f.id FROM moments m JOIN files f ON f.id = m.file_id "
            f"WHERE m.id IN ({q})", ids).fetchall()
        return {r[0]: {"path": r[1], "start": r[2], "end": r[3], "whole": bool(r[4]), "file_id": r[5]} for r in rows}

    def thumbnail(self, moment_id: int) -> bytes | None:
        row = self.conn.execute("SELECT thumbnail FROM moments WHERE id = ?", (moment_id,)).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        f = self.conn.execute("SELECT COUNT(*) FROM files WHERE error IS NULL").fetchone()[0]
        m = self.conn.execute("SELECT COUNT(*) FROM moments").fetchone()[0]
        return {"files": f, "moments": m}


def dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True)
