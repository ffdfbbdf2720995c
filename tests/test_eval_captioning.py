"""Perceiver resampler + small decoder: captions and QA on separable features."""

from __future__ import annotations

import torch

from open_videoprism.eval.captioning import (
    EOS,
    CaptionConfig,
    PerceiverResampler,
    TextSample,
    WordVocab,
    generate_texts,
    train_decoder,
)
from open_videoprism.eval.metrics import bleu, exact_match_accuracy


def test_vocab_round_trip():
    vocab = WordVocab.build(["A red square slides left.", "a blue star"])
    ids = vocab.encode("a red star, slides!")
    assert vocab.decode(ids) == "a red star slides"
    assert vocab.decode(vocab.encode("a purple star")) == "a star"  # unknown words are dropped
    assert vocab.decode([*vocab.encode("a red"), EOS, *vocab.encode("blue")]) == "a red"


def test_resampler_shape_and_token_order_invariance():
    torch.manual_seed(0)
    r = PerceiverResampler(in_dim=24, dim=32, num_latents=5, num_heads=4).eval()
    tokens = torch.randn(2, 10, 24)
    out = r(tokens)
    assert out.shape == (2, 5, 32)
    # No position information: a permutation of the tokens gives the same latents.
    torch.testing.assert_close(r(tokens[:, torch.randperm(10)]), out)


def test_decoder_learns_captions_and_answers():
    colours, shapes = ["red", "blue", "green"], ["square", "star"]
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(6, 4, 16, generator=g)
    rows = []
    for i in range(48):
        c = i % 6
        rows.append((protos[c] + 0.1 * torch.randn(4, 16, generator=g), colours[c % 3], shapes[c // 3]))
    feats = torch.stack([r[0] for r in rows])
    caps = [TextSample(i, "", f"a {col} {sh} moves") for i, (_, col, sh) in enumerate(rows)]
    qas = [TextSample(i, "what color is the object?", col) for i, (_, col, _) in enumerate(rows)]
    vocab = WordVocab.build([s.target for s in caps + qas] + [s.prompt for s in qas])
    train_idx, test_idx = range(36), range(36, 48)
    cfg = CaptionConfig(dim=32, num_latents=4, num_layers=1, epochs=40, batch_size=16, lr=3e-3, seed=0)
    model, losses = train_decoder(feats, [caps[i] for i in train_idx] + [qas[i] for i in train_idx], vocab, cfg, progress=False)
    assert losses[-1] < 0.2 * losses[0]
    out = generate_texts(model, feats, [caps[i] for i in test_idx], vocab, progress=False)
    assert bleu(out, [[caps[i].target] for i in test_idx]) > 0.9
    answers = generate_texts(model, feats, [qas[i] for i in test_idx], vocab, progress=False)
    assert exact_match_accuracy(answers, [qas[i].target for i in test_idx]) == 100.0
