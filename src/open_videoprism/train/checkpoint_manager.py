"""Training checkpoints: atomic, verified, resumable.

Layout of one checkpoint, ``RUN/checkpoints/step_0000100/``:

- ``state.safetensors``: every tensor (``model.*`` the objective's state dict,
  ``optim.*`` the optimiser state, ``rng.*`` torch RNG states);
- ``meta.json``: the step, the non-tensor state (optimiser hyper-parameters,
  numpy / python RNG states, the data position) and the size and SHA-256 of
  ``state.safetensors``.

Atomicity: both files are written and fsynced inside a hidden temporary folder
next to the final one, which is then renamed into place (a POSIX rename of a
folder is atomic). A crash or a SIGKILL at any moment therefore leaves either
the complete checkpoint or only a ``.tmp-*`` folder that is ignored and swept
away at the next start. :func:`find_last_good` additionally checks the size and
hash, so a checkpoint damaged after the fact (a truncated copy, a bad disk) is
skipped and the previous one is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from open_videoprism.errors import CheckpointError

log = logging.getLogger(__name__)

STATE_FILE = "state.safetensors"
META_FILE = "meta.json"
FORMAT = "open_videoprism.train_checkpoint"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{7,})$")
# Test hook: seconds to sleep after the tensors are written and before the
# commit, so a test can SIGKILL the process in the middle of a checkpoint.
WRITE_DELAY_ENV = "OVP_CKPT_WRITE_DELAY"


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``tensors`` from the safetensors file, ``meta`` from the JSON."""

    path: Path
    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix.`` with the prefix removed."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- what goes in: optimiser and RNG state flattened to tensors + JSON ----------------


def flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {}
    for pid, entries in state["state"].items():
        plain = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                plain[key] = value
        rest[str(pid)] = plain
    return tensors, {"state": rest, "param_groups": state["param_groups"]}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in rest["state"].items()}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch (CPU and CUDA) RNG states as tensors; numpy and python states as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    kind, keys, pos, has_gauss, gauss = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state(legacy=True))
    version, pstate, pgauss = random.getstate()
    rest = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(pstate), pgauss],
    }
    return tensors, rest


def cuda_states(tensors: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The ``cudaN`` states in device order: numeric, so ``cuda10`` comes after ``cuda2``
    (a string sort would hand device 10's state to device 2)."""
    keys = [k for k in tensors if re.fullmatch(r"cuda\d+", k)]
    return [tensors[k] for k in sorted(keys, key=lambda k: int(k[4:]))]


def restore_rng(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = cuda_states(tensors)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = rest["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, pstate, pgauss = rest["python"]
    random.setstate((version, tuple(pstate), pgauss))


# --- writing and finding -----------------------------------------------------------


def save(directory: str | os.PathLike, step: int, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``directory/step_XXXXXXX`` atomically; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / step_dir_name(step)
    tmp = directory / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        state_path = tmp / STATE_FILE
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(state_path))
        _fsync_file(state_path)
        delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        full_meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "files": {STATE_FILE: {"size": state_path.stat().st_size, "sha256": _sha256(state_path)}},
            **meta,
        }
        meta_path = tmp / META_FILE
        meta_path.write_text(json.dumps(full_meta))
        _fsync_file(meta_path)
        if final.exists():  # re-saving a step (e.g. a rerun after resume): swap out the old copy
            old = directory / f".old-{step_dir_name(step)}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verify(path: str | os.PathLike, deep: bool = True) -> str | None:
    """None if the checkpoint folder is complete and intact, else the reason it is not.

    ``deep=False`` checks presence and sizes only (no hashing), for retention
    decisions that must stay cheap with multi-GB checkpoints.
    """
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        return f"{META_FILE} missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        return f"{META_FILE} unreadable ({exc})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"{META_FILE} is not an open_videoprism training checkpoint"
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != {STATE_FILE} or not isinstance(meta.get("step"), int):
        return f"{META_FILE} does not describe a checkpoint (files, step)"
    for name, info in files.items():
        f = path / name
        if not isinstance(info, dict):
            return f"{META_FILE}: no size/hash for {name}"
        if not f.is_file():
            return f"{name} missing"
        if f.stat().st_size != info.get("size"):
            return f"{name} has {f.stat().st_size} bytes, expected {info.get('size')!r:.40}"
        if deep and _sha256(f) != info.get("sha256"):
            return f"{name} does not match its SHA-256"
    return None


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_*`` folder, newest first (complete or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def find_last_good(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint that verifies; damaged ones are reported and skipped."""
    for _, path in list_checkpoints(directory):
        problem = verify(path)
        if problem is None:
            return path
        log.warning("skipping damaged checkpoint %s: %s", path, problem)
    return None


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder after verifying it."""
    path = Path(path)
    problem = verify(path)
    if problem is not None:
        raise CheckpointError(f"{path}: damaged checkpoint ({problem}); remove it to resume from the previous one")
    meta = json.loads((path / META_FILE).read_text())
    tensors = load_file(str(path / STATE_FILE))
    return Checkpoint(path=path, step=int(meta["step"]), tensors=tensors, meta=meta)


def sweep_temporaries(directory: str | os.PathLike) -> int:
    """Remove ``.tmp-*`` / ``.old-*`` folders left by interrupted writes; returns how many."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    n = 0
    for p in directory.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp-") or p.name.startswith(".old-")):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def prune(directory: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` intact checkpoints; returns what was removed.

    Damaged folders older than the newest kept one are removed too; the newest
    intact one is never removed.
    """
    removed = []
    kept = 0
    for _, path in list_checkpoints(directory):
        if kept < keep_last and verify(path, deep=False) is None:
            kept += 1
            continue
        if kept == 0:  # damaged and newer than any good one: leave it for inspection
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


__all__ = [
    "Checkpoint",
    "WRITE_DELAY_ENV",
    "capture_rng",
    "cuda_states",
    "find_last_good",
    "flatten_optimizer",
    "list_checkpoints",
    "load",
    "prune",
    "restore_rng",
    "save",
    "step_dir_name",
    "sweep_temporaries",
    "unflatten_optimizer",
    "verify",
]
