"""``videoprism export``: transformers folders (round trip through HF's classes) and ONNX (onnxruntime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import open_videoprism as ovp
from open_videoprism.cli.main import main
from open_videoprism.errors import CheckpointError
from open_videoprism.export import export_hf
from open_videoprism.models.config import TextConfig, VideoPrismConfig, VisionConfig


def _perturbed(cfg: VideoPrismConfig):
    torch.manual_seed(0)
    model = ovp.create_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _hf_shaped_lvt() -> VideoPrismConfig:
    # HF's pooling head needs pooler_dim == mlp_dim (true of the released models).
    v = VisionConfig(grid=4, num_frames=4, width=64, spatial_layers=2, temporal_layers=2, num_heads=4, mlp_dim=128)
    text = TextConfig(vocab_size=100, width=64, num_layers=2, num_heads=4, mlp_dim=256)
    return VideoPrismConfig(vision=v, auxiliary_layers=2, pooler_dim=128, text=text)


def test_hf_export_round_trip_through_transformers(tmp_path, official_dir):
    transformers = pytest.importorskip("transformers")
    ours = _perturbed(_hf_shaped_lvt())
    src = tmp_path / "ours.safetensors"
    ovp.save_checkpoint(src, ours.state_dict(), ours.cfg)
    assert main(["export", str(src), str(tmp_path / "hf"), "--format", "hf",
                 "--tokenizer", str(official_dir / "test_spm.model")]) == 0
    hf = transformers.VideoPrismClipModel.from_pretrained(tmp_path / "hf").eval()
    video = torch.rand(2, 4, 3, 72, 72)
    ids = torch.randint(1, 100, (2, 64))
    pads = torch.zeros(2, 64)
    pads[0, 7:] = 1
    ids[pads.bool()] = 0
    with torch.no_grad():
        mine = ours.encode_video(video)
        tokens = hf.video_model.vision_model(pixel_values_videos=video).last_hidden_state
        emb = hf.video_model(pixel_values_videos=video).pooler_output.squeeze(1)
        text = hf.text_model(input_ids=ids, attention_mask=(1 - pads).long()).pooler_output
        my_text = ours.encode_text(ids, pads)
    assert (tokens - mine.tokens).abs().max() < 1e-4
    assert (emb - mine.embedding).abs().max() < 1e-4
    # The exported position table is the official sinusoid, so HF's text tower gives the official embedding.
    assert (text - my_text).abs().max() < 1e-4
    # And back: the folder loads into this library unchanged.
    back = ovp.load(tmp_path / "hf")
    assert all(torch.allclose(back.state_dict()[k], v, atol=1e-6) for k, v in ours.state_dict().items())
    assert (tmp_path / "hf" / "spiece.model").read_bytes() == (official_dir / "test_spm.model").read_bytes()


def test_hf_export_of_the_official_encoder(tmp_path, official_dir):
    transformers = pytest.importorskip("transformers")
    ours = ovp.load(official_dir / "public_encoder.npz")
    export_hf(ours, tmp_path)
    hf = transformers.VideoPrismVisionModel.from_pretrained(tmp_path).eval()
    io = np.load(official_dir / "public_encoder_io.npz")
    video = torch.from_numpy(io["case0/video"]).permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        out = hf(pixel_values_videos=video).last_hidden_state.numpy()
    assert np.abs(out - io["case0/embeddings"]).max() < 1e-4


def test_hf_export_refuses_models_hf_cannot_hold(tmp_path):
    with pytest.raises(CheckpointError, match="pooler_dim 256 != mlp_dim 128"):
        export_hf(ovp.create_model("videoprism_lvt_test_tiny"), tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_onnx_export_matches_onnxruntime_on_the_official_fixtures(tmp_path, official_dir, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra (pip install -e .[test])")
    out = tmp_path / "lvt.onnx"
    assert main(["export", str(official_dir / "public_lvt.npz"), str(out), "--format", "onnx"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    io = np.load(official_dir / "public_lvt_io.npz")
    video = np.ascontiguousarray(io["case0/video"].transpose(0, 1, 4, 2, 3)).astype(np.float32)
    tokens, emb = session.run(None, {"video": video})
    assert np.abs(emb - io["case0/video_embeddings"]).max() < 1e-4  # the official outputs
    assert np.abs(tokens - io["case0/spatiotemporal_features"]).max() < 1e-4
    one, = session.run(["embedding"], {"video": video[:1]})  # the batch axis is dynamic
    assert np.abs(one - emb[:1]).max() < 1e-5
    assert main(["export", str(official_dir / "public_lvt.npz"), str(tmp_path / "x.bin"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
