"""One writer per run folder: an OS file lock held for the life of a run.

Two trainings (or evaluations, or ``reproduce`` runs) writing into the same
folder would interleave their logs and overwrite each other's checkpoints, so
every command that writes a run/output folder holds :func:`run_lock` on it.
The lock is ``flock`` on ``FOLDER/.lock``: the kernel releases it when the
process dies, even by SIGKILL, so a stale lock never blocks a rerun and no
timeout or pid probing is needed. The file holds the holder's pid and host,
which the second writer names in its one-line error.

Nested use within one process is allowed (the CLI and the engine may both
take the lock on the same folder); it is released when the outermost holder
exits. On platforms without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from open_videoprism.errors import RunLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
log = logging.getLogger(__name__)

_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth) held by this process
_mutex = threading.Lock()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    except (OSError, ValueError):
        return "another process"


def acquire(folder: str | os.PathLike) -> str:
    """Take the lock on ``folder`` (created if missing); returns the key for :func:`release`.

    Raises :class:`RunLockedError` at once (never waits) when another process holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _mutex:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return key
        lock_path = folder / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(
                    f"{folder} is in use by {_holder(lock_path)} (lock {lock_path}); wait for that run to "
                    "finish or stop it, or choose another --out"
                ) from None
            except OSError as exc:  # a file system without locks (some network mounts): run unguarded
                log.warning("cannot lock %s (%s); concurrent runs into it will not be detected", lock_path, exc)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        _held[key] = (fd, 1)
        return key


def release(key: str) -> None:
    """Release one level of the lock taken by :func:`acquire`."""
    with _mutex:
        if key not in _held:
            return
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
        os.close(fd)  # closing the descriptor drops the flock; the file stays (harmless, tiny)


@contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the run lock on ``folder`` for the ``with`` block.

    >>> with run_lock("runs/s1"):
    ...     train(...)
    """
    key = acquire(folder)
    try:
        yield Path(folder)
    finally:
        release(key)


def is_locked(folder: str | os.PathLike) -> bool:
    """Whether this process holds the lock on ``folder``."""
    return str(Path(folder).resolve()) in _held


__all__ = ["LOCK_FILE", "acquire", "is_locked", "release", "run_lock"]
