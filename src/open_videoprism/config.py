"""Typed configs: plain dataclasses filled from YAML and ``key=value`` overrides.

Every configurable part of the library (the training tree in
:mod:`open_videoprism.train.config`, an objective's options, the evaluation
section, a model's architecture) is a ``@dataclass``; this module turns layers
of plain mappings -- a recipe, the recipes it names as ``base:``, command-line
overrides -- into an instance, with OmegaConf structured configs doing the
merging and the type checks. What it adds on top:

- one-line :class:`~open_videoprism.errors.ConfigError` messages naming the
  layer (file or override) and the full key, also inside lists;
- a dataclass's ``__post_init__`` may raise ``ConfigError("field: problem")``;
  the message gets the section's path prefixed;
- every float must be finite (``.nan``/``.inf`` never reach an optimiser);
- YAML is read with 1.2 floats (``1e-3`` is a number, not a string) and a bound
  on its size after alias expansion, so a crafted file cannot blow up memory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from open_videoprism.errors import ConfigError

T = TypeVar("T")

MAX_YAML_BYTES = 1 << 20  # recipes are a few KB
MAX_YAML_NODES = 100_000  # scalars + containers after expanding aliases
MAX_YAML_DEPTH = 64  # nested [ and { (PyYAML's parser slows quadratically with depth)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-3`` as a float (YAML 1.2, as users expect)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int], source: str) -> int:
    """Nodes in ``node`` with every alias expanded, counted without expanding (memoised per node)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        raise ConfigError(f"{source}: a YAML anchor refers to itself")
    open_.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(c, memo, open_, source) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo, open_, source) + _expanded_size(v, memo, open_, source) for k, v in node.value)
    else:
        size = 1
    open_.discard(key)
    if size > MAX_YAML_NODES:
        raise ConfigError(f"{source}: YAML expands to more than {MAX_YAML_NODES} nodes (nested aliases?); "
                          "write the values out instead")
    memo[key] = size
    return size


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document safely; errors are one line naming ``source``."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters; a config is at most {MAX_YAML_BYTES}")
    depth = peak = 0
    for m in re.finditer(r"[\[\]{}]", text):
        depth += 1 if m.group() in "[{" else -1
        peak = max(peak, depth)
    if peak > MAX_YAML_DEPTH:
        raise ConfigError(f"{source}: YAML nested more than {MAX_YAML_DEPTH} levels deep")
    try:
        loader = _Loader(text)  # the reader refuses control characters here
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:  # deep block nesting
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """One YAML file as a mapping (empty file: ``{}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config is at most {MAX_YAML_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a UTF-8 YAML file") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """``"optim.lr=3e-4"`` -> ``{"optim": {"lr": 0.0003}}``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not k for k in key.split(".")):
        raise ConfigError(f"override {text!r}: expected key=value (e.g. optim.lr=3e-4)")
    try:
        value = parse_yaml(raw, f"override {text!r}") if raw.strip() else ""
    except ConfigError:
        value = raw  # not YAML: take the text as a string, the type check decides
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = key.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = value
    return out


Layer = tuple[str, Mapping[str, Any]]


def override_layers(overrides: Iterable[str]) -> list[Layer]:
    return [(f"override {o!r}", parse_override(o)) for o in overrides]


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path and key not in (None, "") else str(key or path)


def _message(exc: OmegaConfBaseException, path: str = "") -> str:
    """OmegaConf's error as one line: ``key: what is wrong``."""
    msg = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    msg = re.sub(r"^Key '(\w+)' not in '(\w+)'", r"unknown key (\2 has no '\1')", msg)
    key = _join(path, getattr(exc, "full_key", None))
    return f"{key}: {msg}" if key else msg


def _check_shapes(schema: type, data: Mapping[str, Any], path: str) -> None:
    """Check what OmegaConf reports without the key: list-of-dataclass items (checked
    one by one, so errors carry ``key[i].field``) and fixed-length tuples."""
    hints = typing.get_type_hints(schema)
    for key, value in data.items():
        tp = hints.get(key)
        options = [t for t in (tp, *typing.get_args(tp)) if t is not type(None)]
        sub = f"{path}{key}"
        for t in options:
            args = typing.get_args(t)
            if (typing.get_origin(t) is tuple and Ellipsis not in args and isinstance(value, (list, tuple))
                    and len(value) != len(args)):
                raise ConfigError(f"{sub}: expected a list of {len(args)} values, got {list(value)}")
            if typing.get_origin(t) is list and args and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
                for i, v in enumerate(value):
                    try:
                        OmegaConf.merge(OmegaConf.structured(args[0]), v)
                    except OmegaConfBaseException as exc:
                        raise ConfigError(f"{sub}[{i}].{_message(exc)}") from None
            if isinstance(t, type) and dataclasses.is_dataclass(t) and isinstance(value, Mapping):
                _check_shapes(t, value, f"{sub}.")


def _failing_section(node: DictConfig | ListConfig, path: str) -> str | None:
    """The innermost section whose dataclass refuses its values (``__post_init__``)."""
    items = [("." + str(k), v) for k, v in node.items()] if isinstance(node, DictConfig) else \
        [(f"[{i}]", v) for i, v in enumerate(node)]
    for key, child in items:
        if OmegaConf.is_config(child):
            sub = path + key
            found = _failing_section(child, sub.lstrip("."))
            if found is not None:
                return found
    try:
        OmegaConf.to_object(node)
    except ConfigError:
        return path
    return None


def check_finite(obj: Any, path: str = "") -> None:
    """Every float in a config must be finite."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{path}: must be a finite number, got {obj}")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            check_finite(getattr(obj, f.name), f"{path}.{f.name}".lstrip("."))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            check_finite(v, f"{path}.{k}".lstrip("."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{path}[{i}]")


def build(schema: type[T], layers: Sequence[Layer] = (), source: str = "config", path: str = "") -> T:
    """An instance of dataclass ``schema`` from ``layers`` merged in order (later wins;
    lists are replaced, mappings merged).

    Strict: unknown keys and wrong types raise a one-line :class:`ConfigError` naming
    the layer and the key; values refused by the merged result's checks name
    ``source`` and the key. ``path`` is where ``schema`` sits in a larger tree
    (``"objective"``), for the messages.
    """
    cfg = OmegaConf.structured(schema)
    for layer, data in layers:
        try:
            _check_shapes(schema, data, f"{path}." if path else "")
            cfg = OmegaConf.merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{layer}: {exc}") from None
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{layer}: {_message(exc, path)}") from None
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError as exc:
        where = _join(path, _failing_section(cfg, ""))
        raise ConfigError(f"{source}: {where + '.' if where else ''}{exc}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_message(exc, path)}") from None
    try:
        check_finite(obj, path)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return typing.cast(T, obj)


RECIPES_DIR = Path(__file__).resolve().parent / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``configs/*.yaml``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A recipe file: an existing path as is, else a shipped recipe by name (``"stage1-tiny"``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"{name_or_path}: no such config file or shipped recipe (recipes: {', '.join(list_recipes())})")


def recipe_layers(path: str | os.PathLike[str], _seen: tuple[Path, ...] = ()) -> list[Layer]:
    """A recipe and its ``base:`` chain as layers, the deepest base first. ``base:`` is a
    path relative to the recipe, or the name of a shipped recipe."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: circular 'base:' chain")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return [(str(path), data)]
    local = path.parent / str(base)
    parent = local if local.is_file() else recipe_path(str(base))
    return [*recipe_layers(parent, (*_seen, path.resolve())), (str(path), data)]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain YAML/JSON-able data (tuples become lists)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = ["RECIPES_DIR", "Layer", "build", "check_finite", "list_recipes", "override_layers", "parse_override",
           "parse_yaml", "read_yaml", "recipe_layers", "recipe_path", "to_dict", "to_yaml"]
