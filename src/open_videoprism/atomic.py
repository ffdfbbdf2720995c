"""Atomic file writes: a crash never leaves a half-written file under its final name.

Everything the library writes for the user (checkpoints, features, manifests,
videos, shards, reports, figures) goes through :func:`atomic_path`: the writer
fills a temporary file in the destination folder, which is renamed onto the
final path only once it is complete (``os.replace`` is atomic on POSIX and
Windows within one file system), and removed on any error. The file gets the
mode a plain ``open()`` would give it (0666 minus the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The temporary name keeps ``path``'s suffix, so writers that pick a format from
    the suffix (matplotlib, PyAV, numpy) behave as for the final name. ``fsync``
    flushes the data to disk before the rename (for files a resume depends on).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    # mkstemp creates 0600; give the file the mode open() would (0666 minus the umask), so outputs
    # are as readable by the group/others as any other file the user writes.
    with contextlib.suppress(AttributeError, OSError):  # Windows has no fchmod
        os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if fsync:
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: str | os.PathLike, obj: Any, fsync: bool = False, **dump_kwargs: Any) -> Path:
    """Atomically write ``obj`` as JSON (indented, newline-terminated by default)."""
    dump_kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **dump_kwargs) + "\n", fsync=fsync)


def write_jsonl(path: str | os.PathLike, records: Any) -> Path:
    """Atomically write an iterable of JSON-able records, one per line."""
    return write_text(path, "".join(json.dumps(r) + "\n" for r in records))
