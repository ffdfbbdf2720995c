"""WebDataset tar shards: writing them from a manifest, and streaming them into batches.

Shard layout (readable by the ``webdataset`` library too): ``shard-000000.tar``,
... each holding per sample ``<key>.<ext>`` (the video file's bytes, its
original extension) and ``<key>.json`` (captions, labels, start/end, the
manifest index and any other manifest fields).

Reading streams each tar sequentially (no random access, works on any
filesystem) through a shuffling buffer. Shards are split disjointly: first
across ranks (``shards[rank::world_size]`` after a per-epoch shuffle shared by
all ranks), then across DataLoader workers. Randomness derives from (seed,
epoch) for the shard order, (seed, epoch, rank, worker) for the buffer, and
(seed, epoch, manifest index) for each sample's clip and crop. A
:class:`~open_videoprism.data.loader.LoaderState` records, per worker, the epoch
and the samples it consumed and which worker's batch comes next: resuming with the
same worker count continues the batch sequence exactly.
"""

from __future__ import annotations

import copy
import glob
import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from open_videoprism.atomic import atomic_path
from open_videoprism.data.config import VideoDataConfig
from open_videoprism.data.dataset import ClipSampler, collate, sample_rng
from open_videoprism.data.decode import DecodeError
from open_videoprism.data.manifest import Manifest, ManifestEntry, is_inside
from open_videoprism.data.robust import Skip, SkipTracker
from open_videoprism.errors import DataError

log = logging.getLogger("open_videoprism.data")

SHARD_PATTERN = "shard-{:06d}.tar"


def is_shard_source(source: str) -> bool:
    """True for ``*.tar``, a brace pattern ``shard-{000000..000009}.tar``, or a folder of ``.tar`` files."""
    if source.endswith(".tar") or re.search(r"\{\d+\.\.\d+\}", source):
        return True
    p = Path(source)
    return p.is_dir() and any(p.glob("*.tar"))


def expand_shards(source: str) -> list[str]:
    """The shard files of ``source`` (brace ranges, globs, or a folder), sorted."""
    p = Path(source)
    if p.is_dir():
        shards = sorted(str(s) for s in p.glob("*.tar"))
    else:
        m = re.search(r"\{(\d+)\.\.(\d+)\}", source)
        if m:
            width = len(m.group(1))
            shards = [source[: m.start()] + str(i).zfill(width) + source[m.end() :]
                      for i in range(int(m.group(1)), int(m.group(2)) + 1)]
        else:
            shards = sorted(glob.glob(source)) or [source]
    missing = [s for s in shards if not os.path.isfile(s)]
    if not shards or missing:
        raise DataError(f"{source}: shard(s) not found ({', '.join(missing[:3]) or 'none'}); "
                        "write them with `videoprism shards MANIFEST OUT_DIR`")
    return shards


# -- writing -------------------------------------------------------------------
OUTSIDE = "outside_manifest_folder"


def write_shards(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    samples_per_shard: int = 256,
    progress: bool = True,
    allow_outside: bool = False,
) -> dict[str, Any]:
    """Pack the samples of ``manifest`` into shards; returns ``{"shards", "samples", "skipped"}``.

    Sample ``i`` goes to shard ``i // samples_per_shard``; each shard is written
    to a temporary file and renamed, so an interrupted run leaves only complete
    shards and re-running skips them. Missing or empty files are skipped and
    reported (the shard keeps the rest). So are files outside the manifest's
    folder (after resolving ``..`` and symlinks), unless ``allow_outside``: a
    manifest from elsewhere must not be able to pack arbitrary files into shards
    that get shared.
    """
    from open_videoprism.progress import progress_bar

    m = Manifest.read(manifest)
    root = Path(manifest).resolve().parent
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_shards = (len(m) + samples_per_shard - 1) // samples_per_shard
    skipped: list[dict[str, str]] = []
    written = 0
    for s in progress_bar(range(n_shards), desc="shards", unit="shard", enabled=progress):
        path = out / SHARD_PATTERN.format(s)
        lo, hi = s * samples_per_shard, min(len(m), (s + 1) * samples_per_shard)
        if path.is_file():
            continue  # complete: shards are only ever renamed into place
        with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
            for i in range(lo, hi):
                e = m[i]
                src = Path(e.path)
                if not allow_outside and not is_inside(src, root):
                    skipped.append({"path": e.path, "reason": OUTSIDE})
                    continue
                if not src.is_file() or src.stat().st_size == 0:
                    skipped.append({"path": e.path, "reason": "missing" if not src.exists() else "empty"})
                    continue
                key = f"{i:09d}"
                meta = {"index": i, "source": e.path, "captions": e.captions, "start": e.start,
                        "end": e.end, **{k: v for k, v in e.fields.items()}}
                _add(tar, f"{key}{src.suffix.lower() or '.mp4'}", src.read_bytes())
                _add(tar, f"{key}.json", json.dumps(meta).encode())
        written += 1
    for sk in skipped:
        log.warning("not packed %s: %s", sk["path"], sk["reason"])
    outside = sum(sk["reason"] == OUTSIDE for sk in skipped)
    if outside:
        log.warning("%d entries of %s point outside its folder %s and were not packed; pass "
                    "--allow-outside (allow_outside=True) if that is intended", outside, manifest, root)
    return {"shards": n_shards, "written": written, "samples": len(m) - len(skipped), "skipped": skipped,
            "pattern": str(out / f"shard-{{{0:06d}..{max(0, n_shards - 1):06d}}}.tar")}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    tar.addfile(info, io.BytesIO(data))


# -- reading -------------------------------------------------------------------
def iter_tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {ext: bytes})`` from a tar; a damaged tail ends the shard (logged)."""
    current: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                if "." not in base:
                    continue
                key, ext = base.split(".", 1)
                key = os.path.join(os.path.dirname(member.name), key)
                f = tar.extractfile(member)
                data = f.read() if f else b""
                if current is not None and key != current:
                    yield current, parts
                    parts = {}
                current = key
                parts[ext] = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        log.warning("shard %s is damaged after %s: %s", path, current or "the start", exc)
    if current is not None and parts:
        yield current, parts


def shard_entry(name: str, meta: Any) -> tuple[ManifestEntry, int]:
    """The entry and manifest index a sample's ``.json`` describes; DataError/TypeError/ValueError if malformed."""
    if not isinstance(meta, dict):
        raise DataError(f"{name}: the .json member must be an object")
    index = int(meta.get("index", -1))
    caps = meta.get("captions") or []
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise DataError(f"{name}: 'captions' must be a list of strings")
    times = [meta.get(k) for k in ("start", "end")]
    start, end = (None if t is None else float(t) for t in times)
    return ManifestEntry(path=name, captions=[c for c in caps if c.strip()], start=start, end=end,
                         fields=dict(meta)), index


class _ShardStream(IterableDataset):
    """Yields whole batches (with a ``_meta`` entry) from this worker's shards."""

    def __init__(self, shards: list[str], cfg: VideoDataConfig, *, batch_size: int, training: bool, seed: int,
                 tokenizer, rank: int, world_size: int, collate_fn: Callable | None,
                 positions: list[list[int]] | None) -> None:
        self.shards = shards
        self.cfg = cfg
        self.batch_size = batch_size
        self.training = training
        self.seed = seed
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.collate_fn = collate_fn
        self.positions = positions
        self.first_worker = 0   # logical id of DataLoader worker 0 (restores the interleaving on resume)
        self.sampler = ClipSampler(cfg, training, require_caption=tokenizer is not None)

    def worker_shards(self, epoch: int, worker: int, num_workers: int) -> list[str]:
        order = list(self.shards)
        if self.training:
            perm = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0x5A4D]).permutation(len(order))
            order = [order[i] for i in perm]
        return order[self.rank :: self.world_size][worker::num_workers]

    def _raw(self, epoch: int, shards: list[str], worker: int) -> Iterator[tuple[str, dict[str, bytes]]]:
        stream = (s for path in shards for s in iter_tar_samples(path))
        if not self.training:
            yield from stream
            return
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, self.rank, worker, 0xB0F])
        buf: list = []
        for s in stream:
            buf.append(s)
            if len(buf) >= self.cfg.shuffle_buffer:
                j = int(rng.integers(len(buf)))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
        while buf:
            j = int(rng.integers(len(buf)))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()

    def _load(self, key: str, parts: dict[str, bytes], epoch: int) -> tuple[dict | None, Skip | None]:
        meta_bytes = parts.get("json")
        media = [e for e in parts if e != "json"]
        name = f"{key}.{media[0]}" if media else key
        try:
            meta = json.loads(meta_bytes) if meta_bytes else {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return None, Skip(name, "bad_metadata", "the .json member is not JSON")
        if not media:
            return None, Skip(name, "missing", "no media member for this key")
        try:
            entry, index = shard_entry(name, meta)
        except (DataError, TypeError, ValueError, OverflowError) as exc:
            return None, Skip(name, "bad_metadata", str(exc)[:200])
        rng = sample_rng(self.seed, epoch, index if index >= 0 else abs(hash(key)) % (2**31))
        try:
            s = self.sampler.load(entry, rng, data=parts[media[0]])
        except DecodeError as exc:
            return None, Skip(name, exc.reason, exc.detail[:200])
        s["index"] = index
        return s, None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader polls its workers round-robin from worker 0; mapping
        # worker 0 to the logical worker due next reproduces the interrupted order.
        worker = (worker + self.first_worker) % num_workers
        epoch, consumed = 0, 0
        if self.positions and worker < len(self.positions):
            epoch, consumed = self.positions[worker]
        while True:
            shards = self.worker_shards(epoch, worker, num_workers)
            if not shards:
                log.warning("rank %d worker %d has no shard (%d shards for %d ranks x %d workers)",
                            self.rank, worker, len(self.shards), self.world_size, num_workers)
                return
            samples: list[dict] = []
            skips: list[Skip] = []
            attempts = 0
            pos = 0
            for key, parts in self._raw(epoch, shards, worker):
                pos += 1
                if pos <= consumed:
                    continue  # resume: already delivered before the restart
                attempts += 1
                s, skip = self._load(key, parts, epoch)
                if skip:
                    skips.append(skip)
                elif s is not None:
                    samples.append(s)
                if len(samples) == self.batch_size:
                    yield self._batch(samples, skips, attempts, worker, epoch, pos, False)
                    samples, skips, attempts = [], [], 0
            if samples or skips or attempts:
                if samples and not self.training:
                    yield self._batch(samples, skips, attempts, worker, epoch, pos, True)
                else:  # training drops the partial batch; skips are still reported
                    yield {"_meta": self._meta(skips, attempts, worker, epoch, pos, True)}
            elif not self.training:
                yield {"_meta": self._meta([], 0, worker, epoch, pos, True)}
            if not self.training:
                return
            epoch, consumed = epoch + 1, 0

    def _meta(self, skips, attempts, worker, epoch, pos, end) -> dict:
        return {"skips": skips, "attempts": attempts, "worker": worker, "epoch": epoch, "pos": pos, "end": end}

    def _batch(self, samples, skips, attempts, worker, epoch, pos, end) -> dict:
        batch = collate(samples, self.cfg, self.tokenizer)
        if self.collate_fn is not None:
            batch = self.collate_fn(batch)
        batch["_meta"] = self._meta(skips, attempts, worker, epoch, pos, end)
        return batch


def _identity(x):
    return x


class ShardLoader:
    """Iterable of batch dicts over WebDataset shards; see :func:`~open_videoprism.data.build_loader`."""

    def __init__(self, source: str, cfg: VideoDataConfig, *, batch_size: int, training: bool, seed: int = 0,
                 tokenizer=None, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                 collate_fn: Callable | None = None, state=None) -> None:
        from open_videoprism.data.loader import LoaderState

        self.shards = expand_shards(source)
        self.training = training
        self.num_workers = num_workers
        w = max(1, num_workers)
        self._state = copy.deepcopy(state) if state else LoaderState()
        positions = self._state.worker_positions
        if positions is not None and len(positions) != w:
            # Another worker count splits shards differently: restart the epoch.
            log.warning("resuming %s with %d workers instead of %d: restarting epoch %d",
                        source, w, len(positions), min(p[0] for p in positions))
            e = min(p[0] for p in positions)
            positions = [[e, 0] for _ in range(w)]
        self._positions = positions or [[self._state.epoch, 0] for _ in range(w)]
        self._next_worker = self._state.next_worker % w if positions is not None else 0
        self._num_workers = w
        self.stream = _ShardStream(self.shards, cfg, batch_size=batch_size, training=training, seed=seed,
                                   tokenizer=tokenizer, rank=rank, world_size=world_size, collate_fn=collate_fn,
                                   positions=[list(p) for p in self._positions])
        self.tracker = SkipTracker(cfg.max_failure_ratio, source=source)
        self.tracker.load_state(self._state.skips)

    @property
    def skips(self) -> dict[str, int]:
        return dict(self.tracker.reasons)

    def state(self):
        from open_videoprism.data.loader import LoaderState

        return LoaderState(epoch=min(p[0] for p in self._positions), batch=0, skips=self.tracker.state(),
                           worker_positions=[list(p) for p in self._positions], next_worker=self._next_worker)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.stream.positions = [list(p) for p in self._positions]
        self.stream.first_worker = self._next_worker
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, collate_fn=_identity)
        for batch in loader:
            meta = batch.pop("_meta")
            self.tracker.record(meta["attempts"], meta["skips"])
            w = meta["worker"]
            self._next_worker = (w + 1) % self._num_workers
            self._positions[w] = [meta["epoch"] + 1, 0] if (meta["end"] and self.training) else [meta["epoch"], meta["pos"]]
            self.tracker.check(final=meta["end"])
            if batch:
                yield batch
        log.info("%s", self.tracker.summary())
