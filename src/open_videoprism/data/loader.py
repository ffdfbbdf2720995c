"""Deterministic, resumable, crash-proof batching of a manifest (or WebDataset shards).

Design: the main process plans each epoch (a permutation from ``seed + epoch``,
this rank's slice, cut into batches) and hands *batch keys* ``(epoch, b)`` to a
``torch.utils.data.DataLoader`` whose workers each build a whole batch. All
randomness of a sample comes from (seed, epoch, sample index), so the batch
sequence is the same for any worker count, and resuming from a
:class:`LoaderState` (epoch, batches consumed) replays nothing and skips nothing.

Bad samples: in training a sample that fails is replaced by the next index of
the dataset (deterministically), in evaluation it is dropped (duplicating it
would bias metrics); either way it is counted by reason (:attr:`VideoLoader.skips`)
and the failure-ratio check stops a broken dataset with one
:class:`~open_videoprism.errors.DataError`.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from open_videoprism.data.config import VideoDataConfig
from open_videoprism.data.dataset import ClipSampler, collate, sample_rng
from open_videoprism.data.decode import DecodeError
from open_videoprism.data.manifest import Manifest
from open_videoprism.data.robust import Skip, SkipTracker
from open_videoprism.errors import DataError

log = logging.getLogger("open_videoprism.data")

# Training: how many following indices to try before giving up on one slot.
MAX_REPLACEMENTS = 32


@dataclass
class LoaderState:
    """Where a loader stands: after ``batch`` batches of ``epoch``.

    JSON-able: ``dataclasses.asdict(state)`` writes it, ``LoaderState(**d)`` reads it back."""

    epoch: int = 0
    batch: int = 0
    skips: dict[str, Any] = field(default_factory=dict)      # SkipTracker.state()
    worker_positions: list[list[int]] | None = None   # WebDataset: [epoch, samples consumed] per worker
    next_worker: int = 0                               # WebDataset: the worker whose batch comes next


def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0xE90C]).permutation(n)


class _BatchBuilder(Dataset):
    """Map-style dataset whose item is a whole batch, keyed by ``(epoch, batch)``."""

    def __init__(self, manifest: Manifest, cfg: VideoDataConfig, training: bool, seed: int, batch_size: int,
                 rank: int, world_size: int, tokenizer, collate_fn: Callable | None, accum_steps: int = 1) -> None:
        self.manifest = manifest
        self.cfg = cfg
        self.training = training
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.accum_steps = accum_steps
        self.tokenizer = tokenizer
        self.collate_fn = collate_fn
        self.sampler = ClipSampler(cfg, training, require_caption=tokenizer is not None)
        n = len(manifest)
        if training:
            # Whole global batches per epoch (batch x ranks x micro-batches), the same on every rank.
            global_batch = batch_size * world_size * accum_steps
            self.per_rank = n // global_batch * batch_size * accum_steps
            self.num_batches = n // global_batch * accum_steps
            if self.num_batches == 0:
                raise DataError(
                    f"{manifest.source}: {n} samples cannot fill one batch of {batch_size} on each of "
                    f"{world_size} rank(s) x {accum_steps} micro-batch(es); lower the batch size or add data")
        else:
            self.per_rank = len(range(rank, n, world_size))
            self.num_batches = math.ceil(self.per_rank / batch_size)

    def indices(self, epoch: int, b: int) -> np.ndarray:
        n = len(self.manifest)
        if self.training:
            # Global-batch order (open_videoprism.train.data): step b // accum covers one slice of the
            # epoch permutation, this rank's micro-batch b % accum its part; disjoint across ranks.
            step, micro = divmod(b, self.accum_steps)
            start = (step * self.world_size * self.accum_steps + self.rank * self.accum_steps + micro) * self.batch_size
            return _epoch_permutation(self.seed, epoch, n)[start : start + self.batch_size]
        mine = np.arange(self.rank, n, self.world_size)
        return mine[b * self.batch_size : (b + 1) * self.batch_size]

    def _try(self, i: int, epoch: int) -> tuple[dict | None, Skip | None]:
        entry = self.manifest[i]
        try:
            s = self.sampler.load(entry, sample_rng(self.seed, epoch, i))
        except DecodeError as exc:
            return None, Skip(entry.path, exc.reason, exc.detail[:200])
        s["index"] = i
        return s, None

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, b = key
        samples, skips, attempts = [], [], 0
        n = len(self.manifest)
        for i in self.indices(epoch, b).tolist():
            tries = min(n, MAX_REPLACEMENTS) if self.training else 1
            for k in range(tries):
                attempts += 1
                s, skip = self._try((i + k) % n, epoch)
                if s is not None:
                    samples.append(s)
                    break
                skips.append(skip)
        batch = collate(samples, self.cfg, self.tokenizer) if samples else {}
        if samples and self.collate_fn is not None:
            batch = self.collate_fn(batch)
        batch["_meta"] = {"key": key, "skips": skips, "attempts": attempts}
        return batch

    def __len__(self) -> int:  # not used for sampling; DataLoader needs it defined
        return self.num_batches


def _identity(x):
    return x


class VideoLoader:
    """Iterable of batch dicts; see :func:`build_loader`."""

    def __init__(self, builder: _BatchBuilder, num_workers: int, state: LoaderState | None, source: str) -> None:
        self.builder = builder
        self.training = builder.training
        self.num_workers = num_workers
        self._state = copy.deepcopy(state) if state else LoaderState()
        self.tracker = SkipTracker(builder.cfg.max_failure_ratio, source=source)
        self.tracker.load_state(self._state.skips)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.builder.num_batches

    @property
    def skips(self) -> dict[str, int]:
        """Skipped samples so far, ``{reason: count}``."""
        return dict(self.tracker.reasons)

    def state(self) -> LoaderState:
        """The position after the last batch yielded (pass to ``build_loader(..., state=)``)."""
        s = copy.deepcopy(self._state)
        s.skips = self.tracker.state()
        return s

    def _keys(self) -> Iterator[tuple[int, int]]:
        epoch, b = self._state.epoch, self._state.batch
        nb = self.builder.num_batches
        while True:
            if b >= nb:
                if not self.training:
                    return
                epoch, b = epoch + 1, 0
            yield epoch, b
            b += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.training and self._state.batch >= self.builder.num_batches:
            self._state.batch = 0  # a finished evaluation pass: iterating again makes a new pass
        loader = DataLoader(
            self.builder, batch_size=None, sampler=self._keys(), num_workers=self.num_workers,
            collate_fn=_identity, prefetch_factor=2 if self.num_workers else None,
            persistent_workers=False,
        )
        nb = self.builder.num_batches
        for batch in loader:
            meta = batch.pop("_meta")
            epoch, b = meta["key"]
            self.tracker.record(meta["attempts"], meta["skips"])
            end_of_pass = b + 1 >= nb
            self._state.epoch, self._state.batch = (epoch + 1, 0) if (end_of_pass and self.training) else (epoch, b + 1)
            self.tracker.check(final=end_of_pass)
            if end_of_pass:
                log.info("%s (epoch %d)", self.tracker.summary(), epoch)
            if batch:  # an eval batch whose samples all failed is dropped
                yield batch


def build_loader(
    source: str | os.PathLike,
    cfg: VideoDataConfig,
    *,
    batch_size: int,
    training: bool,
    seed: int = 0,
    tokenizer=None,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    collate_fn: Callable | None = None,
    state: LoaderState | None = None,
    accum_steps: int = 1,
):
    """A loader over a manifest (``.jsonl``/``.csv``) or WebDataset shards (``.tar`` pattern or folder).

    Training loaders iterate forever (reshuffled each epoch with seed+epoch);
    evaluation loaders make one ordered pass, keeping the last partial batch.
    A training manifest loader orders samples by global batch: optimiser step ``s``
    takes ``batch_size * world_size * accum_steps`` samples of the epoch permutation and
    this rank's micro-batches are its slices, so the samples of a step do not depend on
    how ranks and accumulation split it. (WebDataset shards stream per rank instead.)
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside world_size {world_size}")
    src = str(source)
    from open_videoprism.data.webdataset_io import ShardLoader, is_shard_source

    if is_shard_source(src):
        return ShardLoader(src, cfg, batch_size=batch_size, training=training, seed=seed, tokenizer=tokenizer,
                           num_workers=num_workers, rank=rank, world_size=world_size, collate_fn=collate_fn,
                           state=state)
    manifest = Manifest.read(Path(src), label_fields=("label", "motion_label", cfg.label_field))
    builder = _BatchBuilder(manifest, cfg, training, seed, batch_size, rank, world_size, tokenizer, collate_fn,
                            accum_steps if training else 1)
    return VideoLoader(builder, num_workers, state, source=src)
