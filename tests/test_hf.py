"""Hugging Face transformers VideoPrism weights through ``ovp.load``."""

from __future__ import annotations

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.models.pos_embed import sinusoidal_table

transformers = pytest.importorskip("transformers", reason="transformers is a test dependency (pip install -e .[test])")


def _perturb(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # LayerNorm (gamma-1) and biases non-zero
    return model.eval()


def _vision_config(**kw):
    base = dict(image_size=72, num_frames=4, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                num_spatial_layers=2, num_temporal_layers=2, num_auxiliary_layers=2)
    base.update(kw)
    return transformers.VideoPrismVisionConfig(**base)


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    text = transformers.VideoPrismTextConfig(vocab_size=100, hidden_size=64, intermediate_size=256,
                                             num_hidden_layers=2, num_attention_heads=4)
    cfg = transformers.VideoPrismConfig(vision_config=_vision_config().to_dict(), text_config=text.to_dict())
    model = _perturb(transformers.VideoPrismClipModel(cfg))
    folder = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(folder)
    return model, folder


def test_hf_vision_model_tokens_match(tmp_path):
    hf = _perturb(transformers.VideoPrismVisionModel(_vision_config()))
    hf.save_pretrained(tmp_path)
    ours = ovp.load(tmp_path)
    assert ours.pooler is None and ours.text is None
    video = torch.rand(2, 4, 3, 72, 72)
    with torch.no_grad():
        ref = hf(pixel_values_videos=video).last_hidden_state
        out = ours.encode_video(video).tokens
    assert (out - ref).abs().max() <= 1e-4


def test_hf_clip_video_side_matches(hf_clip):
    hf, folder = hf_clip
    ours = ovp.load(folder)
    video = torch.rand(2, 4, 3, 72, 72)
    with torch.no_grad():
        ref = hf.video_model(pixel_values_videos=video)
        ref_tokens = hf.video_model.vision_model(pixel_values_videos=video).last_hidden_state
        out = ours.encode_video(video)
    assert (out.tokens - ref_tokens).abs().max() <= 1e-4
    # HF's l2norm puts eps 1e-6 inside the rsqrt (official 1e-12): a ~1e-6 relative difference.
    assert (out.embedding - ref.pooler_output.squeeze(1)).abs().max() <= 1e-4


def test_hf_clip_text_side_matches_with_official_sinusoid(hf_clip):
    hf, folder = hf_clip
    ours = ovp.load(folder)
    ids = torch.randint(1, 100, (3, 64))
    pads = torch.zeros(3, 64)
    for i, n in enumerate((5, 20, 64)):
        pads[i, n:] = 1
    ids[pads.bool()] = 0
    with torch.no_grad():
        out = ours.encode_text(ids, pads)
        hf_native = hf.text_model(input_ids=ids, attention_mask=(1 - pads).long()).pooler_output
        # Known difference: HF's sinusoid uses D/2 where the official code uses D/2 - 1.
        assert (out - hf_native).abs().max() > 1e-3
        table = hf.text_model.embeddings.position_embedding.clone()
        hf.text_model.embeddings.position_embedding.copy_(sinusoidal_table(64, 64))
        try:
            hf_official = hf.text_model(input_ids=ids, attention_mask=(1 - pads).long()).pooler_output
        finally:
            hf.text_model.embeddings.position_embedding.copy_(table)
    assert (out - hf_official).abs().max() <= 1e-4


def test_hf_folder_converts_to_our_format(hf_clip, tmp_path):
    _, folder = hf_clip
    dst, cfg = ovp.convert(folder, tmp_path / "m.safetensors")
    assert cfg.text is not None and cfg.pooler_dim == 128
    a, b = ovp.load(folder), ovp.load(dst)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_non_videoprism_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ovp.CheckpointError, match="not a VideoPrism model"):
        ovp.load(tmp_path)
