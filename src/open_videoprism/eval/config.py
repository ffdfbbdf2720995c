"""The ``eval:`` section of the config tree: every setting of the frozen-backbone tasks.

Each head keeps its own dataclass (and its own seed), so ``eval.probe.lr`` is the
``lr`` the probe trainer reads; ``videoprism eval`` flags such as ``--epochs`` are
shorthands for overrides of the head the task trains.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from open_videoprism.config import build, override_layers, recipe_layers, recipe_path
from open_videoprism.errors import ConfigError
from open_videoprism.eval.captioning import CaptionConfig
from open_videoprism.eval.features import FeatureConfig
from open_videoprism.eval.localization import LocalizationConfig
from open_videoprism.eval.probes import ProbeConfig


@dataclass
class EvalConfig:
    """Settings of ``videoprism eval`` / :func:`open_videoprism.evaluate`.

    Attributes:
        features: clip sampling and extraction (``label_field`` picks the class field).
        probe: the ``probe`` task's head (``kind: attentive | linear``); the ``linear``
            task is this head with ``kind: linear``. The attentive probe reads its tokens
            memory-mapped from the feature shards and trains on the model's device;
            ``order: shards`` (with ``shard_window``, default 4) streams an epoch shard by
            shard instead of one global shuffle, for feature sets larger than the page cache.
        localize: the temporal head of ``localize``.
        caption: the resampler + decoder of ``caption`` and ``qa``.
        snippets: ``localize``: clips per long video.
        templates: zero-shot prompts with ``{}`` for the class name (empty: the
            data's own prompt plus CLIP-style ones).
        plots: write PNG figures next to the metrics.
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    localize: LocalizationConfig = field(default_factory=LocalizationConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    snippets: int = 16
    templates: list[str] = field(default_factory=list)
    plots: bool = True

    def __post_init__(self) -> None:
        if self.snippets < 2:
            raise ConfigError(f"snippets: must be >= 2, got {self.snippets}")
        for t in self.templates:
            if "{}" not in t:
                raise ConfigError(f"templates: {t!r} has no {{}} for the class name")

    def set_seed(self, seed: int) -> None:
        """One seed for every head (the ``--seed`` flag)."""
        self.probe.seed = self.localize.seed = self.caption.seed = seed


def load_eval_config(recipe: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> EvalConfig:
    """The ``eval:`` section of a recipe (None: the defaults) with overrides of its keys
    (``probe.epochs=5``; a leading ``eval.`` is accepted too)."""
    layers = []
    source = "eval config"
    if recipe is not None:
        path = recipe_path(recipe)
        layers = [(src, data.get("eval") or {}) for src, data in recipe_layers(path)]
        source = str(path)
    layers += override_layers(o.removeprefix("eval.") for o in overrides)
    return build(EvalConfig, layers, source=source, path="eval")


__all__ = ["EvalConfig", "load_eval_config"]
