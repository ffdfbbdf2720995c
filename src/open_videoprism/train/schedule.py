"""Learning-rate schedules as pure functions of the step.

A schedule with no state of its own is trivially resumable: the checkpoint
stores the step, and ``lr_at(step)`` gives the same value after a restart.
"""

from __future__ import annotations

import math

import torch

from open_videoprism.train.config import ScheduleConfig


def lr_factor(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak learning rate for optimiser step ``step`` (0-based).

    Linear warmup over ``warmup_steps`` (step 0 gets ``1 / warmup_steps`` so no
    step is wasted at lr 0), then ``linear`` or ``cosine`` decay from 1 to
    ``min_lr_ratio`` at ``total_steps``, or ``constant``.
    """
    warmup = cfg.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.decay == "constant":
        return 1.0
    span = max(1, total_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    floor = cfg.min_lr_ratio
    if cfg.decay == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    if cfg.decay == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown decay {cfg.decay!r}")


def set_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Set every group's ``lr`` to ``initial_lr * lr_factor(step)``; returns the factor."""
    f = lr_factor(step, total_steps, cfg)
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * f
    return f


__all__ = ["lr_factor", "set_lr"]
