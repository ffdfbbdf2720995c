"""Optimisers and parameter groups.

Weight decay is applied only to matrices (linear and conv kernels, embedding
tables of tokens). Norm scales, biases, learned position tables, the MAP
query, class tokens, per-dimension scales and the temperature are excluded:
decaying them pulls them towards zero, which is not a regulariser for them
but a bias (the common CLIP / timm practice).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from open_videoprism.errors import ConfigError
from open_videoprism.train.config import OptimConfig

# Substrings of parameter names that never get weight decay, whatever their rank.
NO_DECAY_NAMES: tuple[str, ...] = ("pos", "query", "cls", "per_dim_scale", "logit_scale", "scale")


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """True for parameters that should not be weight-decayed."""
    if param.ndim <= 1:  # biases, norm scales, scalars
        return True
    leaf = name.rsplit(".", 1)[-1]
    return any(key in leaf for key in NO_DECAY_NAMES)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups, ``decay`` and ``no_decay``, over the trainable parameters.

    An objective may override this by defining ``param_groups()`` itself
    (returning groups in the same format, each with a ``name``).
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if is_no_decay(name, p) else decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: Iterable[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adafactor (factored second moments, the paper's choice).

    The learning rate set here is the peak; the schedule scales each group's
    ``lr`` from ``initial_lr`` every step.
    """
    groups = list(groups)
    if not groups:
        raise ConfigError("the objective has no trainable parameters")
    if cfg.name == "adamw":
        adam = {k: v for k, v in (("betas", cfg.betas), ("eps", cfg.eps)) if v is not None}
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False, **adam
        )
    elif cfg.name == "adafactor":
        # torch's Adafactor: beta2 follows the t^-0.8 decay of the paper's recipe; OptimConfig
        # refuses AdamW's betas/eps with it.
        opt = torch.optim.Adafactor(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
    else:
        raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r}; use adamw or adafactor")
    for g in opt.param_groups:
        g["initial_lr"] = cfg.lr
    return opt


__all__ = ["NO_DECAY_NAMES", "build_optimizer", "is_no_decay", "param_groups"]
