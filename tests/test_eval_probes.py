"""Attentive and linear probes on synthetic frozen tokens."""

from __future__ import annotations

import pytest
import torch

from open_videoprism.eval.metrics import mean_average_precision, topk_accuracy
from open_videoprism.eval.probes import (
    AttentiveProbe,
    LinearProbe,
    ProbeConfig,
    as_clip_tokens,
    default_num_heads,
    predict,
    train_probe,
)
from open_videoprism.optim import lr_factor


def separable_tokens(n: int, num_classes: int, seed: int, tokens: int = 8, dim: int = 32, clips: int = 1):
    """Small noise tokens; one random position per clip carries a class direction
    (the others do not), so pooling must find it: what an attentive probe is for."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(123)))[0][:num_classes]
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 0.5 * torch.randn(n, clips, tokens, dim, generator=g)
    pos = torch.randint(0, tokens, (n, clips), generator=g)
    x[torch.arange(n)[:, None], torch.arange(clips)[None], pos] += 3.0 * dirs[y][:, None]
    return x, y


def test_default_heads_divide_width():
    assert default_num_heads(768) == 12
    assert default_num_heads(64) == 8
    assert default_num_heads(7) == 7
    assert 64 % AttentiveProbe(64, 3).pool.attn.num_heads == 0


def test_warmup_cosine_schedule():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)


def test_attentive_probe_separates_a_separable_token_set():
    x, y = separable_tokens(256, 4, seed=0)
    xt, yt = separable_tokens(200, 4, seed=1)
    cfg = ProbeConfig(kind="attentive", epochs=30, batch_size=32, lr=2e-3, seed=0)
    probe, hist = train_probe(x, y, 4, cfg, val_features=xt, val_labels=yt, progress=False)
    acc = topk_accuracy(predict(probe, xt), yt)["top1"]
    assert acc >= 95.0, acc
    assert hist.loss[-1] < hist.loss[0]
    assert len(hist.val_accuracy) == cfg.epochs and hist.val_accuracy[-1] == pytest.approx(acc)
    assert hist.val_epoch == list(range(1, cfg.epochs + 1))


def test_long_probe_scores_its_curve_at_a_few_epochs_and_trains_the_same():
    """An 800-epoch probe scores its held-out curve at VAL_POINTS epochs and the last, not at
    every epoch; scoring changes nothing of the training (no RNG, no state)."""
    from open_videoprism.eval.probes import VAL_POINTS

    x, y = separable_tokens(64, 4, seed=0)
    xt, yt = separable_tokens(40, 4, seed=1)
    cfg = ProbeConfig(kind="attentive", epochs=2 * VAL_POINTS + 3, batch_size=32, lr=2e-3, seed=0)
    probe, hist = train_probe(x, y, 4, cfg, val_features=xt, val_labels=yt, progress=False)
    assert hist.val_epoch == [*range(2, cfg.epochs, 2), cfg.epochs]
    assert len(hist.val_accuracy) == len(hist.val_epoch) and len(hist.loss) == cfg.epochs
    bare, _ = train_probe(x, y, 4, cfg, progress=False)
    assert torch.equal(predict(probe, xt), predict(bare, xt))


def test_linear_probe_separates_pooled_features():
    g = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.randn(5, 16, generator=g)
    y, yt = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (100,), generator=g)
    x = centers[y] + torch.randn(300, 16, generator=g)
    xt = centers[yt] + torch.randn(100, 16, generator=g)
    lin, _ = train_probe(x, y, 5, ProbeConfig(kind="linear", epochs=15, lr=5e-3), progress=False)
    assert topk_accuracy(predict(lin, xt), yt)["top1"] >= 95.0


def test_probe_is_deterministic_under_a_seed():
    x, y = separable_tokens(64, 3, seed=2)
    cfg = ProbeConfig(epochs=3, batch_size=16, seed=7)
    torch.manual_seed(0)
    a, ha = train_probe(x, y, 3, cfg, progress=False)
    torch.manual_seed(999)  # the global RNG must not matter
    b, hb = train_probe(x, y, 3, cfg, progress=False)
    assert ha.loss == hb.loss
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c, _ = train_probe(x, y, 3, ProbeConfig(epochs=3, batch_size=16, seed=8), progress=False)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_multiclip_prediction_averages_clip_probabilities():
    x, _ = separable_tokens(6, 3, seed=3, clips=4)
    probe = LinearProbe(32, 3).eval()
    scores = predict(probe, x)
    per_clip = torch.stack([probe(x[:, k]).softmax(-1) for k in range(4)], 1).mean(1)
    assert scores.shape == (6, 3)
    torch.testing.assert_close(scores, per_clip)
    assert as_clip_tokens(torch.zeros(5, 7)).shape == (5, 1, 1, 7)
    with pytest.raises(ValueError):
        as_clip_tokens(torch.zeros(1, 2, 3, 4, 5))


def test_multiclip_training_and_multilabel_map():
    x, y = separable_tokens(160, 4, seed=4, clips=2)
    xt, yt = separable_tokens(120, 4, seed=5, clips=2)
    # Multi-hot: class c and (c + 1) % 4 are both on.
    def hot(labels):
        t = torch.zeros(len(labels), 4)
        t[torch.arange(len(labels)), labels] = 1
        t[torch.arange(len(labels)), (labels + 1) % 4] = 1
        return t

    probe, _ = train_probe(x, hot(y), 4, ProbeConfig(epochs=12, lr=3e-3, label_smoothing=0.0), progress=False)
    scores = predict(probe, xt, multilabel=True)
    assert mean_average_precision(scores, hot(yt)) >= 90.0


def test_bad_labels_are_rejected():
    x, y = separable_tokens(8, 2, seed=6)
    with pytest.raises(ValueError, match="labels must lie"):
        train_probe(x, y + 5, 2, ProbeConfig(epochs=1), progress=False)
