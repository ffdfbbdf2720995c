"""Official parity: every reference case of tests/fixtures/official to <= 1e-4 in fp32,
through both attention implementations (``fast``, the default, and ``reference``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import open_videoprism as ovp

TOL = 1e-4


def _video(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(0, 1, 4, 2, 3)  # official [B,T,H,W,C] -> ours [B,T,C,H,W]


def _max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    assert tuple(a.shape) == b.shape
    return (a.double() - torch.from_numpy(b).double()).abs().max().item()


@pytest.fixture(scope="module", params=["fast", "reference"])
def encoder(official_dir, request):
    return ovp.load(official_dir / "public_encoder.npz", attn_impl=request.param)


@pytest.fixture(scope="module", params=["fast", "reference"])
def lvt(official_dir, request):
    return ovp.load(official_dir / "public_lvt.npz", attn_impl=request.param)


def test_inferred_encoder_config_matches_fixture_json(official_dir, encoder):
    ref = json.loads((official_dir / "public_encoder.json").read_text())
    v = encoder.cfg.vision
    assert (v.num_frames, v.grid, v.grid) == tuple(ref["pos_emb_shape"])
    assert (v.width, v.spatial_layers, v.temporal_layers) == (ref["model_dim"], ref["num_spatial_layers"], ref["num_temporal_layers"])
    assert (v.num_heads, v.mlp_dim, v.patch_size) == (ref["num_heads"], ref["mlp_dim"], ref["patch_size"])
    assert encoder.text is None and encoder.pooler is None


@pytest.mark.parametrize("case", [0, 1, 2, 3], ids=["native", "upsized-6x90", "downsized-2x54", "single-frame"])
def test_encoder_parity(official_dir, encoder, case):
    io = np.load(official_dir / "public_encoder_io.npz")
    with torch.no_grad():
        out = encoder.encode_video(_video(io[f"case{case}/video"]))
    assert _max_diff(out.tokens, io[f"case{case}/embeddings"]) <= TOL
    assert _max_diff(out.spatial_tokens, io[f"case{case}/spatial_features"]) <= TOL
    assert out.embedding is None


@pytest.mark.parametrize("case", [0, 1])
def test_video_text_parity(official_dir, lvt, case):
    io = np.load(official_dir / "public_lvt_io.npz")
    with torch.no_grad():
        out = lvt.encode_video(_video(io[f"case{case}/video"]))
        text = lvt.encode_text(
            torch.from_numpy(io[f"case{case}/text_token_ids"]), torch.from_numpy(io[f"case{case}/text_paddings"])
        )
    assert _max_diff(out.embedding, io[f"case{case}/video_embeddings"]) <= TOL
    assert _max_diff(text, io[f"case{case}/text_embeddings"]) <= TOL
    assert _max_diff(out.spatial_tokens, io[f"case{case}/spatial_features"]) <= TOL
    assert _max_diff(out.tokens, io[f"case{case}/spatiotemporal_features"]) <= TOL
    assert _max_diff(out.frame_embeddings, io[f"case{case}/frame_embeddings"]) <= TOL


def test_tokenizer_matches_official(official_dir):
    tok = ovp.Tokenizer(official_dir / "test_spm.model")
    texts = json.loads((official_dir / "public_tokenizer.json").read_text())
    ref = np.load(official_dir / "public_tokenizer.npz")
    ids, paddings = tok(texts)
    np.testing.assert_array_equal(ids.numpy(), ref["token_ids"])
    np.testing.assert_array_equal(paddings.numpy(), ref["paddings"])


def test_encode_text_from_strings_equals_ids(official_dir, lvt):
    tok = ovp.Tokenizer(official_dir / "test_spm.model")
    texts = ["a video of playing drums.", "Hello, World!"]
    with torch.no_grad():
        a = lvt.encode_text(texts, tokenizer=official_dir / "test_spm.model")
        b = lvt.encode_text(*tok(texts))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bf16_inference_close_to_fp32(official_dir):
    io = np.load(official_dir / "public_lvt_io.npz")
    m16 = ovp.load(official_dir / "public_lvt.npz", dtype=torch.bfloat16)
    assert m16.dtype == torch.bfloat16
    with torch.no_grad():
        out = m16.encode_video(_video(io["case0/video"]))
    assert out.tokens.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(out.embedding.float(), torch.from_numpy(io["case0/video_embeddings"]), dim=-1)
    assert cos.min() > 0.99
