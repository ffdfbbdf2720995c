"""The pretraining optimisers (parameter groups come from :func:`open_videoprism.optim.param_groups`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from open_videoprism.errors import ConfigError
from open_videoprism.train.config import OptimConfig


def build_optimizer(groups: Iterable[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adafactor (factored second moments, the paper's choice).

    The learning rate set here is the peak; the schedule scales each group's
    ``lr`` from ``initial_lr`` every step. AdamW is fused and Adafactor multi-tensor on
    every device: torch's default off CUDA is a per-parameter Python loop, measurably slower
    on the CPU too (benchmarks/optimizer_step.py).
    """
    groups = list(groups)
    if not groups:
        raise ConfigError("the objective has no trainable parameters")
    if cfg.name == "adamw":
        adam: dict[str, Any] = {k: v for k, v in (("betas", cfg.betas), ("eps", cfg.eps)) if v is not None}
        # fused: one kernel over all parameters, on the CPU too (tiny model, 1 thread: 8 ms a step
        # against 42 ms for the per-parameter loop torch picks by default off CUDA; docs/benchmarks.md).
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **adam
        )
    elif cfg.name == "adafactor":
        # torch's Adafactor: beta2 follows the t^-0.8 decay of the paper's recipe; OptimConfig
        # refuses AdamW's betas/eps with it.
        opt = torch.optim.Adafactor(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    else:
        raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r}; use adamw or adafactor")
    for g in opt.param_groups:
        g["initial_lr"] = cfg.lr
    return opt


__all__ = ["build_optimizer"]
