"""The training engine: one loop for every objective.

:class:`Trainer` takes an objective (see :mod:`open_videoprism.objectives` for
the contract), a stream factory (:mod:`open_videoprism.train.data`) and a
:class:`~open_videoprism.train.config.TrainConfig`, and runs
``steps`` optimiser steps with warmup + decay, gradient accumulation and
clipping, bf16 autocast, DDP or FSDP2 (:mod:`open_videoprism.train.distributed`),
periodic sharded atomic checkpoints and logs. It knows nothing about stages.

Exact resume, on any layout. Everything random derives from ``cfg.seed``: the
model init (seeded by the objective builder), the data order (global batches,
:mod:`open_videoprism.train.data`; loaders derive their randomness from
``(seed, epoch, index)``, mask collators from the sample indices) and the
objective's own draws (token dropping, shuffles): the global torch RNG is
reseeded before every micro-batch from ``(seed, step, slice)``, where ``slice``
is the micro-batch's place in the global batch (``rank * accum_steps + micro``).
A checkpoint stores the trainable state (frozen modules such as the stage-2
teacher are left out), the optimiser, the step (the schedule is a pure function
of it) and the data position; restoring them makes the continued run compute
the same numbers as an uninterrupted one, bit for bit on CPU with the same layout
(``tests/test_train_resume.py``), and to float tolerance after changing how many
ranks x micro-batches make up the same global batch (``tests/test_distributed.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from open_videoprism.atomic import write_text
from open_videoprism.errors import CheckpointError, TrainingDiverged, UserError
from open_videoprism.optim import param_groups, set_group_lrs
from open_videoprism.precision import resolve_dtype
from open_videoprism.runlock import acquire as acquire_run_lock
from open_videoprism.runlock import release as release_run_lock
from open_videoprism.train import checkpoint_manager as ckpt
from open_videoprism.train.config import TrainConfig, objective_options
from open_videoprism.train.data import StreamFactory, rescale_state
from open_videoprism.train.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    clip_grad_norm,
    frozen_prefixes,
    full_norm,
    full_state_dict,
    gradient_sync,
    is_fsdp,
    local_norm,
    parallelize,
    sync_replicated_grads,
    unwrap,
)
from open_videoprism.train.logging import METRICS_FILE, MetricLogger, Progress, truncate_metrics
from open_videoprism.train.optim import build_optimizer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
FINAL_MODEL = "model.safetensors"
CONFIG_FILE = "config.yaml"
# Test hook: SIGKILL every rank right after the checkpoint of this step is committed (a crash at a known point).
KILL_AFTER_ENV = "OVP_KILL_AFTER_CHECKPOINT"


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


def micro_batch_seed(seed: int, step: int, slice_index: int) -> int:
    """The torch seed of one micro-batch: a function of the run seed, the optimiser step (0-based)
    and the micro-batch's slice of the global batch, never of the rank layout or of the history."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, step, slice_index, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)


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
        # Wrap (DDP) or shard (FSDP2, in place) first: the optimiser must hold the sharded parameters.
        # precision "auto" is resolved for this device before it picks FSDP2's mixed-precision policy.
        self.bf16 = resolve_dtype(cfg.precision, self.info.device).dtype == torch.bfloat16
        self.model: nn.Module = parallelize(self.objective, self.info, cfg.distributed, "bf16" if self.bf16 else "fp32")
        if cfg.compile:
            self.model = cast(nn.Module, torch.compile(self.model))
        wd = cfg.optim.weight_decay
        custom = getattr(objective, "param_groups", None)
        groups = custom(wd) if callable(custom) else param_groups(objective, wd)
        self.optimizer = build_optimizer(groups, cfg.optim)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # A fused AdamW skips a step on the device when its `found_inf` is set: a non-finite gradient
        # then never reaches the weights and the host reads the step's scalars at log steps only.
        # Other optimisers (Adafactor) need the per-step host check before their update.
        self.skips_on_device = bool(self.optimizer.defaults.get("fused"))
        # open_clip's feature cache: micro-batches share negatives (objectives with loss_from_features).
        self.feature_cache = cfg.accum_steps > 1 and cfg.accum_features and callable(getattr(objective, "loss_from_features", None))
        self.step = 0
        self.data_state: dict[str, Any] | None = None
        self._lock: str | None = None

    # --- checkpoints -------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / CHECKPOINT_DIR if self.run_dir is not None else None

    @property
    def layout(self) -> dict[str, int]:
        """How the global batch is split: checkpoints record it so a resized resume can convert positions."""
        return {"world_size": self.info.world_size, "accum_steps": self.cfg.accum_steps, "batch_size": self.cfg.batch_size}

    def _trainable(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """``state`` without the frozen modules' keys (the stage-2 teacher): checkpoints never hold them."""
        skip = frozen_prefixes(self.objective)
        return {k: v for k, v in state.items() if not (skip and k.startswith(skip))}

    def _sharded_state(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``({"model": ..., "optim": ...}, param_groups)`` for DCP, keyed by parameter name (so it
        reshards): DTensor shards under FSDP2, full tensors otherwise; frozen modules left out.
        The optimiser's hyper-parameters go to ``meta.json`` instead, keeping the shards tensors only."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.objective, self.optimizer)
        model_sd = self._trainable(model_sd)
        groups = cast("list[dict[str, Any]]", optim_sd.pop("param_groups"))
        return {"model": model_sd, "optim": optim_sd}, groups

    def save_checkpoint(self, stream_state: dict[str, Any]) -> Path | None:
        """Write ``checkpoints/step_XXXXXXX`` (every rank its shards, the main rank commits) and prune
        old ones; all ranks must call it."""
        if self.checkpoint_dir is None:
            return None
        state, groups = self._sharded_state()
        meta = {
            "optimizer": {"param_groups": groups},
            "data": stream_state,
            "layout": self.layout,
            "world_size": self.info.world_size,
            "strategy": self.cfg.distributed.strategy if self.info.distributed else "single",
            "config": self.cfg.to_dict(),
        }
        path = ckpt.save_sharded(self.checkpoint_dir, self.step, state, meta, self.info.is_main)
        if self.info.is_main:
            ckpt.prune(self.checkpoint_dir, self.cfg.keep_last)
        barrier()
        return path

    def restore(self, path: str | Path) -> None:
        """Load model, optimiser, step and data position from a checkpoint folder (any rank count)."""
        meta = ckpt.read_meta(path)
        try:
            if meta.get("format_version", 1) == 1:
                self._restore_format1(Path(path), meta)
            else:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

                state, _ = self._sharded_state()
                ckpt.load_sharded(path, state)
                optim_sd = {**state["optim"], "param_groups": meta["optimizer"]["param_groups"]}
                # strict=False only for the frozen modules left out on purpose; DCP already failed on any
                # trainable key the checkpoint lacks.
                set_state_dict(self.objective, self.optimizer, model_state_dict=state["model"], optim_state_dict=optim_sd,
                               options=StateDictOptions(strict=not frozen_prefixes(self.objective)))
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AssertionError) as exc:
            raise CheckpointError(
                f"{path}: the checkpoint does not fit this run ({type(exc).__name__}: {str(exc)[:200]}); "
                "resume with the config it was written with, or remove it to resume from the previous one"
            ) from None
        self.step = int(meta["step"])
        self.data_state = self._data_state_for_this_layout(path, meta)

    def _data_state_for_this_layout(self, path: str | Path, meta: Mapping[str, Any]) -> dict[str, Any] | None:
        data = meta.get("data")
        old = meta.get("layout")
        if old is None or data is None or old == self.layout:
            return data
        new = self.layout
        old_global = old["batch_size"] * old["world_size"] * old["accum_steps"]
        new_global = new["batch_size"] * new["world_size"] * new["accum_steps"]
        if old_global != new_global:
            raise CheckpointError(
                f"{path}: written with a global batch of {old_global} ({old['world_size']} ranks x {old['accum_steps']} "
                f"micro-batches x {old['batch_size']}), this run has {new_global}; keep batch_size x ranks x accum_steps "
                "equal to continue the same run"
            )
        try:
            data = rescale_state(data, old["accum_steps"], new["accum_steps"])
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        log.info("resuming a run of %d rank(s) x %d micro-batch(es) on %d x %d: the same global batches",
                 old["world_size"], old["accum_steps"], new["world_size"], new["accum_steps"])
        return cast("dict[str, Any]", data)

    def _restore_format1(self, path: Path, meta: Mapping[str, Any]) -> None:
        """A checkpoint of the earlier single-file format (full tensors, positional optimiser state)."""
        if is_fsdp(self.model):
            raise CheckpointError(f"{path}: a format-1 checkpoint; resume it once with distributed.strategy=ddp, "
                                  "whose checkpoints FSDP then reads")
        c = ckpt.load(path)
        missing, unexpected = self.objective.load_state_dict(self._trainable(c.prefixed("model")), strict=False)
        if unexpected or self._trainable(dict.fromkeys(missing)):
            raise KeyError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.optimizer.load_state_dict(ckpt.unflatten_optimizer(c.prefixed("optim"), meta["optimizer"]))
        if int(meta.get("world_size", 1)) == self.info.world_size and "rng" in meta:
            r = self.info.rank
            ckpt.restore_rng(c.prefixed(f"rng.{r}"), meta["rng"][r])

    # --- the loop ----------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
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
        model = self.model
        model.train()
        with _data_rng_guard():
            stream = self.make_stream(self.data_state)
            batches = iter(stream)
        logger = MetricLogger(self.run_dir, enabled=self.info.is_main)
        bar = Progress(cfg.steps, self.step, enabled=self.show_progress and self.info.is_main)
        result = TrainResult(step=self.step, resumed_from=resumed_from)
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        pending: list[tuple[int, dict[str, torch.Tensor], float]] = []  # steps whose scalars are still on the device
        try:
            while self.step < end:
                scalars, lr, checked, samples, data_s = self._train_step(model, batches)
                self.step += 1
                pending.append((self.step, scalars, lr))
                log_now = self.step % cfg.log_every == 0 or self.step == 1 or self.step == cfg.steps
                ckpt_now = self.step % cfg.ckpt_every == 0 or self.step == end
                loss = None
                if log_now or ckpt_now or checked is not None:
                    # The one host sync, at log and checkpoint steps (or every step the host checked already).
                    values = checked if checked is not None else self._flush(pending)
                    result.losses.update({step: v["loss"] for step, v in values.items() if "loss" in v})
                    loss = values[self.step].get("loss")
                    pending.clear()
                rate = bar.update(samples * self.info.world_size, loss)
                if log_now:
                    logger.log(self.step, {**values[self.step], "samples_per_s": rate, "data_s": data_s})
                if ckpt_now:
                    self.save_checkpoint(stream.state())
                    if os.environ.get(KILL_AFTER_ENV) == str(self.step):
                        os.kill(os.getpid(), signal.SIGKILL)
        finally:
            bar.close()
            logger.close()
        if self.step >= cfg.steps:
            result.final_path = self.export_final()
        result.step = self.step
        result.seconds = time.perf_counter() - t_start
        return result

    def _seed_micro_batch(self, micro: int) -> None:
        """Reseed the objective's randomness for micro-batch ``micro`` of the coming step (module docstring)."""
        torch.manual_seed(micro_batch_seed(self.cfg.seed, self.step, self.info.rank * self.cfg.accum_steps + micro))

    def _next_batch(self, batches: Any) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        with _data_rng_guard():
            batch = _to_device(next(batches), self.info.device)
        return batch, time.perf_counter() - t0

    def _flush(self, pending: list[tuple[int, dict[str, torch.Tensor], float]]) -> dict[int, dict[str, float]]:
        """The logged scalars of the ``pending`` steps as floats, averaged over ranks (the gradient
        norm is the same on every rank and is not), with one collective and one host sync for all of
        them. Stops at the first step whose loss or gradient is not finite; that step's update was
        skipped (on the device, or by the host check before the optimiser step)."""
        out: dict[int, dict[str, float]] = {}
        if not pending:
            return out
        keys = [k for k in pending[0][1] if k != "grad_norm"]
        rows = torch.stack([torch.stack([v[k].reshape(()).float() for k in keys]) for _, v, _ in pending])
        reduced = all_reduce_mean(rows).tolist() if keys else [[] for _ in pending]
        norms = [local_norm(v["grad_norm"]) if "grad_norm" in v else None for _, v, _ in pending]
        for (step, _, lr), row, norm in zip(pending, reduced, norms, strict=True):
            values = dict(zip(keys, row, strict=True))
            values["lr"] = lr
            if norm is not None:
                values["grad_norm"] = norm
            bad = [k for k in ("loss", "grad_norm") if k in values and not math.isfinite(values[k])]
            if bad:
                raise TrainingDiverged(
                    f"{bad[0]} is {values[bad[0]]} at step {step} (its update was skipped); lower optim.lr, raise "
                    "schedule.warmup_steps or use precision=fp32, then --resume from the last checkpoint"
                )
            out[step] = values
        return out

    def _train_step(
        self, model: nn.Module, batches: Any
    ) -> tuple[dict[str, torch.Tensor], float, dict[int, dict[str, float]] | None, int, float]:
        """One optimiser step; returns its logged scalars (still on the device), lr, those scalars as
        floats when the host had to check them before the update (else None), samples and data seconds."""
        cfg = self.cfg
        sched = cfg.schedule
        # Per group: a group may start its schedule late (the stage-2 student held while its decoders learn).
        factor = set_group_lrs(self.optimizer, self.step, cfg.steps, sched.warmup_steps, sched.decay, sched.min_lr_ratio)
        self.optimizer.zero_grad(set_to_none=True)
        if self.feature_cache:
            values, samples, data_s = self._accumulate_with_feature_cache(model, batches)
        else:
            values, samples, data_s = self._accumulate(model, batches)
        sync_replicated_grads(model, self.params)
        # The norm is taken without clipping too: it is what tells every rank that a gradient is not finite.
        values["grad_norm"] = clip_grad_norm(self.params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
        lr = self.optimizer.param_groups[0]["initial_lr"] * factor
        checked = None
        if self.skips_on_device:
            # A non-finite loss on any rank makes the all-reduced gradients, hence the global norm, non-finite.
            self.optimizer.found_inf = (~torch.isfinite(full_norm(values["grad_norm"]))).float()  # type: ignore[attr-defined]
        else:
            checked = self._flush([(self.step + 1, values, lr)])  # raises before a non-finite step reaches the weights
        self.optimizer.step()
        after = getattr(unwrap(self.objective), "after_step", None)
        if callable(after):
            after(self.step + 1)
        return values, lr, checked, samples, data_s

    def _accumulate(self, model: nn.Module, batches: Any) -> tuple[dict[str, torch.Tensor], int, float]:
        """Plain accumulation: the mean of ``accum_steps`` micro-batch losses; gradients synchronised
        across ranks on the last micro-batch only."""
        cfg = self.cfg
        sums: dict[str, torch.Tensor] = {}  # kept on the device: no host sync inside the loop
        samples = 0
        data_s = 0.0
        for micro in range(cfg.accum_steps):
            batch, waited = self._next_batch(batches)
            data_s += waited
            samples += int(batch["video"].shape[0]) if "video" in batch else 0
            self._seed_micro_batch(micro)
            with gradient_sync(model, micro == cfg.accum_steps - 1):
                with self._autocast():
                    out = model(batch)
                (out["loss"] / cfg.accum_steps).backward()
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v
        return {k: v / cfg.accum_steps for k, v in sums.items()}, samples, data_s

    def _accumulate_with_feature_cache(self, model: nn.Module, batches: Any) -> tuple[dict[str, torch.Tensor], int, float]:
        """open_clip's ``accum_freq``: the loss of the whole accumulated batch, every pair a negative.

        Pass 1 embeds every micro-batch without gradients (``model(batch, features_only=True)``);
        pass 2 recomputes micro-batch ``m`` with gradients (same seed, so the same dropped tokens)
        and backpropagates the full loss with the other rows taken from the cache. Summed over ``m``
        this is the gradient of the full loss; per-step scalars such as the temperature enter the
        graph in the last pass only, so they are not counted ``accum_steps`` times.
        """
        cfg = self.cfg
        objective = unwrap(self.objective)
        micro_batches, data_s = [], 0.0
        for _ in range(cfg.accum_steps):
            batch, waited = self._next_batch(batches)
            micro_batches.append(batch)
            data_s += waited
        cache: list[dict[str, torch.Tensor]] = []
        with torch.no_grad():
            for m, batch in enumerate(micro_batches):
                self._seed_micro_batch(m)
                with self._autocast():
                    cache.append(model(batch, features_only=True))
        out: dict[str, torch.Tensor] = {}
        last = cfg.accum_steps - 1
        for m, batch in enumerate(micro_batches):
            self._seed_micro_batch(m)
            with gradient_sync(model, m == last):
                with self._autocast():
                    live = model(batch, features_only=True)
                    joined = {}
                    for k, v in live.items():
                        if v.dim() == 0:  # a per-step scalar (the temperature): in the graph once
                            joined[k] = v if m == last else v.detach()
                        else:
                            joined[k] = torch.cat([v if i == m else c[k] for i, c in enumerate(cache)])
                    out = objective.loss_from_features(joined)  # type: ignore[operator]
                out["loss"].backward()
        values = {k: v.detach().float() for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        samples = sum(int(b["video"].shape[0]) for b in micro_batches if "video" in b)
        return values, samples, data_s

    def export_final(self) -> Path | None:
        """Write the objective's model to ``final/model.safetensors`` (our format, ``ovp.load`` reads it)."""
        if self.run_dir is None:
            return None
        path = None
        model = cast(Any, unwrap(self.objective)).export_model()
        if is_fsdp(self.objective):  # gather the full tensors (a collective), keep the exported part
            prefix = next(name for name, m in self.objective.named_modules() if m is model)
            full = full_state_dict(self.objective)
            state = {k[len(prefix) + 1:]: v for k, v in full.items() if k.startswith(prefix + ".")} if prefix else full
        else:
            state = model.state_dict()
        if self.info.is_main:
            from open_videoprism.checkpoints import save_checkpoint

            path = save_checkpoint(
                self.run_dir / FINAL_DIR / FINAL_MODEL,
                state,
                model.cfg,
                {"step": str(self.step), "objective": self.cfg.objective_name, "seed": str(self.cfg.seed)},
            )
        barrier()
        return path


__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "FINAL_DIR",
    "FINAL_MODEL",
    "KILL_AFTER_ENV",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "build_objective",
    "micro_batch_seed",
    "seed_everything",
]
