"""Training objectives and their registry.

An objective is an ``nn.Module`` that owns the trainable model(s) and turns a
batch into a loss; the engine (:mod:`open_videoprism.train.engine`) knows
nothing about stages. The contract:

- ``forward(batch: dict) -> dict[str, Tensor]`` with ``loss`` (a scalar the
  engine backpropagates) plus any scalars to log (``loss_local``, ``temperature``...);
- ``export_model() -> VideoPrism``: the model written as the run's final
  encoder checkpoint (``RUN/final/model.safetensors``);
- optional ``param_groups(weight_decay) -> list[dict]``: custom optimiser groups
  (default: :func:`open_videoprism.optim.param_groups` on the objective); a group's
  ``start_step`` holds it at lr 0 until then (:func:`open_videoprism.optim.set_group_lrs`);
- optional ``collate_fn``: a callable ``batch dict -> batch dict`` the engine
  passes to ``open_videoprism.data.build_loader(collate_fn=...)``, e.g. a mask
  collator adding ``visible_idx`` / ``masked_idx``;
- optional ``after_step(step)``: called after each optimiser step (e.g. an EMA
  teacher update);
- optional ``frozen_submodules: tuple[str, ...]``: names of frozen submodules the
  builder restores by itself (the stage-2 teacher): never checkpointed, and
  replicated or sharded under FSDP2 as ``distributed.frozen`` says;
- optional ``loss_from_features(features) -> dict`` with ``forward(batch,
  features_only=True)`` returning per-sample rows (and 0-dim scalars such as the
  temperature): the engine then accumulates micro-batches through a feature
  cache, so a contrastive loss sees the whole accumulated batch as negatives.

Registering an objective (the stage-2 ``distillation`` module does this)::

    from dataclasses import dataclass
    from open_videoprism.objectives import register_objective

    @dataclass
    class DistillationOptions:          # the YAML ``objective:`` section, minus ``name``
        mask_ratio: float = 0.65

    @register_objective("distillation", options=DistillationOptions)
    def build_distillation(options: DistillationOptions, *, train_config, teacher: str | None) -> nn.Module:
        ...

The builder receives the validated options (unknown keys in the YAML
``objective:`` section fail with a one-line :class:`ConfigError`), the whole
:class:`~open_videoprism.train.config.TrainConfig` as ``train_config`` (for
``train_config.model`` and the data settings) and ``teacher``: the value of
``videoprism pretrain --teacher`` (a run folder or a checkpoint path, None when
not given). It returns the objective on the CPU in float32; the engine moves
it to the device. ``open_videoprism.train.config.objective_options`` validates
the section and ``open_videoprism.train.engine.build_objective`` calls the
builder (this layer does not import the train layer above it). Modules named in :data:`OBJECTIVE_MODULES` are imported on
first lookup, so registration happens without the caller importing them.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from open_videoprism.errors import CheckpointError, ConfigError
from open_videoprism.models import VideoPrism, create_model, get_config

log = logging.getLogger(__name__)

# Built-in objective modules, imported on the first lookup (they import this module to register).
OBJECTIVE_MODULES: tuple[str, ...] = ("contrastive", "distillation", "one_stage", "lit")

ObjectiveBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ObjectiveEntry:
    name: str
    builder: ObjectiveBuilder
    options: type


_REGISTRY: dict[str, ObjectiveEntry] = {}
_loaded = False


def register_objective(name: str, options: type) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Decorator registering ``builder(options, *, train_config, teacher) -> nn.Module`` under ``name``."""
    if not dataclasses.is_dataclass(options):
        raise TypeError("options must be a dataclass type")

    def deco(fn: ObjectiveBuilder) -> ObjectiveBuilder:
        if name in _REGISTRY and _REGISTRY[name].builder is not fn:
            raise ValueError(f"objective {name!r} registered twice")
        _REGISTRY[name] = ObjectiveEntry(name, fn, options)
        return fn

    return deco


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in OBJECTIVE_MODULES:
        importlib.import_module(f"{__name__}.{mod}")


def get_objective(name: str) -> ObjectiveEntry:
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"objective.name: unknown objective {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


# --- the trainable model, shared by objectives -----------------------------------

VIDEO_PREFIXES: tuple[str, ...] = ("encoder.", "auxiliary.", "pooler.")
TEXT_PREFIXES: tuple[str, ...] = ("text.",)


def load_into(model: nn.Module, source: str, prefixes: tuple[str, ...] | None = None) -> tuple[int, int]:
    """Copy parameters from a checkpoint ``source`` (anything ``ovp.load`` reads) into ``model``.

    Only keys under ``prefixes`` (None: all) are taken. Shapes must match;
    parameters the checkpoint lacks keep their init (e.g. the temporal encoder
    when starting from an image model). Returns ``(loaded, kept)`` counts.
    """
    from open_videoprism.checkpoints import read_any

    _, state = read_any(source)
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and (prefixes is None or k.startswith(prefixes))}
    if not take:
        raise CheckpointError(f"{source}: no parameters of the requested part ({prefixes or 'all'}) in this checkpoint")
    for k, v in take.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(v.shape)} but the model expects {tuple(own[k].shape)}; "
                "pick a model config that matches the checkpoint"
            )
    model.load_state_dict(take, strict=False)
    wanted = [k for k in own if prefixes is None or k.startswith(prefixes)]
    return len(take), len(wanted) - len(take)


def build_model(model_cfg: Any, seed: int | None = None) -> VideoPrism:
    """The trainable :class:`VideoPrism` of a ``ModelConfig`` (``train_config.model``).

    ``name`` picks the architecture (empty: the architecture of ``init``);
    ``init`` loads everything, then ``video_init`` / ``text_init`` load one tower each.
    """
    from open_videoprism.checkpoints import read_any

    if seed is not None:
        torch.manual_seed(seed)  # the random init is part of the run's reproducibility
    if model_cfg.name:
        cfg = get_config(model_cfg.name)
    elif model_cfg.init:
        cfg = read_any(model_cfg.init)[0]
    else:
        raise ConfigError("model.name: empty; name a registered model or set model.init to a checkpoint")
    frames = getattr(model_cfg, "num_frames", None)
    if frames is not None:
        if frames < 1:
            raise ConfigError(f"model.num_frames must be >= 1; got {frames}")
        cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, num_frames=frames))
    model = create_model(cfg)
    for source, prefixes in ((model_cfg.init, None), (model_cfg.video_init, VIDEO_PREFIXES), (model_cfg.text_init, TEXT_PREFIXES)):
        if source:
            loaded, kept = load_into(model, source, prefixes)
            log.info("initialised %d tensors from %s (%d keep their random init)", loaded, source, kept)
    if model_cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model.train()


__all__ = [
    "OBJECTIVE_MODULES",
    "ObjectiveEntry",
    "build_model",
    "get_objective",
    "load_into",
    "register_objective",
]
