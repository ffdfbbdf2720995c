"""Cached feature extraction: shapes, resumption, cache identity."""

from __future__ import annotations

import json

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.data import synthetic
from open_videoprism.eval import features
from open_videoprism.eval.features import FeatureCacheError, FeatureConfig, extract_features, load_features


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthetic.generate(out, clips=12, long_videos=2, cfg=synthetic.SynthConfig(num_frames=8), progress=False)
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ovp.create_model("videoprism_lvt_test_tiny")


def test_multiclip_features_have_the_documented_shapes(synth, model, tmp_path):
    cfg = FeatureConfig(num_clips=2, frame_stride=1, batch_size=2, shard_size=2)
    fs = load_features(extract_features(model, synth / "test.jsonl", tmp_path / "f", cfg, progress=False))
    n = len((synth / "test.jsonl").read_text().splitlines())
    assert fs.index.tolist() == list(range(n))
    assert fs.tokens.shape == (n, 2, 4 * 16, 64) and fs.tokens.dtype == torch.float32
    assert fs.mean_tokens.shape == (n, 2, 64) and fs.embedding.shape == (n, 2, 64)
    assert fs.thumbnail.shape == (n, 3, 64, 64) and fs.thumbnail.dtype == torch.uint8
    torch.testing.assert_close(fs.mean_tokens, fs.tokens.mean(2), atol=2e-3, rtol=0)  # tokens are float16 on disk
    torch.testing.assert_close(fs.video_embedding().norm(dim=-1), torch.ones(n))
    # The stored features are what the model computes on the loader's clips.
    from open_videoprism.data import VideoDataConfig, build_loader

    batch = next(iter(build_loader(str(synth / "test.jsonl"), VideoDataConfig(num_frames=4, image_size=72, sampling="multiclip", num_clips=2, frame_stride=1), batch_size=1, training=False)))
    with torch.no_grad():
        ref = model.encode_video(batch["video"][0]).embedding
    torch.testing.assert_close(fs.embedding[0], ref, atol=1e-5, rtol=1e-5)


def test_interrupted_extraction_resumes_to_the_same_result(synth, model, tmp_path, monkeypatch):
    cfg = FeatureConfig(batch_size=1, shard_size=1, store_tokens=False)
    full = load_features(extract_features(model, synth / "test.jsonl", tmp_path / "full", cfg, progress=False))
    part = tmp_path / "part"
    encode, calls = features.encode_clips, []

    def crash_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(features, "encode_clips", crash_on_second_batch)
        with pytest.raises(KeyboardInterrupt):
            extract_features(model, synth / "test.jsonl", part, cfg, progress=False)
    state = json.loads((part / "progress.json").read_text())
    assert state["num_done"] == 1 and not state["complete"] and len(state["shards"]) == 1
    with pytest.raises(FeatureCacheError, match="unfinished"):
        load_features(part)
    # Resuming with another batch size keeps the one the run started with (the position counts batches).
    extract_features(model, synth / "test.jsonl", part, FeatureConfig(batch_size=3, shard_size=1, store_tokens=False), progress=False)
    resumed = load_features(part)
    assert torch.equal(resumed.index, full.index)
    assert torch.equal(resumed.embedding, full.embedding) and torch.equal(resumed.mean_tokens, full.mean_tokens)
    assert not list(part.glob(".*.tmp"))  # no temporary files left behind


def test_npz_shards_hold_the_same_features(synth, model, tmp_path):
    st = load_features(extract_features(model, synth / "test.jsonl", tmp_path / "st", FeatureConfig(batch_size=1, shard_size=2), progress=False))
    npz = load_features(extract_features(model, synth / "test.jsonl", tmp_path / "np", FeatureConfig(batch_size=1, shard_size=2, shard_format="npz"), progress=False))
    assert sorted(p.suffix for p in (tmp_path / "np").glob("shard-*")) == [".npz", ".npz"]
    for key in ("index", "mean_tokens", "embedding", "tokens", "thumbnail"):
        assert torch.equal(getattr(st, key), getattr(npz, key)), key
    with pytest.raises(ovp.UserError, match="shard format"):
        extract_features(model, synth / "test.jsonl", tmp_path / "x", FeatureConfig(shard_format="hdf5"), progress=False)


def test_cache_refuses_other_settings(synth, model, tmp_path):
    out = tmp_path / "f"
    extract_features(model, synth / "test.jsonl", out, FeatureConfig(store_tokens=False), progress=False)
    with pytest.raises(FeatureCacheError, match="--overwrite"):
        extract_features(model, synth / "test.jsonl", out, FeatureConfig(store_tokens=False, num_clips=2), progress=False)
    extract_features(model, synth / "test.jsonl", out, FeatureConfig(store_tokens=False, num_clips=2), progress=False, overwrite=True)
    assert load_features(out).embedding.shape[1] == 2
    with pytest.raises(FeatureCacheError, match="videoprism features"):
        load_features(tmp_path / "missing")


def test_bf16_features_are_their_own_cache(synth, model, tmp_path):
    """The model's dtype is part of a folder's identity (fp32 folders keep theirs) and of the eval cache's name."""
    from open_videoprism.eval.config import EvalConfig
    from open_videoprism.eval.tasks import EvalSettings, _cache_folder

    out, cfg = tmp_path / "f", FeatureConfig(store_tokens=False)
    extract_features(model, synth / "test.jsonl", out, cfg, progress=False)
    assert "model_dtype" not in json.loads((out / "progress.json").read_text())["identity"]
    half = ovp.create_model("videoprism_lvt_test_tiny", dtype="bf16")
    with pytest.raises(FeatureCacheError, match="--overwrite"):
        extract_features(half, synth / "test.jsonl", out, cfg, progress=False)
    settings = EvalSettings(checkpoint=str(synth / "test.jsonl"), out_dir=tmp_path, data_dir=None, train_manifest=None,
                            test_manifest=None, cache_dir=None, tokenizer=None, cfg=EvalConfig())
    manifest = str(synth / "test.jsonl")
    assert _cache_folder(settings, manifest, cfg) == _cache_folder(settings, manifest, cfg, torch.float32)
    assert _cache_folder(settings, manifest, cfg, torch.bfloat16) != _cache_folder(settings, manifest, cfg)
