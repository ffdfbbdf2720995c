"""The one-stage baseline: video-text contrastive and masked modelling trained together.

The paper's Fig. 4 compares its two-stage recipe with "contrastive + MAE in one
stage": one video-text model, no teacher, both losses from the first step. Here:

* a mask (BEVT at 0.65 by default, the stage-2 mask) hides tokens and the encoder
  sees only the visible ones;
* the **contrastive** loss (symmetric InfoNCE, learnable temperature as in stage 1)
  pairs the MAP embedding of the visible tokens with the caption;
* the **MAE** loss reconstructs the masked patches' pixels (VideoMAE's per-patch
  normalised targets, mean squared error over masked patches) through a token decoder
  of the stage-2 size, without token shuffling;
* ``loss = contrastive_weight * loss_contrastive + mae_weight * loss_mae``.

The exported model is the whole video-text model, so it is probed and scored
zero-shot like stage 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from open_videoprism.errors import ConfigError
from open_videoprism.masks import MaskCollator, MaskConfig, TokenGrid, build_mask_generator
from open_videoprism.models import VideoPrism
from open_videoprism.models.decoders import DecoderConfig, TokenDecoder
from open_videoprism.objectives import build_model, register_objective
from open_videoprism.objectives.loss import info_nce


@dataclass
class OneStageOptions:
    """The ``objective:`` section of a one-stage recipe (besides ``name: one_stage``)."""

    mask: MaskConfig = field(default_factory=MaskConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    contrastive_weight: float = 1.0
    mae_weight: float = 1.0
    temperature_init: float = 0.07  # CLIP init: logit_scale = log(1 / 0.07)
    max_logit_scale: float = 100.0


def patch_targets(video: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, T*N, 3*p*p]`` pixel patches in token order, each normalised to zero mean, unit variance."""
    b, t, c, h, w = video.shape
    x = video.float().reshape(b, t, c, h // patch, patch, w // patch, patch).permute(0, 1, 3, 5, 2, 4, 6)
    x = x.reshape(b, t * (h // patch) * (w // patch), c * patch * patch)
    return (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=True) + 1e-6).sqrt()


class OneStageObjective(nn.Module):
    """Contrastive + masked pixel modelling on one video-text model (see the module docstring)."""

    def __init__(self, model: VideoPrism, options: OneStageOptions | None = None) -> None:
        super().__init__()
        options = options or OneStageOptions()
        if model.text is None or model.pooler is None:
            raise ConfigError("objective one_stage needs a video-text model (an *_lvt_* config in model:)")
        if options.temperature_init <= 0 or options.max_logit_scale <= 0:
            raise ConfigError("objective.temperature_init and objective.max_logit_scale must be > 0")
        self.options = options
        self.model = model.float().train()
        v = model.cfg.vision
        self.patch = v.patch_size
        self.decoder = TokenDecoder(v.width, 3 * v.patch_size**2, options.decoder, (v.num_frames, v.grid, v.grid), shuffle=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / options.temperature_init)))
        self.collate_fn = MaskCollator(build_mask_generator(options.mask), v.patch_size, options.mask.seed)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        for key in ("video", "text_ids", "text_paddings"):
            if key not in batch:
                raise KeyError(f"objective one_stage needs batch[{key!r}] (captions and a tokenizer)")
        video = batch["video"]
        if "visible_idx" not in batch:
            batch = self.collate_fn(dict(batch))
        visible = batch["visible_idx"].to(video.device)
        grid = TokenGrid.from_video(video.shape, self.patch)
        out = self.model.encode_video(video, visible=visible, frame_embeddings=False)
        text = self.model.encode_text(batch["text_ids"], batch["text_paddings"])
        scale = self.logit_scale.exp().clamp(max=self.options.max_logit_scale)
        assert out.embedding is not None  # a video-text model (checked at construction)
        loss_con, _ = info_nce(out.embedding, text, scale)
        pred, _ = self.decoder(out.tokens, visible, (grid.frames, grid.height, grid.width))
        masked = torch.ones(pred.shape[:2], device=pred.device).scatter_(1, visible, 0.0)
        err = (pred.float() - patch_targets(video, self.patch)).square().mean(-1)
        loss_mae = (err * masked).sum() / masked.sum().clamp(min=1.0)
        loss = self.options.contrastive_weight * loss_con + self.options.mae_weight * loss_mae
        return {"loss": loss, "loss_contrastive": loss_con, "loss_mae": loss_mae, "temperature": 1.0 / scale.detach()}

    def export_model(self) -> VideoPrism:
        return self.model


@register_objective("one_stage", options=OneStageOptions)
def build_one_stage(options: OneStageOptions, *, train_config: Any, teacher: str | None = None) -> OneStageObjective:
    """Registry builder: the video-text model of ``train_config.model``, no teacher."""
    if teacher:
        raise ConfigError("objective one_stage trains without a teacher; drop --teacher")
    return OneStageObjective(build_model(train_config.model, seed=train_config.seed), options)


__all__ = ["OneStageObjective", "OneStageOptions", "build_one_stage", "patch_targets"]
