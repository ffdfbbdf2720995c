"""The declared initialisation scheme (the official lecun_normal), measured, and the declared weight-decay exemptions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import open_videoprism as ovp
from open_videoprism.eval.captioning import VideoTextDecoder
from open_videoprism.eval.localization import TemporalHead
from open_videoprism.eval.probes import AttentiveProbe
from open_videoprism.models.decoders import DecoderConfig, TokenDecoder
from open_videoprism.models.layers import Transformer, fan_in_std
from open_videoprism.optim import param_groups


def _std(t: torch.Tensor) -> float:
    return float(t.detach().float().std())


def test_transformer_weights_follow_the_official_lecun_normal() -> None:
    torch.manual_seed(0)
    dim, heads, mlp = 256, 4, 1024
    stack = Transformer(4, dim, heads, mlp)
    for block in stack.blocks:
        # Attention kernels are [D, heads, head_dim] in the official code: flax fan-in D * heads.
        for dense in (block.attn.q, block.attn.k, block.attn.v, block.attn.out):
            assert _std(dense.weight) == pytest.approx((dim * heads) ** -0.5, rel=0.03)
            assert not dense.bias.any()
        assert _std(block.mlp.fc1.weight) == pytest.approx(dim**-0.5, rel=0.03)
        assert _std(block.mlp.fc2.weight) == pytest.approx(mlp**-0.5, rel=0.03)  # fan-in of fc2 is the MLP width
        assert not block.mlp.fc1.bias.any() and not block.mlp.fc2.bias.any()
        for norm in (block.norm1, block.norm2):
            assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    # Re-initialising gives the same statistics.
    stack.blocks[-1].attn.init_weights()
    assert _std(stack.blocks[-1].attn.out.weight) == pytest.approx((dim * heads) ** -0.5, rel=0.03)


def test_fan_in_std_scales_with_width() -> None:
    # The reason for the scheme: a fixed 0.02 is 6x below 1/sqrt(fan_in) at width 64.
    assert fan_in_std(torch.empty(8, 64)) == pytest.approx(0.125)
    assert fan_in_std(torch.empty(8, 3, 18, 18)) == pytest.approx((3 * 18 * 18) ** -0.5)


def test_model_tables_embeddings_and_queries() -> None:
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_lvt_test_tiny")
    enc, text = model.encoder, model.text
    assert text is not None and model.pooler is not None
    patch = enc.patch_embed.weight
    assert _std(patch) == pytest.approx(patch[0].numel() ** -0.5, rel=0.05) and not enc.patch_embed.bias.any()
    for table in (enc.spatial_pos, enc.temporal_pos):  # lecun_normal over [rows, D]: fan-in = rows
        assert _std(table) == pytest.approx(table.shape[0] ** -0.5, rel=0.15)
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
