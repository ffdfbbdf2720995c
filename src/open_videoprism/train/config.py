"""The config tree of a training run, loaded from a YAML recipe plus ``key=value`` overrides.

A recipe's top-level keys mirror :class:`TrainConfig`::

    base: tiny-synthetic.yaml       # optional: merged underneath (path relative to this file, or a shipped recipe)
    steps: 300
    optim: {name: adamw, lr: 1.0e-3}
    data: {num_frames: 4, shuffle_buffer: 512}
    objective: {name: distillation, mask: {type: tube, ratio: 0.8}}
    eval: {probe: {epochs: 50}}

Each section is one dataclass, used as is by the code it configures (``data`` *is*
the :class:`~open_videoprism.data.VideoDataConfig` the loader gets, ``eval`` the
:class:`~open_videoprism.eval.config.EvalConfig` the tasks get), so every field is
settable from a recipe. The ``objective`` section is validated against the options
dataclass the named objective registered (``objective.mask`` is that objective's
:class:`~open_videoprism.masks.MaskConfig`). Loading is strict and checks values
(:mod:`open_videoprism.config`): a typo or a bad value fails at once with one line
naming the file and the key. The resolved tree is saved as ``config.yaml`` in the run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from open_videoprism.config import Layer, build, override_layers, recipe_layers, recipe_path, to_dict, to_yaml
from open_videoprism.data.config import VideoDataConfig
from open_videoprism.errors import ConfigError
from open_videoprism.eval.config import EvalConfig


@dataclass
class ModelConfig:
    """Which model to train and how to initialise it.

    ``name`` is a registry name (``open_videoprism.list_models()``). ``init``
    loads a whole checkpoint (anything ``ovp.load`` reads: official ``.npz``,
    our ``.safetensors``, a run folder); ``video_init`` / ``text_init`` load only
    the video side (encoder, auxiliary layers, pooler) or only the text tower,
    e.g. an image model for the spatial encoder and a released LvT text tower.
    Parameters a checkpoint does not have keep their random init. ``num_frames`` sets
    the rows of the learned time table (default: the registry config's); the paper
    trains at 8 frames and interpolates the table for other clip lengths at inference.
    """

    name: str = "videoprism_lvt_test_tiny"
    init: str | None = None
    video_init: str | None = None
    text_init: str | None = None
    grad_checkpointing: bool = False
    num_frames: int | None = None

    def __post_init__(self) -> None:
        if self.name:
            from open_videoprism.models import get_config

            try:
                get_config(self.name)
            except ConfigError as exc:
                raise ConfigError(f"name: {exc}") from None
        elif not self.init:
            raise ConfigError("name: empty; name a registered model (ovp.list_models()) or set model.init to a checkpoint")
        if self.num_frames is not None and self.num_frames < 1:
            raise ConfigError(f"num_frames: must be >= 1, got {self.num_frames}")


@dataclass
class DatasetConfig:
    """One dataset of an alternating (AGD) mixture.

    ``source`` is a manifest or WebDataset shards; relative paths resolve
    against the ``--data`` folder. ``weight`` sets how often its batches are
    used relative to the others; ``num_frames = 1`` makes an image dataset.
    """

    source: str = ""
    weight: float = 1.0
    num_frames: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("source: missing (a manifest or WebDataset shards)")
        if self.weight <= 0:
            raise ConfigError(f"weight: must be > 0, got {self.weight}")


@dataclass
class DataConfig(VideoDataConfig):
    """Clip sampling and augmentation (all of :class:`VideoDataConfig`), plus the
    loader's worker processes and an optional AGD mixture (empty: ``--data`` alone)."""

    num_frames: int = 4
    image_size: int = 72
    num_workers: int = 0
    datasets: list[DatasetConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: must be >= 0, got {self.num_workers}")


@dataclass
class OptimConfig:
    """The optimiser: ``adamw`` or ``adafactor`` (the paper's choice).

    ``betas`` / ``eps`` are AdamW's (None: torch's defaults, (0.9, 0.999) and
    1e-8). Adafactor has neither (its second-moment decay follows t^-0.8), so
    setting them with it is an error rather than silently ignored.
    """

    name: Literal["adamw", "adafactor"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] | None = None
    eps: float | None = None
    grad_clip: float = 1.0  # max global L2 norm; 0 disables clipping

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip: must be >= 0")
        if self.betas is not None and not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas: each must be in [0, 1), got {list(self.betas)}")
        if self.eps is not None and self.eps <= 0:
            raise ConfigError(f"eps: must be > 0, got {self.eps}")
        if self.name == "adafactor" and (self.betas is not None or self.eps is not None):
            raise ConfigError("betas/eps: AdamW settings, which Adafactor does not have; "
                              "set optim.betas=null optim.eps=null or use optim.name=adamw")


@dataclass
class ScheduleConfig:
    """Linear warmup from 0, then ``decay`` to ``min_lr_ratio * lr``."""

    warmup_steps: int = 0
    decay: Literal["linear", "cosine", "constant"] = "linear"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps: must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class DistributedConfig:
    """Multi-process training (``torchrun``; docs/distributed.md).

    ``strategy``: ``ddp`` replicates the objective on every rank; ``fsdp`` shards
    parameters, gradients and optimiser state with FSDP2 (``fully_shard`` per
    transformer block, then the root). ``frozen``: how the objective's frozen
    modules (the stage-2 teacher) are placed under ``fsdp``: ``replicate`` keeps a
    full copy per rank (no communication), ``shard`` shards them like the rest
    (memory / ranks, one all-gather per block per step). ``backend`` ``auto``:
    NCCL on GPUs, Gloo on the CPU.
    """

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    strategy: Literal["ddp", "fsdp"] = "ddp"
    frozen: Literal["replicate", "shard"] = "replicate"
    reshard_after_forward: bool = True  # fsdp: free gathered block weights after forward (ZeRO-3), else keep them (ZeRO-2)
    find_unused_parameters: bool = False  # DDP: needed when some parameters get no gradient in a step


def _check_device(device: str) -> None:
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device: {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} but this machine has no usable CUDA device; use device=auto or device=cpu")


@dataclass
class TrainConfig:
    """Everything a run needs; ``config.yaml`` in a run folder is this, resolved."""

    seed: int = 0
    steps: int = 100
    batch_size: int = 8  # per rank and micro-batch
    accum_steps: int = 1  # micro-batches per optimiser step
    # With an objective that has loss_from_features (contrastive): open_clip's feature cache, so the whole
    # accumulated batch are negatives (one extra no-grad forward per micro-batch); False: per-micro-batch losses.
    accum_features: bool = True
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # bf16: autocast; auto: bf16 where native (precision.py)
    compile: bool = False  # torch.compile the objective
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10
    ckpt_every: int = 100
    keep_last: int = 3  # checkpoints kept (the final model is always kept)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    # {name: ..., **options}: checked against the named objective's options dataclass by load_config.
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "contrastive"})
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "accum_steps", "log_every", "ckpt_every", "keep_last"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if not isinstance(self.objective.get("name", "contrastive"), str):
            raise ConfigError("objective.name: must name a registered objective (e.g. contrastive)")
        _check_device(self.device)
        if self.distributed.strategy == "fsdp" and self.optim.name == "adafactor":
            # torch's Adafactor squares its column statistics in place, which DTensor refuses on a sharded
            # parameter (RuntimeError: aten.pow_.Scalar ... _NormPartial); checked here rather than at step 1.
            raise ConfigError("optim.name: adafactor does not run on FSDP2-sharded parameters (torch's Adafactor uses "
                              "in-place ops DTensor refuses); use optim.name=adamw with distributed.strategy=fsdp, "
                              "or distributed.strategy=ddp")
        if self.model.name:
            from open_videoprism.models import get_config

            patch = get_config(self.model.name).vision.patch_size
            if self.data.image_size % patch:
                raise ConfigError(f"data.image_size: {self.data.image_size} is not divisible by the patch size "
                                  f"{patch} of {self.model.name}")

    @property
    def objective_name(self) -> str:
        return str(self.objective.get("name", "contrastive"))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return to_yaml(self)


def objective_options(cfg: TrainConfig, source: str = "config") -> Any:
    """The typed options of ``cfg.objective`` for the objective it names (strictly checked)."""
    from open_videoprism.objectives import get_objective

    entry = get_objective(cfg.objective_name)
    values = {k: v for k, v in cfg.objective.items() if k != "name"}
    return build(entry.options, [(source, values)], source=source, path="objective")


def load_config(
    recipe: str | os.PathLike[str] | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """The resolved config of a recipe (a path, a shipped recipe name such as
    ``"stage1-tiny"``, a mapping, or None for the defaults) with ``key=value`` overrides."""
    if recipe is None:
        layers: list[Layer] = []
        source = "config"
    elif isinstance(recipe, Mapping):
        layers, source = [("config", recipe)], "config"
    else:
        path = recipe_path(recipe)
        layers, source = recipe_layers(path), str(path)
    cfg = build(TrainConfig, [*layers, *override_layers(overrides)], source=source)
    options = objective_options(cfg, source)
    cfg.objective = {"name": cfg.objective_name, **to_dict(options)}
    return cfg


__all__ = [
    "DataConfig",
    "DatasetConfig",
    "DistributedConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "load_config",
    "objective_options",
    "recipe_path",
]
