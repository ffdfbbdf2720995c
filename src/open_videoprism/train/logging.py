"""Run logs: ``metrics.jsonl``, optional TensorBoard, and a tqdm progress bar.

``metrics.jsonl`` is the record of truth: one JSON object per logged step
(``step``, ``loss``, the objective's other scalars, ``lr``, throughput), flushed
at every write so a crash loses nothing already logged. On resume the lines
after the checkpoint's step (written by the interrupted run and about to be
recomputed) are removed first, atomically, so the file reads as one run.
TensorBoard is used when ``tensorboard`` is installed; its absence is not an error.
"""

from __future__ import annotations

import json
import logging as _pylogging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from open_videoprism.atomic import write_jsonl
from open_videoprism.progress import progress_bar

log = _pylogging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash is ignored)."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_metrics(path: str | os.PathLike, after_step: int) -> int:
    """Atomically drop records with ``step > after_step``; returns how many were dropped."""
    p = Path(path)
    if not p.exists():
        return 0
    records = read_metrics(p)
    keep = [r for r in records if int(r.get("step", 0)) <= after_step]
    dropped = len(records) - len(keep)
    write_jsonl(p, keep)
    return dropped


class MetricLogger:
    """Writes metrics on the main rank; other ranks get a logger that does nothing."""

    def __init__(self, run_dir: str | os.PathLike | None, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled and run_dir is not None
        self._file = None
        self._tb = None
        if not self.enabled:
            return
        run_dir = Path(run_dir)  # type: ignore[arg-type]
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(run_dir / METRICS_FILE, "a")  # noqa: SIM115 - held for the run, closed by close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is an optional dependency
                log.info("tensorboard is not installed; logging to %s only", METRICS_FILE)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _finite(v) for k, v in values.items()}}
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _finite(v: Any) -> Any:
    """JSON has no NaN/inf; store them as strings so the line stays valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Progress:
    """A tqdm bar over optimiser steps with loss, samples/s and the ETA (tqdm's own)."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = progress_bar(total=total, initial=initial, enabled=enabled, desc="train", unit="step", dynamic_ncols=True)
        self._t0 = time.perf_counter()
        self._samples = 0
        self._loss: float | None = None

    def update(self, samples: int, loss: float | None = None) -> float:
        """Advance one step; returns the running samples/s. The bar shows the last loss it was given
        (the engine reads losses from the device at log steps only)."""
        self._samples += samples
        rate = self._samples / max(1e-9, time.perf_counter() - self._t0)
        post = {"samples/s": f"{rate:.1f}"}
        self._loss = self._loss if loss is None else loss
        if self._loss is not None:
            post = {"loss": f"{self._loss:.4f}", **post}
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)
        return rate

    def close(self) -> None:
        self.bar.close()


__all__ = ["METRICS_FILE", "MetricLogger", "Progress", "read_metrics", "truncate_metrics"]
