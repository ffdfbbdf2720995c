"""The one-stage baseline (paper Fig. 4): contrastive and masked pixel modelling on one model."""

from __future__ import annotations

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.errors import ConfigError
from open_videoprism.models.decoders import DecoderConfig
from open_videoprism.objectives import get_objective
from open_videoprism.objectives.one_stage import OneStageObjective, OneStageOptions, patch_targets

SMALL_DECODER = DecoderConfig(width=32, depth=1, num_heads=4, mlp_dim=64)


def test_one_stage_baseline_trains_contrastive_and_mae_together() -> None:
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_lvt_test_tiny")
    obj = OneStageObjective(model, OneStageOptions(decoder=SMALL_DECODER))
    g = torch.Generator().manual_seed(0)
    low = torch.rand(8, 4, 3, 4, 4, generator=g)  # blocky clips: one colour per patch, learnable
    batch = {
        "video": low.repeat_interleave(18, dim=-1).repeat_interleave(18, dim=-2),
        "text_ids": torch.randint(1, 1000, (8, 8), generator=g),
        "text_paddings": torch.zeros(8, 8),
        "index": torch.arange(8),
    }
    batch = obj.collate_fn(batch)
    # Pixel targets: per-patch normalised, in token order (t * N + n, patches row-major).
    tgt = patch_targets(batch["video"], 18)
    assert tgt.shape == (8, 64, 3 * 18 * 18)
    patch = batch["video"][1, 2, :, 18:36, 36:54].reshape(-1)  # frame 2, row 1, col 2 -> token 2*16 + 6
    ref = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
    assert torch.allclose(tgt[1, 2 * 16 + 6], ref, atol=1e-5)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(80):  # std-0.02 init at width 64: a plateau of ~35 steps before the losses fall
        out = obj(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: out[k].item() for k in ("loss_contrastive", "loss_mae")}
    assert model.text.token_embed.weight.grad is not None  # the text tower trains too
    assert out["loss_contrastive"].item() < 0.5 * first["loss_contrastive"]
    assert out["loss_mae"].item() < 0.85 * first["loss_mae"]
    assert obj.export_model() is model and not obj.decoder.shuffle


def test_one_stage_is_its_own_registered_objective() -> None:
    entry = get_objective("one_stage")
    assert entry.options is OneStageOptions
    with pytest.raises(ConfigError, match="without a teacher"):
        entry.builder(OneStageOptions(), train_config=None, teacher="runs/s1")
    with pytest.raises(ConfigError, match="video-text model"):
        OneStageObjective(ovp.create_model("videoprism_test_tiny"))
