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
    ``lr`` from ``initial_lr`` every step. ``foreach`` is left to torch: the multi-tensor
    kernels (one launch for all parameters) on CUDA, the per-parameter loop on the CPU,
    where the foreach ops fall back to that loop anyway.
    """
    groups = list(groups)
    if not groups:
        raise ConfigError("the objective has no trainable parameters")
    if cfg.name == "adamw":
        adam: dict[str, Any] = {k: v for k, v in (("betas", cfg.betas), ("eps", cfg.eps)) if v is not None}
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **adam
        )
    elif cfg.name == "adafactor":
        # torch's Adafactor: beta2 follows the t^-0.8 decay of the paper's recipe; OptimConfig
        # refuses AdamW's betas/eps with it.
        opt = torch.optim.Adafactor(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r}; use adamw or adafactor")
    for g in opt.param_groups:
        g["initial_lr"] = cfg.lr
    return opt


__all__ = ["build_optimizer"]
