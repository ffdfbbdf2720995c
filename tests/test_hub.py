"""Released checkpoints by name through the real ``huggingface_hub`` code, offline.

Each test builds a hub cache in a temporary ``HF_HOME`` (the layout huggingface_hub
writes) from the official fixtures, sets ``HF_HUB_OFFLINE=1`` and loads by name, so
``snapshot_download``/``hf_hub_download`` resolve refs, revisions and symlinked blobs
as they do for a cache filled online. No network is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import open_videoprism as ovp
from hub_helpers import add_snapshot, commit_hash
from open_videoprism import hub
from open_videoprism.errors import CheckpointError

LVT = "google/videoprism-lvt-base-f16r288"
NPZ = "flax_lvt_base_f16r288_repeated.npz"


@pytest.fixture()
def hf_home(tmp_path, monkeypatch, official_dir):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    add_snapshot(home, LVT, {NPZ: official_dir / "public_lvt.npz", "spiece.model": official_dir / "test_spm.model"},
                 commit_hash("lvt-main"))
    # A second commit, pinned by hash only: the video-only encoder under the same file name.
    add_snapshot(home, LVT, {NPZ: official_dir / "public_encoder.npz"}, commit_hash("lvt-old"), refs=())
    return home


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", [LVT, "videoprism_lvt_v1_base", "videoprism_lvt_public_v1_base", f"{LVT}@main"])
def test_load_by_name_from_the_cache(hf_home, official_dir, name):
    model = ovp.load(name)
    assert _same_weights(model, ovp.load(official_dir / "public_lvt.npz"))
    # The tokenizer came from the same repo: strings work without tokenizer=.
    assert model.tokenizer.path.name == "spiece.model"
    ref = model.encode_text(["a video of drumming"], tokenizer=official_dir / "test_spm.model")
    assert torch.equal(model.encode_text(["a video of drumming"]), ref)


def test_revision_pinning(hf_home, official_dir):
    old = commit_hash("lvt-old")
    for model in (ovp.load(f"{LVT}@{old}"), ovp.load(LVT, revision=old)):
        assert model.text is None and _same_weights(model, ovp.load(official_dir / "public_encoder.npz"))
    with pytest.raises(CheckpointError, match=f"{LVT}@no-such-branch: not in the Hugging Face cache"):
        ovp.load(LVT, revision="no-such-branch")


def test_hf_format_weights_on_a_pr_revision(hf_home, tmp_path):
    transformers = pytest.importorskip("transformers")
    text = transformers.VideoPrismTextConfig(vocab_size=100, hidden_size=64, intermediate_size=256,
                                             num_hidden_layers=2, num_attention_heads=4)
    vision = transformers.VideoPrismVisionConfig(image_size=72, num_frames=4, hidden_size=64, num_attention_heads=4,
                                                 intermediate_size=128, num_spatial_layers=2, num_temporal_layers=2)
    hf = transformers.VideoPrismClipModel(transformers.VideoPrismConfig(vision_config=vision.to_dict(),
                                                                        text_config=text.to_dict())).eval()
    hf.save_pretrained(tmp_path / "saved")
    add_snapshot(hf_home, LVT, {f: tmp_path / "saved" / f for f in ("config.json", "model.safetensors")},
                 commit_hash("pr"), refs=("refs/pr/7",))
    model = ovp.load(f"{LVT}@refs/pr/7")
    video = torch.rand(1, 4, 3, 72, 72)
    with torch.no_grad():
        ref = hf.video_model(pixel_values_videos=video).pooler_output.squeeze(1)
    assert (model.encode_video(video).embedding - ref).abs().max() < 1e-4


def test_offline_without_cache_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        ovp.load("videoprism_lvt_public_v1_base")
    msg = str(err.value)
    assert "\n" not in msg and NPZ in msg and "spiece.model" in msg
    assert f"`videoprism download {LVT}`" in msg and f"hf download {LVT} {NPZ}" in msg


def test_unknown_names_are_paths_not_hub_ids(tmp_path):
    assert hub.parse("videoprism_v1_giant") is None  # no released weights
    assert not hub.is_hub_name("runs/x")
    with pytest.raises(CheckpointError, match="no such file"):
        ovp.load("someone/some-model")  # not a released id: a (missing) local path, no network


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-m", "open_videoprism.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_checkpoint_accepts_hub_ids(hf_home, tmp_path, demo_clip):
    # A fresh process: huggingface_hub reads HF_HOME/HF_HUB_OFFLINE from the environment at import.
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    r = _cli("embed", "--checkpoint", LVT, str(demo_clip), "--out", str(tmp_path / "f.npz"), "--pooled-only",
             "--text", "a video of drumming", "--text", "a cat", env=env)
    assert r.returncode == 0, r.stderr
    assert "best text" in r.stdout
    r = _cli("download", "videoprism_lvt_v1_base", env=env)
    assert r.returncode == 0 and NPZ in r.stdout and "spiece.model" in r.stdout
    r = _cli("embed", "--checkpoint", LVT, str(demo_clip), "--out", str(tmp_path / "g.npz"),
             env={"HF_HOME": str(tmp_path / "none"), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert f"videoprism download {LVT}" in r.stderr
