"""Stage 1: video-text contrastive pretraining (VideoPrism §2.3.1).

The video side is the factorized encoder, the auxiliary layers and the MAP
head; the text side the CoCa-style text encoder. Both embeddings are
L2-normalised and trained with symmetric InfoNCE (:func:`~open_videoprism.objectives.loss.info_nce`)
under a learnable temperature (CLIP: ``logit_scale`` initialised to
``log(1 / 0.07)``, the scale clamped to at most 100).

Token dropping (FLIP-style, the paper drops 50 % of the video tokens with tube
masking to save memory): the tube mask generator of :mod:`open_videoprism.masks`
keeps the same random spatial positions in every frame, and only those tokens
go through the encoder (``encode_video(visible=...)``). It draws from the
global torch RNG, which training checkpoints capture, so a resumed run drops
the same tokens. It is applied in training mode only; evaluation sees every token.

Images are 1-frame videos: the encoder resizes its temporal table to length 1,
as the official code interpolates it.

Accumulation with a feature cache (open_clip's ``accum_freq``): the objective
splits into :meth:`ContrastiveObjective.features` (per-pair embeddings and the
scale) and :meth:`ContrastiveObjective.loss_from_features`, so the engine can
embed every micro-batch of a step without gradients, then recompute each with
gradients and score it against the cached others: every accumulated pair is a
negative, and the loss and gradient are those of one batch ``accum_steps`` times
larger (``tests/test_distributed.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from open_videoprism.errors import ConfigError
from open_videoprism.masks import TokenGrid, TubeMaskGenerator
from open_videoprism.models import VideoPrism
from open_videoprism.objectives import build_model, register_objective
from open_videoprism.objectives.loss import info_nce, positive_columns


@dataclass
class ContrastiveOptions:
    """The ``objective:`` section of a stage-1 recipe (besides ``name: contrastive``)."""

    token_drop_ratio: float = 0.5  # fraction of spatial positions dropped (tube); 0 disables
    temperature_init: float = 0.07  # CLIP init: logit_scale = log(1 / 0.07)
    max_logit_scale: float = 100.0  # CLIP clamp of exp(logit_scale)
    learn_temperature: bool = True
    freeze_text: bool = False  # keep the text tower fixed (e.g. a released text encoder)
    # Images (1-frame videos) take the first row of the time table, as the paper's stage 1 does;
    # False resizes the table like the official inference code.
    crop_image_temporal_pos: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.token_drop_ratio < 1.0:
            raise ConfigError(f"token_drop_ratio: must be in [0, 1), got {self.token_drop_ratio}")
        if self.temperature_init <= 0 or self.max_logit_scale <= 0:
            raise ConfigError("temperature_init and max_logit_scale: must be > 0")


class ContrastiveObjective(nn.Module):
    """Stage-1 objective: ``forward(batch)`` -> ``{loss, logit_scale, temperature, ...}``.

    Needs ``batch["video"]`` [B, T, 3, H, W], ``batch["text_ids"]`` and
    ``batch["text_paddings"]`` [B, L].
    """

    def __init__(self, model: VideoPrism, options: ContrastiveOptions | None = None) -> None:
        super().__init__()
        options = options or ContrastiveOptions()
        if model.text is None or model.pooler is None:
            raise ConfigError("the contrastive objective needs a video-text model (an *_lvt_* config with a text tower and MAP head)")
        if options.temperature_init <= 0 or options.max_logit_scale <= 0:
            raise ConfigError("objective.temperature_init and objective.max_logit_scale must be > 0")
        self.dropper = TubeMaskGenerator(options.token_drop_ratio)  # validates the ratio
        self.model = model
        self.options = options
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / options.temperature_init)), requires_grad=options.learn_temperature
        )
        if options.freeze_text:
            model.text.requires_grad_(False)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.options.max_logit_scale)

    def visible_tokens(self, video: torch.Tensor) -> torch.Tensor | None:
        """The tube-dropping visible indices for this batch, or None (eval, or ratio 0)."""
        if not self.training or self.options.token_drop_ratio <= 0:
            return None
        grid = TokenGrid.from_video(video.shape, self.model.encoder.cfg.patch_size)
        return self.dropper(video.shape[0], grid, torch.default_generator).visible.to(video.device)

    def features(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{video [n, D], text [n, D], logit_scale []}``: the L2-normalised embeddings of the pairs
        (rows of per-pair tensors line up) and the scale, whose graph carries the temperature."""
        for key in ("video", "text_ids", "text_paddings"):
            if key not in batch:
                raise KeyError(f"the contrastive objective needs batch[{key!r}] (a video-text dataset with captions and a tokenizer)")
        video = batch["video"]
        visible = self.visible_tokens(video)
        crop = self.options.crop_image_temporal_pos and video.shape[1] == 1
        v = self.model.encode_video(video, visible=visible, frame_embeddings=False, crop_temporal_pos=crop).embedding
        assert v is not None  # the constructor checked for a MAP head
        t = self.model.encode_text(batch["text_ids"], batch["text_paddings"])
        return {"video": v, "text": t, "logit_scale": self.scale()}

    def loss_from_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The symmetric InfoNCE of :meth:`features` (possibly several micro-batches' rows concatenated)."""
        scale = features["logit_scale"]
        loss, logits = info_nce(features["video"], features["text"], scale)
        with torch.no_grad():
            acc = (logits.argmax(1) == positive_columns(logits.shape[0], logits.device)).float().mean()
        return {"loss": loss, "logit_scale": scale.detach(), "temperature": 1.0 / scale.detach(), "batch_acc": acc}

    def forward(self, batch: dict[str, Any], features_only: bool = False) -> dict[str, torch.Tensor]:
        """The losses of ``batch``, or with ``features_only`` its :meth:`features` (called through the
        DDP / FSDP wrapper by the engine's feature-cache accumulation)."""
        features = self.features(batch)
        return features if features_only else self.loss_from_features(features)

    def export_model(self) -> VideoPrism:
        return self.model


@register_objective("contrastive", options=ContrastiveOptions)
def build_contrastive(options: ContrastiveOptions, *, train_config: Any, teacher: str | None = None) -> ContrastiveObjective:
    """Registry builder: the model from ``train_config.model`` (seeded by ``train_config.seed``)."""
    if teacher:
        raise ConfigError("--teacher is for the stage-2 distillation objective; stage 1 (contrastive) has no teacher")
    model = build_model(train_config.model, seed=train_config.seed)
    return ContrastiveObjective(model, options)


# --- embeddings of held-out pairs (retrieval metrics live in open_videoprism.eval) ---


__all__ = [
    "ContrastiveObjective",
    "ContrastiveOptions",
    "build_contrastive",
]
