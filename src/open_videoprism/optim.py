"""Parameter groups and learning-rate schedules, one copy for pretraining and the evaluation heads.

Weight decay pulls a parameter towards zero. That regularises weight matrices,
but for norm scales, biases, position tables, learned queries, class tokens
and temperatures it is a bias, so they are left out (the CLIP / timm
practice). One-dimensional parameters are left out by rule; every module names
its other exempt parameters in ``no_weight_decay()`` (a set of names relative
to the module, as timm does), and :func:`param_groups` collects them over the
whole module tree.

Schedules are pure functions of the step: a checkpoint stores the step, and
:func:`lr_factor` gives the same value after a restart.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

DECAYS = ("linear", "cosine", "constant")


def no_weight_decay(module: nn.Module) -> set[str]:
    """Full names of the parameters the modules of ``module`` exempt from weight decay."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        declared = getattr(sub, "no_weight_decay", None)
        if callable(declared):
            names.update(f"{prefix}.{n}" if prefix else n for n in declared())
    return names


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimiser groups over the trainable parameters: ``decay`` and ``no_decay``.

    A parameter goes to ``no_decay`` when it has at most one dimension or a
    module declares it in ``no_weight_decay()``. Empty groups are dropped.
    """
    exempt = no_weight_decay(module)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in exempt else decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, decay: str = "cosine", min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate for optimiser step ``step`` (0-based).

    Linear warmup over ``warmup_steps`` (step 0 gets ``1 / warmup_steps``, so no
    step is spent at lr 0), then ``linear`` or ``cosine`` decay from 1 to
    ``min_lr_ratio`` at ``total_steps``, or ``constant``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if decay == "linear":
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)
    if decay == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown decay {decay!r}; expected one of {', '.join(DECAYS)}")


def group_lr_factor(
    start_step: int, step: int, total_steps: int, warmup_steps: int = 0, decay: str = "cosine", min_lr_ratio: float = 0.0
) -> float:
    """:func:`lr_factor` for a parameter group whose schedule starts at ``start_step``: 0 before it
    (the group is held), then its own warmup and decay over the remaining ``total_steps - start_step``."""
    if step < start_step:
        return 0.0
    return lr_factor(step - start_step, total_steps - start_step, warmup_steps, decay, min_lr_ratio)


def set_group_lrs(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int = 0,
                  decay: str = "cosine", min_lr_ratio: float = 0.0) -> float:
    """Set every group's ``lr`` for optimiser step ``step`` from its peak and its ``start_step`` (default 0).

    Returns the factor of the groups that start at step 0 (what the logs call ``lr``). A held group
    gets ``lr`` 0: AdamW then leaves its weights bit-identical (the update and the decoupled weight
    decay are both scaled by ``lr``) while its moments still follow the gradients.
    """
    for g in optimizer.param_groups:
        f = group_lr_factor(int(g.get("start_step", 0)), step, total_steps, warmup_steps, decay, min_lr_ratio)
        g["lr"] = g.setdefault("initial_lr", g["lr"]) * f
    return lr_factor(step, total_steps, warmup_steps, decay, min_lr_ratio)


__all__ = ["DECAYS", "group_lr_factor", "lr_factor", "no_weight_decay", "param_groups", "set_group_lrs"]
