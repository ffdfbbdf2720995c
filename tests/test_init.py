"""The declared initialisation scheme (timm / V-JEPA), measured, and the declared weight-decay exemptions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import open_videoprism as ovp
from open_videoprism.eval.captioning import VideoTextDecoder
from open_videoprism.eval.localization import TemporalHead
from open_videoprism.eval.probes import AttentiveProbe
from open_videoprism.models.decoders import DecoderConfig, TokenDecoder
from open_videoprism.models.layers import INIT_STD, Transformer
from open_videoprism.optim import param_groups


def _std(t: torch.Tensor) -> float:
    return float(t.detach().float().std())


def test_transformer_weights_are_truncated_normal_and_residual_projections_depth_scaled() -> None:
    torch.manual_seed(0)
    depth = 4
    stack = Transformer(depth, 256, 4, 1024)
    for layer_id, block in enumerate(stack.blocks, start=1):
        for dense in (block.attn.q, block.attn.k, block.attn.v, block.mlp.fc1):
            assert _std(dense.weight) == pytest.approx(INIT_STD, rel=0.02)
            assert dense.weight.abs().max() <= 2.0 and not dense.bias.any()
        scaled = INIT_STD / math.sqrt(2 * layer_id)
        for dense in (block.attn.out, block.mlp.fc2):
            assert _std(dense.weight) == pytest.approx(scaled, rel=0.02), (layer_id, dense)
            assert not dense.bias.any()
        for norm in (block.norm1, block.norm2):
            assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    # Re-initialising gives the same statistics (no compounding of the depth scale).
    stack.blocks[-1].init_weights()
    assert _std(stack.blocks[-1].attn.out.weight) == pytest.approx(INIT_STD / math.sqrt(2 * depth), rel=0.02)


def test_model_tables_embeddings_and_queries() -> None:
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_lvt_test_tiny")
    enc, text = model.encoder, model.text
    assert text is not None and model.pooler is not None
    assert _std(enc.patch_embed.weight) == pytest.approx(INIT_STD, rel=0.05) and not enc.patch_embed.bias.any()
    both = torch.cat([enc.spatial_pos.flatten(), enc.temporal_pos.flatten()])
    assert _std(both) == pytest.approx(INIT_STD, rel=0.1)
    # Scaled by sqrt(D) in the forward, so drawn at D ** -0.5.
    width = text.cfg.width
    assert _std(text.token_embed.weight) == pytest.approx(width**-0.5, rel=0.02)
    assert _std(model.pooler.query) == pytest.approx(model.pooler.query.shape[-1] ** -0.5, rel=0.3)
    assert not model.pooler.attn.per_dim_scale.any()


def test_every_head_declares_its_weight_decay_exemptions() -> None:
    heads: list[tuple[nn.Module, set[str]]] = [
        (ovp.create_model("videoprism_lvt_test_tiny"), {"encoder.spatial_pos", "encoder.temporal_pos", "pooler.query", "text.cls"}),
        (TokenDecoder(32, 16, DecoderConfig(width=32, depth=1, num_heads=2, mlp_dim=64), (2, 2, 2)), {"spatial_pos", "temporal_pos"}),
        (AttentiveProbe(32, 5), {"pool.query"}),
        (VideoTextDecoder(32, 50, dim=32, num_layers=1), {"resampler.latents", "pos"}),
        (TemporalHead(32, 3, hidden=16), set()),
    ]
    for module, exempt in heads:
        groups = {g["name"]: g for g in param_groups(module, 0.1)}
        names = {id(p): n for n, p in module.named_parameters()}
        no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
        decay = {names[id(p)] for p in groups["decay"]["params"]}
        assert exempt <= no_decay, type(module).__name__
        assert all(p.ndim <= 1 for n, p in module.named_parameters() if n in no_decay - exempt)
        assert all(p.ndim > 1 for n, p in module.named_parameters() if n in decay) and not decay & exempt
