"""Training configs: typed dataclasses loaded from YAML, with ``key=value`` overrides.

A recipe is a YAML file whose sections mirror :class:`TrainConfig`::

    base: tiny-synthetic.yaml       # optional; merged underneath, path relative to this file
    steps: 300
    optim: {name: adamw, lr: 1.0e-3}
    objective: {name: contrastive, token_drop_ratio: 0.5}

Every key is checked against the dataclass fields and every value against the
field's type, so a typo fails at once with one line naming the file, the key
and what is accepted (a :class:`~open_videoprism.errors.ConfigError`), instead of
being silently ignored hours into a run. The ``objective`` section is free-form
here and validated against the options dataclass the named objective registered
(see :mod:`open_videoprism.objectives`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from open_videoprism.errors import ConfigError


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


@dataclass
class DatasetConfig:
    """One dataset of an alternating (AGD) mixture.

    ``source`` is a manifest or WebDataset shards; relative paths resolve
    against the ``--data`` folder (or the config file's folder). ``weight``
    sets how often its batches are used relative to the others.
    ``num_frames = 1`` makes an image dataset (1-frame videos).
    """

    source: str = ""
    weight: float = 1.0
    num_frames: int | None = None
    batch_size: int | None = None


@dataclass
class DataConfig:
    """Clip decoding and augmentation (mirrors ``open_videoprism.data.VideoDataConfig``)."""

    num_frames: int = 4
    image_size: int = 72
    frame_stride: int = 2
    sampling: str = "random"
    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = False
    max_text_length: int = 64
    max_failure_ratio: float = 0.1
    decode_cache_mb: int = 0  # decoded videos kept in memory (small corpora with num_workers: 0)
    num_workers: int = 0
    # Empty: a single dataset given by `--data`. Otherwise the AGD mixture.
    datasets: list[DatasetConfig] = field(default_factory=list)


@dataclass
class OptimConfig:
    """Optimiser. ``name``: ``adamw`` or ``adafactor`` (the paper's choice)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global L2 norm; 0 disables clipping


@dataclass
class ScheduleConfig:
    """Linear warmup from 0 then ``decay`` (``linear``, ``cosine`` or ``constant``) to ``min_lr_ratio * lr``."""

    warmup_steps: int = 0
    decay: str = "linear"
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    """Everything a run needs; ``config.yaml`` in a run folder is this, resolved."""

    seed: int = 0
    steps: int = 100
    batch_size: int = 8  # per rank and micro-batch
    accum_steps: int = 1  # micro-batches per optimiser step
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile the objective
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10
    ckpt_every: int = 100
    keep_last: int = 3  # checkpoints kept (the final model is always kept)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Free-form here: {name: ..., **options}; validated by the objective registry.
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "contrastive"})

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def objective_name(self) -> str:
        return str(self.objective.get("name", "contrastive"))


_CHOICES: dict[str, tuple[str, ...]] = {
    "precision": ("fp32", "bf16"),
    "optim.name": ("adamw", "adafactor"),
    "schedule.decay": ("linear", "cosine", "constant"),
    "data.sampling": ("random", "uniform", "multiclip"),
}


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (and convert ints to floats, lists to tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            raise ConfigError(f"unknown key {path!r}; known keys here: {', '.join(names)}")
        v = _coerce(value, hints[key], path)
        choices = _CHOICES.get(path)
        if choices is not None and v not in choices:
            raise ConfigError(f"{path}: {v!r} is not one of {', '.join(choices)}")
        kwargs[key] = v
    return cls(**kwargs)


def build_dataclass(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """Public form of the strict builder, for objectives validating their options."""
    return _build(cls, values, where)


def _validate(cfg: TrainConfig) -> None:
    """Cross-field checks the types cannot express."""
    positive = {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "accum_steps": cfg.accum_steps,
        "log_every": cfg.log_every,
        "ckpt_every": cfg.ckpt_every,
        "keep_last": cfg.keep_last,
    }
    for k, v in positive.items():
        if v < 1:
            raise ConfigError(f"{k}: must be >= 1, got {v}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")
    if cfg.optim.weight_decay < 0 or cfg.optim.grad_clip < 0:
        raise ConfigError("optim.weight_decay and optim.grad_clip must be >= 0")
    if cfg.schedule.warmup_steps < 0 or not 0.0 <= cfg.schedule.min_lr_ratio <= 1.0:
        raise ConfigError("schedule.warmup_steps must be >= 0 and schedule.min_lr_ratio in [0, 1]")
    if not isinstance(cfg.objective.get("name"), str):
        raise ConfigError("objective.name: must name a registered objective (e.g. contrastive)")
    for i, d in enumerate(cfg.data.datasets):
        if not d.source:
            raise ConfigError(f"data.datasets[{i}].source: missing")
        if d.weight <= 0:
            raise ConfigError(f"data.datasets[{i}].weight: must be > 0, got {d.weight}")


def objective_options(cfg: TrainConfig) -> Any:
    """The typed options of ``cfg.objective`` for the objective it names (strictly checked)."""
    from open_videoprism.objectives import get_objective

    entry = get_objective(cfg.objective_name)
    values = {k: v for k, v in cfg.objective.items() if k != "name"}
    return _build(entry.options, _fix_yaml_floats(values), "objective")


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, recursing into mappings (lists are replaced, not merged)."""
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe and its ``base:`` chain into one plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: circular 'base:' chain")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a UTF-8 YAML file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        data = deep_merge(read_yaml(path.parent / base, _seen + (path.resolve(),)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> ``(["optim", "lr"], 0.0003)``; values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. optim.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), _fix_yaml_floats(value)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    out = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[k] = child
            node = child
        node[keys[-1]] = value
    return out


_SCI_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _fix_yaml_floats(data: Any) -> Any:
    """PyYAML reads ``1e-3`` (no dot) as a string; turn such strings back into floats."""
    if isinstance(data, dict):
        return {k: _fix_yaml_floats(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_fix_yaml_floats(v) for v in data]
    if isinstance(data, str) and _SCI_FLOAT.match(data.strip()):
        return float(data)
    return data


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig`; errors name ``source``."""
    try:
        cfg = _build(TrainConfig, _fix_yaml_floats(dict(data)), "")
        cfg.objective = {"name": "contrastive", **cfg.objective}
        _validate(cfg)
        objective_options(cfg)  # unknown objective keys fail now, not after the model is built
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``configs/*.yaml``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path as is, else a shipped recipe by name (``"stage1-tiny"``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"{name_or_path}: no such config file or shipped recipe (recipes: {', '.join(list_recipes())})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load a recipe (a path, a shipped recipe name such as ``"stage1-tiny"``, or the defaults when
    ``path`` is None) and apply ``key=value`` overrides."""
    if path is not None:
        path = recipe_path(path)
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return config_from_dict(data, str(path) if path is not None else "config")


__all__ = [
    "RECIPES_DIR",
    "list_recipes",
    "recipe_path",
    "DataConfig",
    "DatasetConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "build_dataclass",
    "config_from_dict",
    "deep_merge",
    "load_config",
    "objective_options",
    "parse_override",
    "read_yaml",
]
