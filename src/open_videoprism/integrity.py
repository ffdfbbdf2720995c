"""Checks a checkpoint passes before any of it is used: hostile or damaged files fail with one line.

- :func:`read_npz` reads each ``.npy`` member's header first and refuses a
  declared shape whose bytes the file cannot hold (so a forged header never
  makes numpy allocate terabytes) and non-numeric dtypes, naming the array;
- :func:`check_config` refuses model configs with impossible values (a corrupt
  ``config`` metadata string, a non-integer width) before a model is built;
- :func:`check_state` refuses non-float and non-finite tensors by name, and
  compares every shape with the config's (computed on the ``meta`` device, so
  nothing is allocated) before the weights are copied into a model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from open_videoprism.errors import CheckpointError
from open_videoprism.models.config import TextConfig, VideoPrismConfig, VisionConfig

# DEFLATE cannot expand data by more than ~1032x; a member declaring more is forged.
_MAX_DEFLATE_RATIO = 1100
_NORM_POLICIES = ("pre", "primer_hybrid")


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header bytes)`` of one ``.npy`` member, reading only its header."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(int(s) for s in shape), np.dtype(dtype), f.tell()


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, after checking every header against the file's real size.

    Never unpickles (``allow_pickle=False``); arrays must be floating point.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                # The uncompressed size the zip declares must be possible for the bytes on disk.
                limit = info.compress_size * (_MAX_DEFLATE_RATIO if info.compress_type else 1)
                if info.file_size > max(limit, 1 << 10):
                    raise CheckpointError(
                        f"{path}: array {name!r} declares {info.file_size} bytes but stores {info.compress_size}; "
                        "the file is damaged or forged"
                    )
                shape, dtype, header = _npy_header(zf, info)
                if dtype.hasobject:
                    raise CheckpointError(
                        f"{path}: not a readable .npz file: array {name!r} holds pickled Python objects, which are "
                        "never loaded (they can run code)"
                    )
                if dtype.kind != "f":
                    raise CheckpointError(
                        f"{path}: array {name!r} has dtype {dtype}; checkpoint weights must be floating point"
                    )
                count = math.prod(shape)
                if any(s < 0 for s in shape) or count * dtype.itemsize > info.file_size - header:
                    raise CheckpointError(
                        f"{path}: array {name!r} declares shape {shape} ({count * dtype.itemsize} bytes) but the file "
                        f"holds {max(0, info.file_size - header)}; the file is damaged or forged"
                    )
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError, TypeError,
            NotImplementedError, RuntimeError) as exc:  # zlib.error is a subclass of Exception only
        raise CheckpointError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:
        if type(exc).__module__ in ("zlib", "zipfile", "lzma", "bz2"):
            raise CheckpointError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
        raise


def _check_fields(obj: Any, where: str) -> None:
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        name = f"{where}.{f.name}"
        if f.type in ("int", int):
            minimum = 0 if f.name in ("temporal_layers", "auxiliary_layers", "pooler_dim") else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise CheckpointError(f"model config {name} must be an integer >= {minimum}, got {v!r:.60}")
        elif f.type in ("float", float) and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
        ):
            raise CheckpointError(f"model config {name} must be a finite number >= 0, got {v!r:.60}")


def min_params(cfg: VideoPrismConfig) -> int:
    """A lower bound on the parameter count of ``cfg`` (the dominant terms only), in plain ints."""
    v = cfg.vision
    block = 4 * v.width * v.width + 2 * v.width * v.mlp_dim
    n = (v.spatial_layers + v.temporal_layers + cfg.auxiliary_layers) * block
    n += (v.grid * v.grid + v.num_frames + 3 * v.patch_size * v.patch_size) * v.width
    if cfg.text is not None:
        t = cfg.text
        n += t.num_layers * (4 * t.width * t.width + 2 * t.width * t.mlp_dim) + t.vocab_size * t.width
    return n


def check_config(cfg: Any, source: str | os.PathLike, max_params: int | None = None) -> VideoPrismConfig:
    """Refuse a model config whose values cannot describe a model; returns it.

    ``max_params`` (the number of values the file holds, with a margin) bounds the
    model the config describes: a forged config cannot make the loader build, even
    on the meta device, billions of layers.
    """
    try:
        if not isinstance(cfg, VideoPrismConfig) or not isinstance(cfg.vision, VisionConfig):
            raise CheckpointError("model config has the wrong structure")
        if cfg.text is not None and not isinstance(cfg.text, TextConfig):
            raise CheckpointError("model config 'text' has the wrong structure")
        _check_fields(cfg, "model")
        _check_fields(cfg.vision, "vision")
        v = cfg.vision
        if v.width % v.num_heads:
            raise CheckpointError(f"model config vision.width {v.width} is not divisible by num_heads {v.num_heads}")
        if cfg.text is not None:
            _check_fields(cfg.text, "text")
            if cfg.text.norm_policy not in _NORM_POLICIES:
                raise CheckpointError(f"model config text.norm_policy must be one of {_NORM_POLICIES}, got {cfg.text.norm_policy!r:.60}")
            if cfg.text.width % cfg.text.num_heads:
                raise CheckpointError(f"model config text.width {cfg.text.width} is not divisible by num_heads {cfg.text.num_heads}")
        if max_params is not None and min_params(cfg) > max_params:
            raise CheckpointError(
                f"model config describes at least {min_params(cfg)} parameters but the file holds {max_params}"
            )
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}; the checkpoint's config is damaged (re-export or re-convert it)") from None
    return cfg


def expected_shapes(cfg: VideoPrismConfig, source: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of ``cfg``, built on the meta device (no memory)."""
    from open_videoprism.models.videoprism import VideoPrism

    try:
        with torch.device("meta"):
            model = VideoPrism(cfg)
    except (TypeError, ValueError, RuntimeError, AssertionError, AttributeError) as exc:
        raise CheckpointError(f"{source}: the model config cannot build a model ({exc})") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state(
    cfg: VideoPrismConfig,
    state: Mapping[str, torch.Tensor],
    source: str | os.PathLike,
    strict: bool = True,
) -> None:
    """Refuse weights a model of ``cfg`` cannot use, naming the tensor.

    Checks, in this order and before anything is allocated: names and shapes
    against ``cfg`` (missing/unexpected names only when ``strict``), dtypes
    (floating point), values (finite: a NaN weight makes every feature NaN).
    """
    expected = expected_shapes(cfg, source)
    if strict:
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: parameters do not match the model config (missing: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}, unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}); "
                "the checkpoint is incomplete or from another model"
            )
    for name, value in state.items():
        if name in expected and tuple(value.shape) != expected[name]:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(value.shape)}, the model config needs {expected[name]}; "
                "the checkpoint and its config disagree"
            )
    for name, value in state.items():
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: tensor {name!r} has dtype {value.dtype}; weights must be floating point")
        if value.device.type != "meta" and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{source}: tensor {name!r} holds {bad} NaN/Inf value(s); the checkpoint is damaged "
                "(a diverged run or a corrupt copy): use an earlier checkpoint or re-download it"
            )


__all__ = ["check_config", "check_state", "expected_shapes", "min_params", "read_npz"]
