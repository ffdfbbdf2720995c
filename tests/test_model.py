"""Model behaviour: every registered config, visible-token encoding, frame paddings, text masks."""

from __future__ import annotations

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.checkpoints import state_shapes

# Parameter counts of the released trees (official-implementation.md §3, verified with jax.eval_shape).
OFFICIAL_PARAMS = {
    "videoprism_v1_base": 114_365_184,
    "videoprism_v1_large": 353_965_056,
    "videoprism_lvt_v1_base": 247_623_424,
    "videoprism_lvt_v1_large": 579_877_120,
}
TINY = [n for n in ovp.list_models() if "_test_" in n]


@pytest.mark.parametrize("name", ovp.list_models())
def test_registered_config_builds(name):
    shapes = state_shapes(ovp.get_config(name))
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    if name in OFFICIAL_PARAMS:
        assert n_params == OFFICIAL_PARAMS[name]
    assert n_params > 0


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("frames,size", [(4, 72), (3, 54), (1, 72), (6, 90)])
def test_tiny_forward_shapes(name, frames, size):
    model = ovp.create_model(name)
    video = torch.rand(2, frames, 3, size, size)
    with torch.no_grad():
        out = model.encode_video(video)
    n = (size // 18) ** 2
    assert out.tokens.shape == (2, frames * n, 64)
    assert out.spatial_tokens.shape == (2, frames * n, 64)
    if model.pooler is not None:
        assert out.embedding.shape == (2, 64)
        torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(2))
        assert out.frame_embeddings.shape == (2, frames, 64)
    else:
        assert out.embedding is None and out.frame_embeddings is None


def test_create_model_dtype_and_eval_mode():
    model = ovp.create_model("videoprism_lvt_test_tiny", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and not model.training
    with torch.no_grad():
        out = model.encode_video(torch.rand(1, 4, 3, 72, 72))
    assert out.tokens.dtype == torch.bfloat16


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ovp.ConfigError, match="unknown model 'nope'.*videoprism_v1_base"):
        ovp.create_model("nope")


@pytest.mark.parametrize("bad", [(1, 4, 3, 72, 70), (1, 4, 3, 70, 70), (1, 4, 1, 72, 72)])
def test_bad_video_shapes_raise(bad):
    model = ovp.create_model("videoprism_test_tiny")
    with pytest.raises(ValueError, match="divisible by 18"):
        model.encode_video(torch.rand(*bad))


@pytest.fixture(scope="module")
def lvt():
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_lvt_test_tiny")
    with torch.no_grad():  # random LayerNorm/bias values so that every leaf matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_all_visible_equals_full_forward_exactly(lvt):
    video = torch.rand(2, 4, 3, 72, 72)
    idx = torch.arange(64).expand(2, -1)
    with torch.no_grad():
        full = lvt.encode_video(video)
        vis = lvt.encode_video(video, visible=idx)
    assert torch.equal(full.tokens, vis.tokens)
    assert torch.equal(full.spatial_tokens, vis.spatial_tokens)
    assert torch.equal(full.embedding, vis.embedding)


def _masked_reference(model, video, visible):
    """Full-size forward with key masks: what the visible-token path must compute."""
    enc = model.encoder
    x = enc.patchify(video)
    b, t, n, d = x.shape
    valid = torch.zeros(b, t * n, dtype=torch.bool).scatter_(1, visible, True)
    xs = enc.spatial_norm(enc.spatial(x.reshape(b * t, n, d), valid.view(b * t, n)))
    xt = xs.view(b, t, n, d).transpose(1, 2).reshape(b * n, t, d) + enc.temporal_positions(t, xs.dtype)
    mask_t = valid.view(b, t, n).transpose(1, 2).reshape(b * n, t)
    xt = enc.temporal_norm(enc.temporal(xt, mask_t))
    tokens = xt.view(b, n, t, d).transpose(1, 2).reshape(b, t * n, d)
    return torch.gather(tokens, 1, visible[..., None].expand(-1, -1, d))


def test_visible_subset_matches_masked_reference(lvt):
    torch.manual_seed(1)
    video = torch.rand(3, 4, 3, 72, 72)
    # Unsorted, different per sample, some frames and positions entirely hidden.
    visible = torch.stack([torch.randperm(64)[:22] for _ in range(3)])
    with torch.no_grad():
        out = lvt.encode_video(video, visible=visible)
        ref = _masked_reference(lvt, video, visible)
    assert out.tokens.shape == (3, 22, 64)
    torch.testing.assert_close(out.tokens, ref, rtol=1e-5, atol=1e-5)
    assert out.embedding.shape == (3, 64) and out.frame_embeddings is None


def test_hidden_tokens_do_not_influence_visible_ones(lvt):
    video = torch.rand(1, 4, 3, 72, 72)
    other = video.clone()
    other[:, :, :, 18:, 18:] = torch.rand_like(other[:, :, :, 18:, 18:])  # changes hidden patches only
    keep = [0, 16, 32, 48]  # patch 0 of every frame: its pixels are untouched
    visible = torch.tensor([keep])
    with torch.no_grad():
        a = lvt.encode_video(video, visible=visible).tokens
        b = lvt.encode_video(other, visible=visible).tokens
    assert torch.equal(a, b)


def test_visible_gradients_reach_only_visible_patches(lvt):
    video = torch.rand(1, 4, 3, 72, 72, requires_grad=True)
    visible = torch.tensor([[0, 16]])  # patch (0, 0) of frames 0 and 1
    lvt.encode_video(video, visible=visible).tokens.sum().backward()
    g = video.grad.abs().sum(dim=(0, 2))  # [T, H, W]
    assert g[0, :18, :18].sum() > 0 and g[1, :18, :18].sum() > 0
    assert g[2:].sum() == 0 and g[:, 18:, :].sum() == 0 and g[:, :, 18:].sum() == 0


def test_padded_frames_do_not_change_valid_frames(lvt):
    video = torch.rand(1, 4, 3, 72, 72)
    pads = torch.tensor([[0, 0, 1, 1]])
    other = video.clone()
    other[:, 2:] = torch.rand_like(other[:, 2:])
    with torch.no_grad():
        a = lvt.encoder(video, frame_paddings=pads)[0]
        b = lvt.encoder(other, frame_paddings=pads)[0]
        c = lvt.encoder(video)[0]
    torch.testing.assert_close(a[:, :32], b[:, :32], rtol=0, atol=1e-6)
    assert (a[:, :32] - c[:, :32]).abs().max() > 1e-3  # the padding really masked something


def test_text_padding_and_causality(lvt):
    ids = torch.randint(1, 1000, (1, 12))
    pads = torch.zeros(1, 12)
    pads[:, 7:] = 1
    changed = ids.clone()
    changed[:, 7:] = torch.randint(1, 1000, (1, 5))
    with torch.no_grad():
        a = lvt.encode_text(ids, pads)
        b = lvt.encode_text(changed, pads)
        c = lvt.encode_text(ids[:, :7], pads[:, :7])
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # padded tokens are invisible
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)  # ... and equal to the unpadded text


def test_grad_checkpointing_gives_same_gradients(lvt):
    video = torch.rand(2, 4, 3, 72, 72)
    lvt.train()
    try:
        grads = []
        for ckpt in (False, True):
            lvt.zero_grad()
            lvt.set_grad_checkpointing(ckpt)
            lvt.encode_video(video).embedding.sum().backward()
            grads.append(lvt.encoder.patch_embed.weight.grad.clone())
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    finally:
        lvt.set_grad_checkpointing(False)
        lvt.zero_grad()
        lvt.eval()
