"""Zero-shot retrieval / classification plumbing and its user errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.errors import UserError
from open_videoprism.eval.metrics import retrieval_metrics
from open_videoprism.eval.zeroshot import (
    NotVideoTextModelError,
    TokenizerMismatchError,
    class_embeddings,
    classify,
    encode_texts,
    require_video_text,
    similarity,
)

SPM = Path(__file__).resolve().parent / "fixtures" / "official" / "test_spm.model"


def test_encoder_only_model_gets_a_clear_error():
    model = ovp.create_model("videoprism_test_tiny")
    with pytest.raises(NotVideoTextModelError, match="video-only encoder") as info:
        require_video_text(model, "enc.safetensors")
    assert isinstance(info.value, UserError)
    assert "\n" not in str(info.value) and str(info.value).startswith("enc.safetensors:")


def test_tokenizer_larger_than_vocab_is_refused(official_dir):
    cfg = ovp.get_config("videoprism_lvt_test_tiny")
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=500))
    model = ovp.create_model(cfg)
    tok = ovp.Tokenizer(official_dir / "test_spm.model")  # 1000 pieces
    with pytest.raises(TokenizerMismatchError, match="--tokenizer"):
        encode_texts(model, tok, ["a red square"])


def test_text_embeddings_and_prompt_ensembles(official_dir):
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_lvt_test_tiny")
    tok = ovp.Tokenizer(official_dir / "test_spm.model")
    emb = encode_texts(model, tok, ["a red square", "a blue star", "a red square"], batch_size=2)
    assert emb.shape == (3, 64)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb[0], emb[2])  # batching does not change an embedding
    templates = ("a video of {}.", "footage of {}.")
    cls = class_embeddings(model, tok, ["red square", "blue star"], templates)
    manual = torch.nn.functional.normalize(encode_texts(model, tok, ["a video of red square.", "footage of red square."]).mean(0), dim=0)
    torch.testing.assert_close(cls[0], manual)
    with pytest.raises(UserError):
        class_embeddings(model, tok, [], templates)


def test_classify_and_retrieve_with_handmade_embeddings():
    classes = torch.eye(4)
    videos = torch.tensor([[0.9, 0.1, 0, 0], [0, 0, 1.0, 0.2], [0, 0.3, 0, 1.0]])
    assert classify(videos, classes).argmax(1).tolist() == [0, 2, 3]
    # Captions near their video's embedding (two for video 0) retrieve perfectly.
    texts = torch.cat([videos, torch.tensor([[1.0, 0.2, 0, 0]])])
    m = retrieval_metrics(similarity(videos, texts), [0, 1, 2, 0])
    assert m["t2v_R@1"] == 100.0 and m["v2t_R@1"] == 100.0
