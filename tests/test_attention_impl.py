"""The fast attention path equals the reference arithmetic (fp32, 1e-5) for every registered model.

Each registered config is shrunk to a tiny model of the same family (video-only, video-text,
the giant's primer-hybrid text tower) so that all of them run in seconds; the forward
covers full clips, padded frames (key masks), visible-token packing, text (causal + padding)
and masked pooling with a fully masked row, and one model checks the gradients too.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.models.config import VideoPrismConfig

ATOL = 1e-5


def _tiny(cfg: VideoPrismConfig) -> VideoPrismConfig:
    """The same family at test size: 4 frames of 4x4 patches, width 32, 2 heads."""
    v = dataclasses.replace(cfg.vision, grid=4, num_frames=4, width=32, spatial_layers=2, temporal_layers=2,
                            num_heads=2, mlp_dim=64)
    text = None
    if cfg.text is not None:
        text = dataclasses.replace(cfg.text, vocab_size=100, width=32, num_layers=2, num_heads=2, mlp_dim=64, max_length=8)
    pooler = 4 * v.width if cfg.has_pooler else 0
    return dataclasses.replace(cfg, vision=v, text=text, pooler_dim=pooler, auxiliary_layers=min(cfg.auxiliary_layers, 1))


def _pair(name: str) -> tuple[ovp.VideoPrism, ovp.VideoPrism]:
    torch.manual_seed(0)
    fast = ovp.create_model(_tiny(ovp.get_config(name)), attn_impl="fast")
    ref = ovp.create_model(_tiny(ovp.get_config(name)), attn_impl="reference")
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _close(a: torch.Tensor | None, b: torch.Tensor | None) -> None:
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ovp.list_models())
def test_fast_equals_reference(name):
    fast, ref = _pair(name)
    g = torch.Generator().manual_seed(1)
    video = torch.rand(2, 4, 3, 72, 72, generator=g)
    paddings = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]])
    visible = torch.stack([torch.randperm(64, generator=g)[:20] for _ in range(2)])
    with torch.no_grad():
        for kwargs in ({}, {"frame_paddings": paddings}, {"visible": visible}):
            a, b = fast.encode_video(video, **kwargs), ref.encode_video(video, **kwargs)
            for field in ("tokens", "spatial_tokens", "embedding", "frame_embeddings"):
                _close(getattr(a, field), getattr(b, field))
        if fast.text is not None:
            ids = torch.randint(1, 100, (3, 8), generator=g)
            pad = torch.zeros(3, 8)
            pad[1, 5:] = 1
            pad[2, :] = 1  # all padding: only the class token is a valid key
            _close(fast.encode_text(ids, pad), ref.encode_text(ids, pad))
        if fast.pooler is not None:
            tokens = torch.randn(3, 10, 32, generator=g)
            mask = torch.ones(3, 10, dtype=torch.bool)
            mask[1, 4:] = False
            mask[2] = False  # fully masked: the official finite mask value attends uniformly
            _close(fast.pool(tokens, mask), ref.pool(tokens, mask))


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "query-chunks"])
def test_fast_gradients_equal_reference(chunked, monkeypatch):
    from open_videoprism.models import layers

    if chunked:
        monkeypatch.setattr(layers, "LOGITS_BUDGET", 2 * 2 * 7)
    fast, ref = _pair("videoprism_lvt_v1_base")
    fast.train()
    ref.train()
    video = torch.rand(2, 4, 3, 72, 72, generator=torch.Generator().manual_seed(2))
    visible = torch.arange(0, 64, 2).expand(2, -1)
    for m in (fast, ref):
        out = m.encode_video(video, visible=visible)
        (out.tokens.square().mean() + out.embedding.sum()).backward()
    grads = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        if p.grad is not None or grads[name].grad is not None:
            torch.testing.assert_close(p.grad, grads[name].grad, atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded-frames"])
def test_bf16_fast_close_to_reference(padded):
    """bf16: the fast path's half-precision softmax and mask fill stay within bf16 rounding of the reference."""
    fast, ref = _pair("videoprism_v1_base")
    fast, ref = fast.to(torch.bfloat16), ref.to(torch.bfloat16)
    video = torch.rand(2, 4, 3, 72, 72, generator=torch.Generator().manual_seed(3))
    kwargs = {"frame_paddings": torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]])} if padded else {}
    with torch.no_grad():
        a, b = fast.encode_video(video, **kwargs).tokens.float(), ref.encode_video(video, **kwargs).tokens.float()
    assert torch.isfinite(a).all()
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9999


def test_unknown_impl_rejected():
    with pytest.raises(ValueError, match="attention implementation"):
        ovp.create_model("videoprism_test_tiny", attn_impl="flash")


def test_checkpoint_layout_unchanged():
    """The fused projection concatenates q/k/v at call time: the state dict keeps separate q, k, v."""
    keys = ovp.create_model("videoprism_test_tiny").state_dict().keys()
    assert "encoder.spatial.blocks.0.attn.q.weight" in keys and "encoder.spatial.blocks.0.attn.v.bias" in keys
    assert not any("qkv" in k for k in keys)


@pytest.mark.slow
def test_flex_equals_reference():
    """The compiled FlexAttention path (a compilation per shape: about a minute on a CPU)."""
    fast, ref = _pair("videoprism_lvt_test_tiny")
    fast.set_attn_impl("flex")
    video = torch.rand(2, 4, 3, 72, 72, generator=torch.Generator().manual_seed(4))
    paddings = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]])
    with torch.no_grad():
        for kwargs in ({}, {"frame_paddings": paddings}):
            a, b = fast.encode_video(video, **kwargs), ref.encode_video(video, **kwargs)
            _close(a.tokens, b.tokens)
            _close(a.embedding, b.embedding)
        ids = torch.randint(1, 100, (2, 8), generator=torch.Generator().manual_seed(5))
        pad = torch.zeros(2, 8)
        pad[1, 3:] = 1
        _close(fast.encode_text(ids, pad), ref.encode_text(ids, pad))


def test_query_chunks_equal_reference(monkeypatch):
    """Long sequences run in query chunks (memory linear in length): same numbers, masks and causality included."""
    from open_videoprism.models import layers

    fast, ref = _pair("videoprism_lvt_v1_base")
    monkeypatch.setattr(layers, "LOGITS_BUDGET", 2 * 2 * 7)  # tiny: chunks of a few query rows
    video = torch.rand(2, 4, 3, 72, 72, generator=torch.Generator().manual_seed(6))
    paddings = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]])
    ids = torch.randint(1, 100, (2, 8), generator=torch.Generator().manual_seed(7))
    pad = torch.zeros(2, 8)
    pad[0, 6:] = 1
    with torch.no_grad():
        for kwargs in ({}, {"frame_paddings": paddings}):
            a, b = fast.encode_video(video, **kwargs), ref.encode_video(video, **kwargs)
            _close(a.tokens, b.tokens)
            _close(a.embedding, b.embedding)
        _close(fast.encode_text(ids, pad), ref.encode_text(ids, pad))


def test_length_groups_equal_one_group(monkeypatch):
    """Packed rows grouped by length (random masks: rows of many lengths) give the one-group result."""
    from open_videoprism.models import videoprism

    fast, ref = _pair("videoprism_lvt_v1_base")
    g = torch.Generator().manual_seed(8)
    video = torch.rand(2, 4, 3, 72, 72, generator=g)
    visible = torch.stack([torch.randperm(64, generator=g)[:23] for _ in range(2)])
    with torch.no_grad():
        grouped = fast.encode_video(video, visible=visible)
        monkeypatch.setattr(videoprism, "PACK_GROUPS", 1)
        single = fast.encode_video(video, visible=visible)
        reference = ref.encode_video(video, visible=visible)
    _close(grouped.tokens, single.tokens)
    _close(grouped.spatial_tokens, single.spatial_tokens)
    _close(grouped.tokens, reference.tokens)
