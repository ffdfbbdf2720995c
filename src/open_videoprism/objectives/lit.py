"""LiT: locked-image (here: locked-video) text tuning for zero-shot use of a video encoder.

The paper scores its final model on zero-shot retrieval and classification after LiT
(App. F): the stage-2 encoder is **locked**, and a text encoder and the video-side
MAP head, both initialised from the stage-1 model, are trained on the stage-1 data
with the stage-1 recipe. Here the video side's trainable heads are the auxiliary
layers and the MAP pooler (everything between the encoder and the embedding).

Config: ``model.init`` is the stage-1 video-text model (text tower and heads),
``objective.locked_encoder`` the encoder to lock (a stage-2 run folder or
checkpoint)::

    videoprism pretrain --config lit-tiny --data pretrain.jsonl --out runs/s2-lit \\
        model.init=runs/s1 objective.locked_encoder=runs/s2

The locked encoder stays in eval mode and gets no gradients, so its weights leave the
run bit-identical; the exported model is the whole video-text model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from open_videoprism.errors import ConfigError
from open_videoprism.models import VideoPrism
from open_videoprism.objectives import build_model, load_into, register_objective
from open_videoprism.objectives.contrastive import ContrastiveObjective, ContrastiveOptions

log = logging.getLogger(__name__)


@dataclass
class LitOptions(ContrastiveOptions):
    """Stage-1 contrastive options plus the encoder to lock."""

    locked_encoder: str = ""


class LitObjective(ContrastiveObjective):
    """The stage-1 contrastive loss with the video encoder locked."""

    def __init__(self, model: VideoPrism, options: LitOptions) -> None:
        super().__init__(model, options)
        model.encoder.requires_grad_(False)
        model.encoder.eval()

    def train(self, mode: bool = True) -> LitObjective:
        super().train(mode)
        self.model.encoder.eval()  # locked: never switches to training behaviour
        return self


@register_objective("lit", options=LitOptions)
def build_lit(options: LitOptions, *, train_config: Any, teacher: str | None = None) -> LitObjective:
    """Registry builder: heads and text from ``model.init``, the encoder from ``locked_encoder``."""
    if teacher:
        raise ConfigError("objective lit takes the encoder to lock as objective.locked_encoder=PATH, not --teacher")
    if not options.locked_encoder:
        raise ConfigError("objective.locked_encoder: empty; set it to the encoder to lock (a stage-2 run or checkpoint)")
    if not getattr(train_config.model, "init", None):
        log.warning("lit: model.init is empty, so the text tower and heads start from random weights, not stage 1")
    model = build_model(train_config.model, seed=train_config.seed)
    loaded, _ = load_into(model, options.locked_encoder, ("encoder.",))  # raises when it holds no encoder
    log.info("lit: locked %d encoder tensors from %s", loaded, options.locked_encoder)
    return LitObjective(model, options)


__all__ = ["LitObjective", "LitOptions", "build_lit"]
