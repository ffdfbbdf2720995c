"""Data streams for the engine: resumable batch iterators.

The engine consumes a :class:`DataStream`: an iterable of batch dicts whose
``state()`` is a JSON-able description of the position *after* the last batch
yielded, and a factory ``make_stream(state | None) -> DataStream`` that
continues from such a state.

Sample order is defined by the **global batch**: optimiser step ``s`` consumes
the ``G = batch_size * world_size * accum_steps`` samples ``order[s*G:(s+1)*G]``,
and rank ``r``'s micro-batch ``m`` takes slice ``j = r * accum_steps + m`` of it
(:func:`micro_slice`). The samples of step ``s`` are thus the same whatever ranks
x accumulation make ``G`` up, and a job resized between checkpoints (8 ranks to 4
ranks x 2 micro-batches) continues the same run: :func:`rescale_state` converts a
stream position between layouts. Three streams:

- :class:`LoaderStream` wraps one ``open_videoprism.data.build_loader`` loader
  (its ``LoaderState`` carries the epoch, the batches consumed and skip counters);
- :class:`AlternatingStream` alternates several streams by step (alternating
  gradient descent, the paper's multi-dataset recipe: every optimiser step
  draws from one dataset, never a mixture);
- :class:`RandomPairStream`: a deterministic synthetic video-text set for tests
  and throughput measurements (no files needed).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from open_videoprism.errors import ConfigError
from open_videoprism.train.config import DataConfig, TrainConfig

Batch = dict[str, Any]


class DataStream(Protocol):
    def __iter__(self) -> Iterator[Batch]: ...

    def state(self) -> dict[str, Any]: ...


StreamFactory = Callable[[Mapping[str, Any] | None], DataStream]


def micro_slice(k: int, batch_size: int, rank: int, world_size: int, accum_steps: int) -> tuple[int, int]:
    """``(step, start)``: this rank's ``k``-th micro-batch covers ``order[start:start + batch_size]``
    of the global sample order and belongs to optimiser step ``step`` (module docstring)."""
    step, micro = divmod(k, accum_steps)
    j = rank * accum_steps + micro
    return step, (step * world_size * accum_steps + j) * batch_size


# Keys of stream states that count this rank's micro-batches (LoaderState.batch, the streams' "batches").
_COUNTS = ("batch", "batches")


def rescale_state(state: Any, old_accum: int, new_accum: int) -> Any:
    """A stream position written with ``old_accum`` micro-batches per step, for ``new_accum``.

    Under global-batch ordering every rank has consumed ``steps * accum`` micro-batches (per
    epoch for a loader), whatever the rank count, so the counts scale by ``new / old``.
    WebDataset positions (per-worker shard offsets) cannot be moved: a :class:`ValueError`."""
    if isinstance(state, list):
        return [rescale_state(v, old_accum, new_accum) for v in state]
    if not isinstance(state, dict):
        return state
    if state.get("worker_positions"):
        raise ValueError("a WebDataset stream position cannot be carried to another rank or accumulation layout")
    out = {}
    for key, value in state.items():
        if key in _COUNTS and isinstance(value, int):
            if value % old_accum:
                raise ValueError(f"{key}={value} is not a whole number of steps of {old_accum} micro-batches")
            out[key] = value // old_accum * new_accum
        else:
            out[key] = rescale_state(value, old_accum, new_accum)
    return out


class RandomPairStream:
    """``num_samples`` fixed random (video, caption-ids) pairs, global batches drawn by step.

    Optimiser step ``s`` uses the samples ``randperm(num_samples, seed=(seed, s))[:G]``
    (``G`` the global batch), each rank and micro-batch its slice (:func:`micro_slice`),
    so the stream is a pure function of ``(seed, k)`` and resumes exactly from
    ``{"batches": k}``. Pairs are fixed, so a model can learn to match them:
    the loss goes down, which makes it a useful smoke test.
    """

    def __init__(
        self,
        batch_size: int,
        num_frames: int = 4,
        image_size: int = 72,
        text_length: int = 16,
        vocab_size: int = 1000,
        num_samples: int = 64,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        collate_fn: Callable[[Batch], Batch] | None = None,
        state: Mapping[str, Any] | None = None,
        accum_steps: int = 1,
    ) -> None:
        if batch_size * world_size * accum_steps > num_samples:
            raise ValueError(f"a global batch of {batch_size * world_size * accum_steps} needs at least as many samples, got {num_samples}")
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps
        self.collate_fn = collate_fn
        self.num_samples = num_samples
        g = torch.Generator().manual_seed(seed)
        # Blocky colour patterns (one colour per 18 px patch), not white noise: every clip is
        # then as distinguishable as real footage, so the contrastive loss can fall.
        grid = max(1, image_size // 18)
        low = torch.rand(num_samples * num_frames, 3, grid, grid, generator=g)
        up = torch.nn.functional.interpolate(low, size=(image_size, image_size), mode="nearest")
        self.videos = up.view(num_samples, num_frames, 3, image_size, image_size)
        self.ids = torch.randint(1, vocab_size, (num_samples, text_length), generator=g)
        lengths = torch.randint(text_length // 2, text_length + 1, (num_samples,), generator=g)
        self.paddings = (torch.arange(text_length)[None, :] >= lengths[:, None]).float()
        self.ids = self.ids * (1 - self.paddings.long())
        self.batches = int(state["batches"]) if state else 0

    def state(self) -> dict[str, Any]:
        return {"batches": self.batches}

    def batch(self, k: int) -> Batch:
        """This rank's ``k``-th micro-batch: its slice of the global batch of step ``k // accum_steps``."""
        step, start = micro_slice(k, self.batch_size, self.rank, self.world_size, self.accum_steps)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        start -= step * self.batch_size * self.world_size * self.accum_steps  # within the step's permutation
        idx = torch.randperm(self.num_samples, generator=g)[start : start + self.batch_size]
        b: Batch = {
            "video": self.videos[idx],
            "text_ids": self.ids[idx],
            "text_paddings": self.paddings[idx],
            "index": idx,
        }
        return self.collate_fn(b) if self.collate_fn else b

    def __iter__(self) -> Iterator[Batch]:
        while True:
            b = self.batch(self.batches)
            self.batches += 1
            yield b


class LoaderStream:
    """One ``open_videoprism.data`` loader as a :class:`DataStream`."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)

    def state(self) -> dict[str, Any]:
        return asdict(self.loader.state())


def interleave(weights: Sequence[float]) -> Iterator[int]:
    """The dataset of each step, in order: always the one furthest behind its share.

    Deterministic and exact over any window (no RNG, so resuming needs only
    the step): with weights 2:1 the order is 0, 1, 0, 0, 1, 0, ...
    """
    total = float(sum(weights))
    counts = [0] * len(weights)
    for s in itertools.count():
        deficits = [(s + 1) * w / total - c for w, c in zip(weights, counts)]
        choice = max(range(len(weights)), key=lambda i: (deficits[i], -i))
        counts[choice] += 1
        yield choice


class AlternatingStream:
    """Alternating gradient descent over several streams, ``group`` batches per choice.

    ``group`` is the number of micro-batches of one optimiser step, so all the
    micro-batches of a step come from the same dataset.
    """

    def __init__(self, factories: Sequence[StreamFactory], weights: Sequence[float], group: int = 1, state: Mapping[str, Any] | None = None) -> None:
        if len(factories) != len(weights) or not factories:
            raise ValueError("one weight per stream")
        self.weights = list(weights)
        self.group = group
        sub = (state or {}).get("streams") or [None] * len(factories)
        self.streams = [f(s) for f, s in zip(factories, sub)]
        self._iters = [iter(s) for s in self.streams]
        self.batches = int((state or {}).get("batches", 0))
        self._order = interleave(self.weights)
        self._schedule: list[int] = []

    def _choice(self, k: int) -> int:
        step = k // self.group
        while len(self._schedule) <= step:  # replay the order up to a resumed step once
            self._schedule.append(next(self._order))
        return self._schedule[step]

    def __iter__(self) -> Iterator[Batch]:
        while True:
            i = self._choice(self.batches)
            batch = next(self._iters[i])
            batch["dataset"] = i
            self.batches += 1
            yield batch

    def state(self) -> dict[str, Any]:
        return {"batches": self.batches, "streams": [s.state() for s in self.streams]}


def _resolve(source: str, data_root: Path | None) -> str:
    p = Path(source)
    if not p.is_absolute() and data_root is not None and not p.exists():
        p = data_root / p
    return str(p)


def loader_factory(
    source: str,
    data_cfg: DataConfig,
    *,
    batch_size: int,
    seed: int,
    tokenizer: Any,
    rank: int,
    world_size: int,
    collate_fn: Callable[[Batch], Batch] | None,
    accum_steps: int = 1,
) -> StreamFactory:
    """A factory of :class:`LoaderStream` over ``source`` with the run's data settings."""
    from open_videoprism.data import LoaderState, build_loader

    def make(state: Mapping[str, Any] | None) -> DataStream:
        loader = build_loader(
            source,
            data_cfg,
            batch_size=batch_size,
            training=True,
            seed=seed,
            tokenizer=tokenizer,
            num_workers=data_cfg.num_workers,
            rank=rank,
            world_size=world_size,
            accum_steps=accum_steps,
            collate_fn=collate_fn,
            state=LoaderState(**state) if state else None,
        )
        return LoaderStream(loader)

    return make


def build_stream_factory(
    cfg: TrainConfig,
    data: str | os.PathLike | None,
    *,
    tokenizer: Any = None,
    rank: int = 0,
    world_size: int = 1,
    collate_fn: Callable[[Batch], Batch] | None = None,
) -> StreamFactory:
    """The run's stream factory: ``--data`` alone, or the ``data.datasets`` AGD mixture.

    ``data`` may be the special value ``random`` (a :class:`RandomPairStream`
    shaped like ``cfg.data``), useful to measure throughput without files.
    """
    if data is not None and str(data) == "random":
        d = cfg.data
        global_batch = cfg.batch_size * world_size * cfg.accum_steps  # the sample set depends on it alone
        return lambda s: RandomPairStream(
            cfg.batch_size, d.num_frames, d.image_size, 16, 1000, max(64, 4 * global_batch),
            cfg.seed, rank, world_size, collate_fn, s, cfg.accum_steps,
        )
    root = None
    if data is not None:
        p = Path(data)
        root = p if p.is_dir() else p.parent
    common = dict(seed=cfg.seed, tokenizer=tokenizer, rank=rank, world_size=world_size, collate_fn=collate_fn,
                  accum_steps=cfg.accum_steps)
    specs = cfg.data.datasets
    if not specs:
        if data is None:
            raise ConfigError("no data: pass --data MANIFEST_OR_SHARDS or list data.datasets in the config")
        single = loader_factory(str(data), cfg.data, batch_size=cfg.batch_size, **common)
        return single
    factories = [
        loader_factory(
            _resolve(s.source, root), replace(cfg.data, num_frames=s.num_frames or cfg.data.num_frames),
            batch_size=s.batch_size or cfg.batch_size, **common,
        )
        for s in specs
    ]
    weights = [s.weight for s in specs]
    return lambda state: AlternatingStream(factories, weights, group=cfg.accum_steps, state=state)


__all__ = [
    "AlternatingStream",
    "DataStream",
    "LoaderStream",
    "RandomPairStream",
    "StreamFactory",
    "build_stream_factory",
    "interleave",
    "loader_factory",
    "micro_slice",
    "rescale_state",
]
