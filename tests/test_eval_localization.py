"""Temporal localization: snippet targets, segment decoding, NMS and a trained head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from open_videoprism.eval.localization import (
    LocalizationConfig,
    decode_segments,
    predict_segments,
    snippet_boundaries,
    snippet_targets,
    temporal_nms,
    train_temporal_head,
)
from open_videoprism.eval.metrics import Segment, localization_map


def test_snippet_targets_and_boundaries():
    centers = np.array([0.5, 1.5, 2.5, 3.5])
    assert snippet_boundaries(centers, 4.0).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    segs = [{"start": 1.0, "end": 3.0, "label": 2}]
    assert snippet_targets(centers, segs, num_classes=5).tolist() == [5, 2, 2, 5]


def test_decode_recovers_a_clean_segment_and_nms_dedups():
    # 8 snippets of 1 s; class 1 is on for snippets 2..4, background elsewhere.
    probs = np.zeros((8, 3))
    probs[:, 2] = 1.0
    probs[2:5, 1], probs[2:5, 2] = 0.9, 0.1
    segs = decode_segments(probs, np.arange(8) + 0.5, 8.0, video=3)
    # All three thresholds give the same run; NMS keeps one.
    assert segs == [Segment(3, 2.0, 5.0, 1, pytest.approx(0.9))]
    a, b, c = Segment(0, 0, 10, 0, 0.9), Segment(0, 1, 10, 0, 0.8), Segment(0, 20, 30, 0, 0.7)
    assert temporal_nms([b, a, c, Segment(0, 1, 10, 1, 0.5)], 0.5, 10) == [a, c, Segment(0, 1, 10, 1, 0.5)]
    assert temporal_nms([a, b, c], 0.5, 1) == [a]


def test_uncertain_head_still_proposes_actionness_segments():
    # No class reaches 0.3 inside the action, but background is clearly low there.
    probs = np.zeros((6, 5))
    probs[:, 4] = 1.0
    probs[1:4] = [0.3 * 0.9, 0.25 * 0.9, 0.25 * 0.9, 0.2 * 0.9, 0.1]
    segs = decode_segments(probs, np.arange(6) + 0.5, 6.0, video=0)
    assert [(s.start, s.end, s.label) for s in segs] == [(1.0, 4.0, 0), (1.0, 4.0, 1)]
    assert segs[0].score == pytest.approx(0.9 * 0.3) and segs[1].score == pytest.approx(0.9 * 0.25)


def test_temporal_head_learns_separable_snippets():
    rng = np.random.default_rng(0)
    dim, k, classes = 16, 16, 3
    protos = rng.normal(size=(classes + 1, dim)) * 2.0

    def video():
        y = np.full(k, classes)
        segs = []
        t = int(rng.integers(0, 3))
        while t < k - 3:
            n, c = int(rng.integers(3, 6)), int(rng.integers(0, classes))
            y[t : min(k, t + n)] = c
            segs.append({"start": float(t), "end": float(min(k, t + n)), "label": c})
            t += n + int(rng.integers(1, 3))
        x = protos[y] + rng.normal(size=(k, dim)) * 0.5
        return torch.tensor(x, dtype=torch.float32), segs

    train = [video() for _ in range(24)]
    test = [video() for _ in range(8)]
    centers = np.arange(k) + 0.5
    cfg = LocalizationConfig(epochs=30, hidden=32, seed=0)
    head, losses = train_temporal_head([f for f, _ in train], [snippet_targets(centers, s, classes) for _, s in train], classes, cfg, progress=False)
    assert losses[-1] < losses[0] / 3
    preds = predict_segments(head, [f for f, _ in test], [centers] * 8, [float(k)] * 8, cfg)
    gt = [Segment(i, s["start"], s["end"], s["label"]) for i, (_, segs) in enumerate(test) for s in segs]
    m = localization_map(preds, gt)
    assert m["mAP@0.50"] > 90.0 and m["mAP"] > 60.0, m
    # Same seed, same training run.
    short = LocalizationConfig(epochs=2, hidden=32, seed=0)
    targets = [snippet_targets(centers, s, classes) for _, s in train]
    runs = [train_temporal_head([f for f, _ in train], targets, classes, short, progress=False)[1] for _ in range(2)]
    assert runs[0] == runs[1]
