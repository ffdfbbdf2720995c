"""Evaluation at scale: tokens read from the feature shards a minibatch at a time.

A feature folder's tokens (``[N, K, L, D]``, float16 on disk) are what the attentive
probe needs and by far its largest array: 100k clips of the base model are 630 GB.
:class:`TokenStore` memory-maps them where they lie instead of loading them:

* ``.safetensors`` shards: the header (8-byte little-endian length, then JSON with each
  array's dtype, shape and byte range) says where ``tokens`` starts; ``np.memmap`` maps it
  read-only at that offset.
* ``.npz`` shards: ``np.savez`` stores its members uncompressed, so ``tokens.npy`` is mapped
  at its offset in the zip (local file header, then the ``.npy`` header). A compressed
  member (an npz written by other tools) cannot be mapped and is read into memory, still
  in its on-disk precision.

Rows come in the order of :func:`open_videoprism.eval.features.load_features` (sorted by
dataset index); :meth:`TokenStore.gather` reads only the rows asked for, shard by shard, and
returns them as float32: the float32 copy of the whole set is never made. The page cache
then holds what was read; sets larger than it are best read shard by shard
(:class:`ShardWindows`, ``ProbeConfig.order = "shards"``).
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from open_videoprism.eval.features import FeatureCacheError

TOKENS = "tokens"
# safetensors dtype -> (numpy dtype of the same width, torch dtype of the bytes): numpy has no bfloat16.
_SAFETENSORS_DTYPES: dict[str, tuple[Any, torch.dtype]] = {
    "F16": (np.float16, torch.float16),
    "BF16": (np.int16, torch.bfloat16),
    "F32": (np.float32, torch.float32),
}
_NUMPY_DTYPES: dict[Any, torch.dtype] = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


def max_open_shards() -> int:
    """How many shards a store keeps mapped: each map holds a file descriptor (Python's mmap keeps
    its own), and a million-clip folder has thousands of shards. A quarter of the process's
    descriptor limit (256 under the common 1024), at most 4096; remapping costs ~0.1 ms."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, soft // 4))


Rows = torch.Tensor | np.ndarray | Sequence[int]


class TokenSource(Protocol):
    """Tokens ``[N, K, L, D]`` read on demand (what probes accept besides a tensor)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def gather(self, rows: Rows, clips: Rows | None = None) -> torch.Tensor:
        """float32 ``[B, K, L, D]`` of ``rows``; with ``clips``, ``[B, L, D]``: clip ``clips[i]`` of row ``rows[i]``."""
        ...

    def row_shards(self) -> np.ndarray:
        """``[N]``: the shard each row is stored in (for streaming over shards)."""
        ...


def _damaged(path: Path, what: str) -> FeatureCacheError:
    return FeatureCacheError(f"{path}: {what}; re-extract with --overwrite")


@dataclass(frozen=True)
class ShardTokens:
    """Where one shard's token array lies: file, byte offset, shape and dtype (or the array itself)."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    torch_dtype: torch.dtype
    loaded: np.ndarray | None = None  # a compressed npz member, read into memory

    def open(self) -> np.ndarray:
        """The array, memory-mapped read-only (the loaded one for a compressed member)."""
        if self.loaded is not None:
            return self.loaded
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)

    def check_size(self, file_size: int) -> None:
        """A shard cut short (a copy interrupted, a full disk) ends before its tokens do."""
        end = self.offset + math.prod(self.shape) * self.dtype.itemsize
        if self.loaded is None and end > file_size:
            raise _damaged(self.path, f"truncated: the tokens end at byte {end} but the file has {file_size}")


def safetensors_tokens(path: Path) -> ShardTokens | None:
    """Locate ``tokens`` in a safetensors file from its header (None: the file has none)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, f"truncated: {size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise _damaged(path, f"truncated: a {length}-byte header but the file has {size} bytes")
        try:
            header = json.loads(f.read(length))
            entry = header.get(TOKENS)
        except (ValueError, AttributeError):
            raise _damaged(path, "not a safetensors file (its header is not a JSON object)") from None
    if entry is None:
        return None
    if entry.get("dtype") not in _SAFETENSORS_DTYPES:
        raise _damaged(path, f"tokens of dtype {entry.get('dtype')}; expected one of {', '.join(_SAFETENSORS_DTYPES)}")
    np_dtype, torch_dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
    begin, end = entry["data_offsets"]
    loc = ShardTokens(path, 8 + length + begin, tuple(entry["shape"]), np.dtype(np_dtype), torch_dtype)
    if end - begin != math.prod(loc.shape) * loc.dtype.itemsize:
        raise _damaged(path, f"tokens of shape {list(loc.shape)} span {end - begin} bytes")
    loc.check_size(size)
    return loc


def npz_tokens(path: Path) -> ShardTokens | None:
    """Locate ``tokens.npy`` in an npz (None: the file has none); a compressed member is loaded."""
    name = f"{TOKENS}.npy"
    try:
        with zipfile.ZipFile(path) as z:
            if name not in z.namelist():
                return None
            info = z.getinfo(name)
            if info.compress_type != zipfile.ZIP_STORED:
                with z.open(info) as member:
                    arr = np.load(member)
                return ShardTokens(path, 0, arr.shape, arr.dtype, _torch_dtype(path, arr.dtype), loaded=arr)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise _damaged(path, f"not a readable npz ({exc})") from None
    with path.open("rb") as f:
        # The local header's own name and extra lengths (they may differ from the central directory's).
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(f)
        except ValueError as exc:
            raise _damaged(path, f"{name} is not a numpy array ({exc})") from None
        if fortran_order:
            raise _damaged(path, "tokens are stored in Fortran order, which this library never writes")
        loc = ShardTokens(path, f.tell(), tuple(shape), dtype, _torch_dtype(path, dtype))
    loc.check_size(path.stat().st_size)
    return loc


def _torch_dtype(path: Path, dtype: np.dtype) -> torch.dtype:
    if dtype not in _NUMPY_DTYPES:
        raise _damaged(path, f"tokens of dtype {dtype}; expected float16 or float32")
    return _NUMPY_DTYPES[dtype]


def shard_tokens(path: Path) -> ShardTokens | None:
    """Where the tokens of a ``.safetensors`` or ``.npz`` shard lie (None: the shard has none)."""
    return npz_tokens(path) if path.suffix == ".npz" else safetensors_tokens(path)


def _indices(values: Rows, bound: int, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array, each in ``[0, bound)``."""
    if isinstance(values, torch.Tensor):
        values = values.cpu().numpy()
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= bound):
        raise IndexError(f"{what} must lie in [0, {bound}); got [{arr.min()}, {arr.max()}]")
    return arr


class TokenStore:
    """Memory-mapped ``[N, K, L, D]`` tokens of a feature folder, rows sorted by dataset index.

    Made by :func:`open_videoprism.eval.features.load_features` with ``mmap=True`` (or
    :meth:`open`). Nothing is read until :meth:`gather`; at most ``max_open`` shards are
    mapped at a time (least recently used ones are unmapped).
    """

    def __init__(self, shards: Sequence[ShardTokens], shard_of: np.ndarray, local: np.ndarray,
                 max_open: int | None = None) -> None:
        self._shards = list(shards)
        self._shard_of = np.asarray(shard_of, dtype=np.int64)
        self._local = np.asarray(local, dtype=np.int64)
        self._row_shape = self._shards[0].shape[1:]
        self._max_open = max_open or max_open_shards()
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def open(cls, paths: Sequence[Path], order: torch.Tensor, counts: Sequence[int]) -> TokenStore | None:
        """The tokens of shards ``paths`` (``counts[i]`` rows each), row ``r`` being row ``order[r]``
        of the shards concatenated (:func:`~open_videoprism.eval.features.row_order`). None: no tokens."""
        located = [shard_tokens(p) for p in paths]
        first = next((loc for loc in located if loc is not None), None)
        if first is None:
            return None
        shards: list[ShardTokens] = []
        for path, loc, count in zip(paths, located, counts):
            if loc is None:
                raise _damaged(path, f"holds no tokens while {first.path.name} does")
            if loc.dtype != first.dtype:
                raise _damaged(path, f"tokens of dtype {loc.dtype} while {first.path.name} has {first.dtype}")
            if loc.shape[1:] != first.shape[1:] or loc.shape[0] != count:
                raise _damaged(path, f"tokens of shape {list(loc.shape)} do not match its {count} rows of "
                                     f"[K, L, D] = {list(first.shape[1:])}")
            shards.append(loc)
        starts = np.cumsum([0, *counts])
        pos = order.cpu().numpy().astype(np.int64)
        shard_of = np.searchsorted(starts, pos, side="right") - 1  # "right": an empty shard owns no row
        return cls(shards, shard_of, pos - starts[shard_of])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._shard_of), *self._row_shape)

    @property
    def dtype(self) -> torch.dtype:
        """The on-disk dtype (:meth:`gather` returns float32)."""
        return self._shards[0].torch_dtype

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def __len__(self) -> int:
        return len(self._shard_of)

    def row_shards(self) -> np.ndarray:
        """``[N]``: the shard of each row."""
        return self._shard_of.copy()

    def mapped(self, shard: int) -> np.ndarray:
        """Shard ``shard``'s token array, memory-mapped (kept among the ``max_open`` most recent)."""
        arr = self._open.get(shard)
        if arr is None:
            arr = self._open[shard] = self._shards[shard].open()
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(shard)
        return arr

    def gather(self, rows: Rows, clips: Rows | None = None) -> torch.Tensor:
        """float32 ``[B, K, L, D]`` of ``rows``; with ``clips``, ``[B, L, D]``: clip ``clips[i]`` of row ``rows[i]``.

        Reads only those rows, one shard at a time, in file order within a shard."""
        rows_np = _indices(rows, len(self), "rows")
        clips_np = None if clips is None else _indices(clips, self._row_shape[0], "clips")
        if clips_np is not None and len(clips_np) != len(rows_np):
            raise ValueError(f"got {len(rows_np)} rows but {len(clips_np)} clips")
        row_shape = self._row_shape if clips_np is None else self._row_shape[1:]
        # Filled in the on-disk dtype and upcast once: per-shard work stays in numpy (a batch touches many).
        out = np.empty((len(rows_np), *row_shape), dtype=self._shards[0].dtype)
        shard_ids = self._shard_of[rows_np]
        for shard in np.unique(shard_ids):
            pos = np.flatnonzero(shard_ids == shard)
            local = self._local[rows_np[pos]]
            key = local if clips_np is None else local * self._row_shape[0] + clips_np[pos]
            ascending = np.argsort(key, kind="stable")  # ascending offsets: sequential reads
            pos, local = pos[ascending], local[ascending]
            arr = self.mapped(int(shard))
            out[pos] = arr[local] if clips_np is None else arr[local, clips_np[pos]]
        return torch.from_numpy(out).view(self.dtype).float()


class ShardWindows:
    """Epoch sample orders that stream over shards, like WebDataset's shuffle buffer.

    Each call (one epoch) permutes the shards, cuts the permutation into windows of
    ``window`` shards, and shuffles the samples of each window among themselves: every
    sample comes exactly once, and the samples of at most ``window`` shards are being read
    at a time (a batch that straddles two windows reads from both). Deterministic for a
    generator state.
    """

    def __init__(self, sample_shards: np.ndarray | torch.Tensor, window: int) -> None:
        if window < 1:
            raise ValueError(f"window: must be >= 1 shard, got {window}")
        shards = torch.as_tensor(sample_shards, dtype=torch.long).reshape(-1)
        by_shard = torch.argsort(shards, stable=True)
        counts = torch.unique_consecutive(shards[by_shard], return_counts=True)[1]
        self.groups = list(torch.split(by_shard, counts.tolist()))
        self.window = window
        self.num_samples = len(shards)

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        """One epoch's order: a permutation of ``range(num_samples)``."""
        shard_order = torch.randperm(len(self.groups), generator=generator).tolist()
        parts = []
        for start in range(0, len(shard_order), self.window):
            members = torch.cat([self.groups[g] for g in shard_order[start : start + self.window]])
            parts.append(members[torch.randperm(len(members), generator=generator)])
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


__all__ = ["max_open_shards", "ShardTokens", "ShardWindows", "TokenSource", "TokenStore", "shard_tokens"]
