"""Evaluation metrics against hand-computed answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from open_videoprism.eval.metrics import (
    Segment,
    average_precision,
    bleu,
    cider_d,
    confusion_matrix,
    detection_ap,
    exact_match_accuracy,
    localization_map,
    mean_average_precision,
    retrieval_metrics,
    temporal_iou,
    topk_accuracy,
)


def test_retrieval_with_several_captions_per_video():
    # 3 videos; captions 0,1 -> video 0, captions 2,3 -> video 1, caption 4 -> video 2.
    t2v = [0, 0, 1, 1, 2]
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # caption 0: video 0 ranked 1
            [0.2, 0.8, 0.1],  # caption 1: video 0 ranked 2
            [0.3, 0.2, 0.1],  # caption 2: video 1 ranked 2
            [0.5, 0.4, 0.6],  # caption 3: video 1 ranked 3
            [0.0, 0.1, 0.7],  # caption 4: video 2 ranked 1
        ]
    )
    m = retrieval_metrics(sim, t2v)
    # t2v ranks [1, 2, 2, 3, 1]
    assert m["t2v_R@1"] == pytest.approx(40.0)
    assert m["t2v_R@5"] == pytest.approx(100.0)
    assert m["t2v_median_rank"] == pytest.approx(2.0)
    assert m["t2v_mean_rank"] == pytest.approx(9 / 5)
    # v2t: video 0 column [.9 .2 .3 .5 0] -> caption 0 rank 1.
    # video 1 column [.1 .8 .2 .4 .1]: caption 2 (.2) rank 3, caption 3 (.4) rank 2 -> best 2.
    # video 2 column [0 .1 .1 .6 .7]: caption 4 rank 1.
    assert m["v2t_R@1"] == pytest.approx(100 * 2 / 3)
    assert m["v2t_median_rank"] == pytest.approx(1.0)
    assert m["v2t_mean_rank"] == pytest.approx(4 / 3)


def test_retrieval_ties_are_not_optimistic():
    m = retrieval_metrics(torch.zeros(4, 4), [0, 1, 2, 3])
    assert m["t2v_R@1"] == 0.0 and m["t2v_median_rank"] == 4.0
    assert m["v2t_R@1"] == 0.0


def test_retrieval_identity_is_perfect_and_bad_input_fails():
    m = retrieval_metrics(torch.eye(5), list(range(5)))
    assert m["t2v_R@1"] == 100.0 and m["v2t_R@1"] == 100.0 and m["t2v_median_rank"] == 1.0
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(torch.eye(3)[:2], [0, 1])
    with pytest.raises(ValueError, match="one entry per text"):
        retrieval_metrics(torch.eye(3), [0, 1])


def test_topk_accuracy_and_confusion():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    labels = torch.tensor([1, 0, 0, 1])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc["top1"] == pytest.approx(50.0)
    assert acc["top2"] == pytest.approx(75.0)  # sample 2: class 0 is third
    assert acc["top5"] == pytest.approx(100.0)  # capped at the 3 classes
    cm = confusion_matrix(logits.argmax(1), labels, 3)
    assert cm.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]


def test_average_precision_known_values():
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0.1, 0.2, 0.3], [1, 1, 1]) == pytest.approx(1.0)
    assert math.isnan(average_precision([0.1, 0.2], [0, 0]))
    # A tie between a positive and a negative counts the negative first.
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)


def test_mean_average_precision_multilabel():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.1, 0.6, 0.4]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    # class 0: order 0(+) 1(-) 2(+) -> (1 + 2/3)/2; class 1: order 1(+) 2(+) 0(-) -> 1;
    # class 2 has no positive and is left out.
    expected = 100 * ((1 + 2 / 3) / 2 + 1.0) / 2
    assert mean_average_precision(scores, targets) == pytest.approx(expected)


def test_temporal_iou():
    iou = temporal_iou(np.array([[0, 10], [20, 30]]), np.array([[5, 15], [40, 50]]))
    assert iou[0, 0] == pytest.approx(5 / 15)
    assert iou[0, 1] == 0.0 and iou[1, 1] == 0.0


def test_detection_ap_and_activitynet_map():
    gt = [Segment(0, 0.0, 10.0, 0), Segment(0, 20.0, 30.0, 0)]
    preds = [
        Segment(0, 0.0, 10.0, 0, 0.9),  # exact
        Segment(0, 40.0, 50.0, 0, 0.8),  # false positive
        Segment(0, 22.8, 30.0, 0, 0.7),  # tIoU 0.72 with the second
    ]
    # tIoU 0.5: tp [1,0,1], precision [1, .5, 2/3], recall [.5, .5, 1] -> interpolated AP .5*1 + .5*2/3
    assert detection_ap(preds, gt, 0.5) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert detection_ap(preds, gt, 0.75) == pytest.approx(0.5)
    # A prediction in another video never matches.
    assert detection_ap([Segment(1, 0.0, 10.0, 0, 1.0)], gt, 0.5) == 0.0
    m = localization_map(preds, gt)
    # thresholds .50 .55 .60 .65 .70 keep both matches; .75 ... .95 only the exact one.
    assert m["mAP@0.50"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    assert m["mAP@0.95"] == pytest.approx(50.0)
    assert m["mAP"] == pytest.approx((5 * 100 * (0.5 + 1 / 3) + 5 * 50.0) / 10)
    # Two classes: a class without predictions scores 0 and halves the mean.
    m2 = localization_map(preds, gt + [Segment(0, 60.0, 70.0, 1)])
    assert m2["mAP"] == pytest.approx(m["mAP"] / 2)


def test_bleu_known_cases():
    assert bleu(["a red square slides left"], [["a red square slides left"]]) == pytest.approx(1.0)
    # precisions 4/5, 3/4, 2/3, 1/2, equal length
    assert bleu(["a red square slides left"], [["a red square slides right"]]) == pytest.approx(
        (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    )
    # all precisions 1, brevity penalty exp(1 - 5/4)
    assert bleu(["a red square slides"], [["a red square slides right"]]) == pytest.approx(math.exp(1 - 5 / 4))
    # the closest reference length is used, and clipping caps repeated words
    assert bleu(["a red square slides"], [["x y", "a red square slides"]]) == pytest.approx(1.0)
    assert bleu(["the the the the"], [["the cat"]]) == 0.0
    assert bleu(["Red, square!"], [["red square"]]) == pytest.approx(0.0)  # fewer than 4 words: no 4-grams


def test_cider_d_known_case():
    refs = [["red square slides left"], ["blue circle moves up"]]
    # Disjoint references: every n-gram has idf log(2); a perfect caption scores 10.
    assert cider_d(["blue circle moves up"], [refs[1]]) == pytest.approx(0.0)  # one image: idf = 0
    perfect = cider_d(["red square slides left", "blue circle moves up"], refs)
    assert perfect == pytest.approx(10.0)
    # "red square": 1-gram cos 2/(sqrt2*2), 2-gram cos 1/sqrt3, no 3/4-grams, length penalty exp(-4/72).
    s0 = (2 / (math.sqrt(2) * 2) + 1 / math.sqrt(3)) / 4 * 10 * math.exp(-4 / 72)
    got = cider_d(["red square", "blue circle moves up"], refs)
    assert got == pytest.approx((s0 + 10.0) / 2)


def test_exact_match_accuracy():
    assert exact_match_accuracy(["Left.", "up", "pan left"], ["left", "down", "pan left"]) == pytest.approx(200 / 3)


# --- against the reference implementations (tests/fixtures/metrics/README.md) ---------------

REFERENCE = Path(__file__).parent / "fixtures" / "metrics"


def test_bleu_and_cider_match_pycocoevalcap() -> None:
    ref = json.loads((REFERENCE / "captions.json").read_text())
    cands, refs, want = ref["candidates"], ref["references"], ref["expected"]
    for n in range(1, 5):
        assert bleu(cands, refs, max_n=n) == pytest.approx(want[f"bleu_{n}"], rel=1e-9), n
    assert cider_d(cands, refs) == pytest.approx(want["cider_d"], rel=1e-12)


def test_localization_map_matches_the_activitynet_kit() -> None:
    ref = json.loads((REFERENCE / "localization.json").read_text())
    got = localization_map([Segment(**p) for p in ref["predictions"]], [Segment(**g) for g in ref["ground_truth"]], ref["tious"])
    assert got == pytest.approx(ref["expected"], rel=1e-12)
