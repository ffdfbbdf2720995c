"""Array files whose format follows the suffix: ``.npz`` (numpy) or ``.safetensors``.

One writer for everything that saves named arrays for users (``videoprism embed``
outputs, feature shards), so both formats behave the same everywhere: written
atomically, metadata kept (safetensors header; 0-d string arrays in an npz).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from open_videoprism.atomic import atomic_path

SUFFIXES = (".npz", ".safetensors")


def check_suffix(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or ValueError when its suffix names no array format."""
    p = Path(path)
    if p.suffix not in SUFFIXES:
        raise ValueError(f"{p}: the file name must end in {' or '.join(SUFFIXES)}")
    return p


def write_arrays(
    path: str | os.PathLike,
    arrays: Mapping[str, torch.Tensor | np.ndarray],
    metadata: Mapping[str, str] | None = None,
    fsync: bool = False,
) -> Path:
    """Atomically write ``arrays`` (and string ``metadata``) in the format of ``path``'s suffix."""
    p = check_suffix(path)
    tensors = {k: torch.as_tensor(v).contiguous() for k, v in arrays.items()}
    with atomic_path(p, fsync=fsync) as tmp:
        if p.suffix == ".npz":
            payload: dict[str, Any] = {k: v.numpy() for k, v in tensors.items()}
            payload.update((k, np.array(v)) for k, v in (metadata or {}).items())
            np.savez(tmp, **payload)
        else:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
    return p


def read_arrays(path: str | os.PathLike, exclude: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """The arrays of a file :func:`write_arrays` wrote, as tensors (npz metadata entries included),
    but those named in ``exclude``, which are not read at all."""
    p = check_suffix(path)
    if p.suffix == ".npz":
        with np.load(p) as z:
            return {k: torch.from_numpy(a.copy()) for k in z.files if k not in exclude and (a := z[k]).dtype.kind != "U"}
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k not in exclude}  # noqa: SIM118 (safe_open is not iterable)


__all__ = ["SUFFIXES", "check_suffix", "read_arrays", "write_arrays"]
