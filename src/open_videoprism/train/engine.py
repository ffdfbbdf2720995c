"""The training engine: one loop for every objective.

:class:`Trainer` takes an objective (see :mod:`open_videoprism.objectives` for
the contract), a stream factory (:mod:`open_videoprism.train.data`) and a
:class:`~open_videoprism.train.config.TrainConfig`, and runs
``steps`` optimiser steps with warmup + decay, gradient accumulation and
clipping, bf16 autocast, DDP, periodic atomic checkpoints and logs. It knows
nothing about stages.

Exact resume. Everything random derives from ``cfg.seed``: the model init
(seeded by the objective builder), then ``torch``/``numpy``/``random`` seeded
with ``seed + rank``, and the data order (the loaders derive theirs from
``(seed, epoch, index)``). A checkpoint stores the model, the optimiser, the
step (the schedule is a pure function of it), every rank's RNG states and the
data position; restoring them makes the continued run compute the same
numbers as an uninterrupted one, bit for bit on CPU with the same worker count
(``tests/test_train_resume.py``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from open_videoprism.atomic import write_text
from open_videoprism.errors import CheckpointError, TrainingDiverged, UserError
from open_videoprism.optim import lr_factor, param_groups, set_lr
from open_videoprism.precision import resolve_dtype
from open_videoprism.runlock import acquire as acquire_run_lock
from open_videoprism.runlock import release as release_run_lock
from open_videoprism.train import checkpoint_manager as ckpt
from open_videoprism.train.config import TrainConfig, objective_options
from open_videoprism.train.data import StreamFactory
from open_videoprism.train.distributed import DistInfo, all_reduce_mean, barrier, unwrap, wrap_ddp
from open_videoprism.train.logging import METRICS_FILE, MetricLogger, Progress, truncate_metrics
from open_videoprism.train.optim import build_optimizer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
FINAL_MODEL = "model.safetensors"
CONFIG_FILE = "config.yaml"


def build_objective(cfg: TrainConfig, teacher: str | None = None) -> nn.Module:
    """Build the objective ``cfg.objective`` names through the registry.

    The builder gets the validated options, the whole config and ``teacher``
    (``videoprism pretrain --teacher``); see :mod:`open_videoprism.objectives`.
    """
    from open_videoprism.objectives import get_objective

    entry = get_objective(cfg.objective_name)
    seed_everything(cfg.seed)  # builders initialise weights: make that depend on the config only
    return entry.builder(objective_options(cfg), train_config=cfg, teacher=teacher)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _data_rng_guard() -> contextlib.AbstractContextManager:
    """Keep data loading from drawing on the training RNG.

    ``torch.utils.data.DataLoader`` draws its workers' base seed from the global
    torch RNG whenever an iterator starts (at the first batch and at every
    epoch), so *when* that happens would shift the token-dropping draws, and a
    resumed run (whose iterator starts at a different step) would diverge from
    the uninterrupted one. Loaders derive their own randomness from
    ``(seed, epoch, index)`` anyway; the training RNG is saved and restored around them.
    """
    return torch.random.fork_rng(devices=[])


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    losses: dict[int, float] = field(default_factory=dict)  # step (1-based) -> loss on this rank's batch, mean over ranks
    final_path: Path | None = None
    resumed_from: int | None = None
    seconds: float = 0.0
    eval: dict[str, Any] = field(default_factory=dict)  # task -> payload of evaluations after training


class Trainer:
    """Runs a config's optimisation of an objective.

    Args:
        cfg: the resolved training config.
        objective: the objective module (on the CPU; moved to the device here).
        make_stream: ``state | None -> DataStream``.
        run_dir: where ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and
            ``final/`` go; None runs without writing anything (tests).
        info: this process's rank and device (default: single CPU/GPU process).
        progress: show the tqdm bar (main rank only).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        objective: nn.Module,
        make_stream: StreamFactory,
        run_dir: str | Path | None,
        info: DistInfo | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.info = info or DistInfo(device=torch.device("cpu"))
        self.objective = objective.to(self.info.device)
        self.make_stream = make_stream
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.show_progress = progress
        wd = cfg.optim.weight_decay
        custom = getattr(objective, "param_groups", None)
        groups = custom(wd) if callable(custom) else param_groups(objective, wd)
        self.optimizer = build_optimizer(groups, cfg.optim)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.step = 0
        self.data_state: dict[str, Any] | None = None
        self._lock: str | None = None

    # --- checkpoints -------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / CHECKPOINT_DIR if self.run_dir is not None else None

    def _gather_rng(self) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        mine = ckpt.capture_rng()
        if not dist.is_initialized() or self.info.world_size == 1:
            return [mine]
        out: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(out, mine)
        return out

    def save_checkpoint(self, stream_state: dict[str, Any]) -> Path | None:
        """Write ``checkpoints/step_XXXXXXX`` (main rank) and prune old ones; all ranks must call it."""
        rngs = self._gather_rng()
        path = None
        if self.info.is_main and self.checkpoint_dir is not None:
            tensors = {f"model.{k}": v for k, v in unwrap(self.objective).state_dict().items()}
            opt_tensors, opt_rest = ckpt.flatten_optimizer(self.optimizer.state_dict())
            tensors.update({f"optim.{k}": v for k, v in opt_tensors.items()})
            rng_rest = []
            for r, (rt, rr) in enumerate(rngs):
                tensors.update({f"rng.{r}.{k}": v for k, v in rt.items()})
                rng_rest.append(rr)
            meta = {
                "optimizer": opt_rest,
                "rng": rng_rest,
                "data": stream_state,
                "world_size": self.info.world_size,
                "config": self.cfg.to_dict(),
            }
            path = ckpt.save(self.checkpoint_dir, self.step, tensors, meta)
            ckpt.prune(self.checkpoint_dir, self.cfg.keep_last)
        barrier()
        return path

    def restore(self, path: str | Path) -> None:
        """Load model, optimiser, step, RNG and data position from a checkpoint folder."""
        c = ckpt.load(path)
        try:
            unwrap(self.objective).load_state_dict(c.prefixed("model"), strict=True)
            self.optimizer.load_state_dict(ckpt.unflatten_optimizer(c.prefixed("optim"), c.meta["optimizer"]))
            same_world = int(c.meta.get("world_size", 1)) == self.info.world_size
            if same_world:
                r = self.info.rank
                ckpt.restore_rng(c.prefixed(f"rng.{r}"), c.meta["rng"][r])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: the checkpoint does not fit this run ({type(exc).__name__}: {str(exc)[:200]}); "
                "resume with the config it was written with, or remove it to resume from the previous one"
            ) from None
        self.step = c.step
        self.data_state = c.meta.get("data")
        if not same_world:  # a different world size cannot replay the same streams; continue reproducibly instead
            log.warning("checkpoint written with %s ranks, resuming on %d: RNG reseeded, the curve will differ",
                        c.meta.get("world_size"), self.info.world_size)
            seed_everything(self.cfg.seed + 1_000_003 * self.step + self.info.rank)

    # --- the loop ----------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if resolve_dtype(self.cfg.precision, self.info.device).dtype == torch.bfloat16:
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prepare_run_dir(self, resume: bool) -> int | None:
        """Lock and create the run folder; on resume load the last good checkpoint. Returns its step.

        The main rank holds the run lock (:mod:`open_videoprism.runlock`) from here to the end of
        :meth:`fit`, so a second run into the same folder fails at once instead of interleaving.
        Metric lines past the step the run continues from (all of them when it starts from
        scratch: a crash before the first checkpoint) are dropped, so the log reads as one run.
        """
        if self.run_dir is None:
            return None
        if self.info.is_main and self._lock is None:
            self._lock = acquire_run_lock(self.run_dir)
        cdir = self.checkpoint_dir
        assert cdir is not None
        existing = ckpt.list_checkpoints(cdir)
        if existing and not resume:
            raise UserError(
                f"{self.run_dir} already holds checkpoints (last: step {existing[0][0]}); "
                "pass --resume to continue that run or choose another --out"
            )
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            n = ckpt.sweep_temporaries(cdir)
            if n:
                log.warning("removed %d incomplete checkpoint folder(s) left by an interrupted run", n)
            write_text(self.run_dir / CONFIG_FILE, self.cfg.to_yaml())
        barrier()
        last = ckpt.find_last_good(cdir) if resume else None
        if resume and last is None:
            log.info("no checkpoint in %s: starting from scratch", cdir)
        if last is not None:
            self.restore(last)
        if self.info.is_main:
            dropped = truncate_metrics(self.run_dir / METRICS_FILE, self.step)
            if dropped:
                log.info("dropped %d metric lines after step %d (they will be recomputed)", dropped, self.step)
        if last is None:
            return None
        log.info("resumed from %s (step %d)", last, self.step)
        return self.step

    def _release_lock(self) -> None:
        if self._lock is not None:
            release_run_lock(self._lock)
            self._lock = None

    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to ``cfg.steps`` (or stop early after ``stop_after`` steps, leaving a resumable run).

        The final encoder checkpoint ``final/model.safetensors`` is written only
        when ``cfg.steps`` is reached.
        """
        cfg = self.cfg
        t_start = time.perf_counter()
        seed_everything(cfg.seed + self.info.rank)
        try:
            return self._fit(resume, stop_after, t_start)
        finally:
            self._release_lock()

    def _fit(self, resume: bool, stop_after: int | None, t_start: float) -> TrainResult:
        cfg = self.cfg
        resumed_from = self._prepare_run_dir(resume)
        model: nn.Module = wrap_ddp(self.objective, self.info, cfg.distributed.find_unused_parameters)
        if cfg.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        model.train()
        with _data_rng_guard():
            stream = self.make_stream(self.data_state)
            batches = iter(stream)
        logger = MetricLogger(self.run_dir, enabled=self.info.is_main)
        bar = Progress(cfg.steps, self.step, enabled=self.show_progress and self.info.is_main)
        result = TrainResult(step=self.step, resumed_from=resumed_from)
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        try:
            while self.step < end:
                values, samples, data_s = self._train_step(model, batches)
                self.step += 1
                rate = bar.update(samples * self.info.world_size, values["loss"])
                result.losses[self.step] = values["loss"]
                if self.step % cfg.log_every == 0 or self.step == 1 or self.step == cfg.steps:
                    logger.log(self.step, {**values, "samples_per_s": rate, "data_s": data_s})
                if self.step % cfg.ckpt_every == 0 or self.step == end:
                    self.save_checkpoint(stream.state())
        finally:
            bar.close()
            logger.close()
        if self.step >= cfg.steps:
            result.final_path = self.export_final()
        result.step = self.step
        result.seconds = time.perf_counter() - t_start
        return result

    def _train_step(self, model: nn.Module, batches: Any) -> tuple[dict[str, float], int, float]:
        cfg = self.cfg
        sched = cfg.schedule
        factor = lr_factor(self.step, cfg.steps, sched.warmup_steps, sched.decay, sched.min_lr_ratio)
        set_lr(self.optimizer, factor)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        samples = 0
        data_s = 0.0
        for micro in range(cfg.accum_steps):
            t0 = time.perf_counter()
            with _data_rng_guard():
                batch = _to_device(next(batches), self.info.device)
            data_s += time.perf_counter() - t0
            samples += int(batch["video"].shape[0]) if "video" in batch else 0
            last = micro == cfg.accum_steps - 1
            no_sync = getattr(model, "no_sync", None)  # DDP, also through torch.compile
            sync = no_sync() if (self.info.distributed and not last and no_sync is not None) else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    out = model(batch)
                loss = out["loss"]
                if not torch.isfinite(loss.detach()):
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {self.step + 1}; lower optim.lr, raise schedule.warmup_steps "
                        "or use precision=fp32, then --resume from the last checkpoint"
                    )
                (loss / cfg.accum_steps).backward()
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + float(all_reduce_mean(v.float()))
        grad_norm = None
        if cfg.optim.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
        self.optimizer.step()
        after = getattr(unwrap(self.objective), "after_step", None)
        if callable(after):
            after(self.step + 1)
        values = {k: v / cfg.accum_steps for k, v in sums.items()}
        values["lr"] = self.optimizer.param_groups[0]["initial_lr"] * factor
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        return values, samples, data_s

    def export_final(self) -> Path | None:
        """Write the objective's model to ``final/model.safetensors`` (our format, ``ovp.load`` reads it)."""
        path = None
        if self.info.is_main and self.run_dir is not None:
            from open_videoprism.checkpoints import save_checkpoint

            model = cast(Any, unwrap(self.objective)).export_model()
            path = save_checkpoint(
                self.run_dir / FINAL_DIR / FINAL_MODEL,
                model.state_dict(),
                model.cfg,
                {"step": str(self.step), "objective": self.cfg.objective_name, "seed": str(self.cfg.seed)},
            )
        barrier()
        return path


__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "FINAL_DIR", "FINAL_MODEL", "Trainer", "TrainResult", "TrainingDiverged", "build_objective", "seed_everything"]
