"""Training checkpoints: sharded, atomic, verified, resumable on any number of ranks.

Layout of one checkpoint, ``RUN/checkpoints/step_0000100/`` (format 2):

- the files of ``torch.distributed.checkpoint`` (DCP): ``.metadata`` and one
  ``__R_0.distcp`` per rank that wrote data; it holds ``model.*`` (the objective's
  trainable state, frozen modules left out) and ``optim.*`` (the optimiser state,
  keyed by parameter name), sharded as the run was; DCP reshards on load, so a
  checkpoint written by 8 FSDP ranks loads on 1 or 16;
- ``meta.json``: the step, the non-tensor state (optimiser hyper-parameters, the
  data position, the batch layout) and the size and SHA-256 of every file.

Format 1 (``state.safetensors`` + ``meta.json``, written by earlier versions and
by :func:`save`) is still read.

Atomicity: every rank writes into one hidden temporary folder next to the final
one (on a file system all ranks share); when all are done the main rank writes
``meta.json`` and renames the folder into place (a POSIX rename of a folder is
atomic). A crash or a SIGKILL at any moment therefore leaves either the complete
checkpoint or only a ``.tmp-*`` folder that is ignored and swept away at the
next start. :func:`find_last_good` additionally checks sizes and hashes, so a
checkpoint damaged after the fact (a truncated copy, a bad disk) is skipped and
the previous one is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
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
FORMAT_VERSION = 2  # DCP shards; 1: one state.safetensors (still read)
DCP_METADATA = ".metadata"  # DCP's index of the shards, written last by its coordinator
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


def _commit(tmp: Path, final: Path, step: int, meta: Mapping[str, Any], version: int) -> None:
    """Hash the files in ``tmp``, write ``meta.json`` and rename ``tmp`` to ``final`` atomically."""
    delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
    files = {}
    for f in sorted(tmp.iterdir()):
        if f.is_file() and f.name != META_FILE:
            _fsync_file(f)
            files[f.name] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    full_meta = {"format": FORMAT, "format_version": version, "step": int(step), "files": files, **meta}
    meta_path = tmp / META_FILE
    meta_path.write_text(json.dumps(full_meta))
    _fsync_file(meta_path)
    directory = final.parent
    if final.exists():  # re-saving a step (e.g. a rerun after resume): swap out the old copy
        old = directory / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(directory)


def save(directory: str | os.PathLike, step: int, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write a format-1 checkpoint (one ``state.safetensors``) to ``directory/step_XXXXXXX`` atomically."""
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
        _commit(tmp, final, step, meta, 1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` index with only the classes it is made of (DCP's own metadata
    types, torch sizes, dtypes and layouts, plain containers), so a forged checkpoint cannot run code."""

    _TORCH = {"Size", "device", "contiguous_format", "preserve_format", "channels_last", "strided"}

    def find_class(self, module: str, name: str) -> Any:
        ok = (
            module.startswith("torch.distributed.checkpoint.")
            or (module == "torch" and (name in self._TORCH or isinstance(getattr(torch, name, None), torch.dtype)))
            or (module == "builtins" and name in {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool", "object", "getattr"})
            or (module == "collections" and name == "OrderedDict")
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "pathlib" and name in {"Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"})
            or (module == "copyreg" and name in {"_reconstructor", "__newobj__"})
            or module == "enum"
        )
        if not ok:
            raise pickle.UnpicklingError(f"{DCP_METADATA}: refusing to load {module}.{name}")
        return super().find_class(module, name)


def _safe_reader(path: str | os.PathLike) -> Any:
    """DCP's file-system reader with a restricted unpickler for its metadata (its tensors it already
    reads with ``weights_only=True``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(dcp.FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            with open(Path(path) / DCP_METADATA, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(path))


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns that it assumes one process when there is no process group: that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to", category=UserWarning)
        yield


def save_sharded(
    directory: str | os.PathLike, step: int, state: dict[str, Any], meta: Mapping[str, Any], is_main: bool
) -> Path:
    """Write ``state`` (tensors, DTensors, nested dicts of them) with DCP to ``directory/step_XXXXXXX``.

    A collective: every rank calls it with its own shards; the main rank commits (``meta.json``,
    rename) once all ranks have written. The folder must be on a file system every rank sees.
    """
    import torch.distributed.checkpoint as dcp

    from open_videoprism.ranks import is_dist

    directory = Path(directory)
    final = directory / step_dir_name(step)
    tmp = directory / f".tmp-{step_dir_name(step)}"  # one name on every rank (not per pid)
    if is_main:
        directory.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if is_dist():
        torch.distributed.barrier()
    try:
        with _single_process_quiet():
            dcp.save(state, storage_writer=dcp.FileSystemWriter(str(tmp), sync_files=True), no_dist=not is_dist())
        if is_main:
            _commit(tmp, final, step, meta, FORMAT_VERSION)
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if is_dist():
        torch.distributed.barrier()  # nobody moves on (or prunes) before the commit
    return final


def load_sharded(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Fill ``state`` (as :func:`save_sharded` got it, shaped and sharded for *this* run) in place from
    a format-2 checkpoint; DCP reshards. A collective. Every key of ``state`` must be in the checkpoint."""
    import torch.distributed.checkpoint as dcp

    from open_videoprism.ranks import is_dist

    with _single_process_quiet():
        dcp.load(state, storage_reader=_safe_reader(path), no_dist=not is_dist())


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``meta.json`` of a checkpoint folder (after verifying the folder, without hashing)."""
    path = Path(path)
    problem = verify(path, deep=False)
    if problem is not None:
        raise CheckpointError(f"{path}: damaged checkpoint ({problem}); remove it to resume from the previous one")
    return cast("dict[str, Any]", json.loads((path / META_FILE).read_text()))


def read_tensors(path: str | os.PathLike, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (either format) whose key starts with ``prefix``, as full CPU
    tensors, prefix removed: for tools and tests, in one process."""
    path = Path(path)
    if read_meta(path).get("format_version", 1) == 1:
        return load(path).prefixed(prefix.rstrip(".")) if prefix else load(path).tensors
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = _safe_reader(path)
    md = reader.read_metadata()
    state = {
        k: torch.empty(m.size, dtype=m.properties.dtype)
        for k, m in md.state_dict_metadata.items()
        if isinstance(m, TensorStorageMetadata) and k.startswith(prefix)
    }
    with _single_process_quiet():
        dcp.load(state, storage_reader=reader, no_dist=True)
    return {k[len(prefix):]: v for k, v in state.items()}


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
    version = meta.get("format_version", 1)
    needed = {1: STATE_FILE, FORMAT_VERSION: DCP_METADATA}.get(version) if isinstance(version, int) else None
    if needed is None:
        return f"{META_FILE}: unknown format_version {version!r:.20}"
    if not isinstance(files, dict) or needed not in files or not isinstance(meta.get("step"), int):
        return f"{META_FILE} does not describe a checkpoint (files, step)"
    if version == 1 and set(files) != {STATE_FILE}:
        return f"{META_FILE} does not describe a checkpoint (files, step)"
    for name, info in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            return f"{META_FILE}: bad file name {name!r:.40}"
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
    "DCP_METADATA",
    "FORMAT_VERSION",
    "Checkpoint",
    "WRITE_DELAY_ENV",
    "capture_rng",
    "cuda_states",
    "find_last_good",
    "flatten_optimizer",
    "list_checkpoints",
    "load",
    "load_sharded",
    "prune",
    "read_meta",
    "read_tensors",
    "restore_rng",
    "save",
    "save_sharded",
    "step_dir_name",
    "sweep_temporaries",
    "unflatten_optimizer",
    "verify",
]
