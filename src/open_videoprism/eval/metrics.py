"""Evaluation metrics: retrieval, classification, multi-label mAP, temporal
localization mAP, BLEU-4 and CIDEr-D.

Everything here is pure computation on tensors / Python lists, so each metric
can be tested against hand-made inputs with known answers.

Conventions:

* Ranks are 1-based (rank 1 = the correct item came first). Ties are broken
  pessimistically: an item scoring *equal* to the correct one counts as ranked
  above it, so a constant similarity matrix gives chance-level, not perfect,
  recall.
* Retrieval supports several captions per video: ``text_to_video[q]`` is the
  video of caption ``q``. Text->video ranks each caption's video among all
  videos; video->text takes, per video, the best rank of any of its captions
  among all captions (the convention of MSR-VTT / UMT ``itm_eval``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from open_videoprism.tokenizer import canonicalize_text

RECALL_KS: tuple[int, ...] = (1, 5, 10)
# ActivityNet: mAP averaged over tIoU thresholds 0.50, 0.55, ..., 0.95.
ACTIVITYNET_TIOUS: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.5, 0.95, 10))


# --------------------------------------------------------------------------- retrieval


def _ranks_of_targets(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``targets[i]`` in row ``i`` of ``scores`` (ties count against)."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(1)


def retrieval_metrics(
    similarity: torch.Tensor, text_to_video: torch.Tensor | Sequence[int], ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Text<->video retrieval metrics from a ``[num_texts, num_videos]`` similarity.

    Returns ``t2v_R@k``, ``v2t_R@k`` (percent), ``t2v_median_rank``,
    ``v2t_median_rank``, ``t2v_mean_rank``, ``v2t_mean_rank``.
    Every video must own at least one caption.
    """
    sim = similarity.detach().float().cpu()
    t2v = torch.as_tensor(text_to_video, dtype=torch.long)
    num_texts, num_videos = sim.shape
    if t2v.shape != (num_texts,):
        raise ValueError(f"text_to_video must have one entry per text ({num_texts}); got {tuple(t2v.shape)}")
    if t2v.min() < 0 or t2v.max() >= num_videos:
        raise ValueError("text_to_video holds a video index out of range")
    owners = torch.bincount(t2v, minlength=num_videos)
    if (owners == 0).any():
        raise ValueError(f"{int((owners == 0).sum())} videos have no caption")

    t2v_ranks = _ranks_of_targets(sim, t2v).float()
    # Video -> text: rank each caption within its own video's row, keep each video's best.
    rows = sim.t()[t2v]  # [Q, Q]: row q = similarities of caption q's video to every caption
    caption_rank = (rows >= rows.diagonal()[:, None]).sum(1).float()
    v2t_ranks = torch.full((num_videos,), float("inf")).scatter_reduce(0, t2v, caption_rank, reduce="amin")

    out: dict[str, float] = {}
    for name, ranks in (("t2v", t2v_ranks), ("v2t", v2t_ranks)):
        for k in ks:
            out[f"{name}_R@{k}"] = 100.0 * float((ranks <= k).float().mean())
        out[f"{name}_median_rank"] = float(ranks.quantile(0.5))
        out[f"{name}_mean_rank"] = float(ranks.mean())
    return out


# ------------------------------------------------------------------------ classification


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent for single-label ``labels`` [N]; k is capped at the class count."""
    logits = logits.detach().float().cpu()
    labels = labels.detach().long().cpu()
    out = {}
    for k in ks:
        kk = min(k, logits.shape[1])
        hit = (logits.topk(kk, dim=1).indices == labels[:, None]).any(1)
        out[f"top{k}"] = 100.0 * float(hit.float().mean())
    return out


def average_precision(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> float:
    """Non-interpolated AP of one class: mean precision at each positive's rank.

    ``scores`` [N], ``targets`` [N] in {0, 1}; NaN when there is no positive.
    Ties are broken pessimistically (negatives first), so AP is never optimistic.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64) > 0
    if not t.any():
        return float("nan")
    # Sort by score desc; among equal scores put negatives first.
    order = np.lexsort((t, -s))
    hits = t[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Multi-label mAP in percent: AP per class (``[N, C]`` scores vs multi-hot
    targets), averaged over classes that have at least one positive."""
    s = scores.detach().float().cpu().numpy()
    t = targets.detach().float().cpu().numpy()
    aps = [average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])]
    aps = [a for a in aps if not math.isnan(a)]
    return 100.0 * float(np.mean(aps)) if aps else float("nan")


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    idx = labels.long().cpu() * num_classes + predictions.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


# ------------------------------------------------------------------ temporal localization


@dataclass(frozen=True)
class Segment:
    """A temporal segment in seconds with a class and (for predictions) a score."""

    video: int
    start: float
    end: float
    label: int
    score: float = 1.0


def temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU between segments ``a`` [N, 2] and ``b`` [M, 2] (start, end) -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC/ActivityNet interpolated AP (``interpolated_prec_rec`` of the ActivityNet kit)."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def detection_ap(predictions: Sequence[Segment], ground_truth: Sequence[Segment], tiou: float) -> float:
    """AP of one class at one tIoU threshold (ActivityNet ``compute_average_precision_detection``).

    Predictions are sorted by score over all videos; each is matched to the
    unmatched ground-truth segment of its video with the highest tIoU >= ``tiou``.
    """
    if not ground_truth:
        return float("nan")
    if not predictions:
        return 0.0
    preds = sorted(predictions, key=lambda p: -p.score)
    gt_by_video: dict[int, list[int]] = {}
    for j, g in enumerate(ground_truth):
        gt_by_video.setdefault(g.video, []).append(j)
    used = np.zeros(len(ground_truth), dtype=bool)
    tp = np.zeros(len(preds))
    for i, p in enumerate(preds):
        cands = gt_by_video.get(p.video, [])
        if not cands:
            continue
        ious = temporal_iou(np.array([[p.start, p.end]]), np.array([[ground_truth[j].start, ground_truth[j].end] for j in cands]))[0]
        for k in np.argsort(-ious):
            if ious[k] < tiou:
                break
            if not used[cands[k]]:
                used[cands[k]] = True
                tp[i] = 1
                break
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(preds) + 1)
    recall = ctp / len(ground_truth)
    return _interpolated_ap(precision, recall)


def localization_map(
    predictions: Sequence[Segment], ground_truth: Sequence[Segment], tious: Sequence[float] = ACTIVITYNET_TIOUS
) -> dict[str, float]:
    """ActivityNet-style mAP (percent): per threshold, AP averaged over classes
    present in the ground truth; ``mAP`` is the mean over thresholds."""
    classes = sorted({g.label for g in ground_truth})
    out: dict[str, float] = {}
    per_t = []
    for t in tious:
        aps = [
            detection_ap([p for p in predictions if p.label == c], [g for g in ground_truth if g.label == c], t)
            for c in classes
        ]
        m = 100.0 * float(np.mean(aps)) if aps else float("nan")
        out[f"mAP@{t:.2f}"] = m
        per_t.append(m)
    out["mAP"] = float(np.mean(per_t)) if per_t else float("nan")
    return out


# ------------------------------------------------------------------------- captioning


def caption_tokens(text: str) -> list[str]:
    """Tokens for BLEU/CIDEr: the official canonicalisation, split on spaces, final '.' dropped."""
    return canonicalize_text(text).rstrip(".").split()


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` (Papineni et al.) in [0, 1]: clipped n-gram precisions
    pooled over the corpus, geometric mean, brevity penalty against the closest
    reference length. Zero when any n-gram order has no match (no smoothing)."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate is needed")
    matches = [0] * max_n
    totals = [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references):
        c = caption_tokens(cand)
        rs = [caption_tokens(r) for r in refs]
        cand_len += len(c)
        # Closest reference length; ties go to the shorter one (as in multi-bleu / coco).
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            cn = _ngrams(c, n)
            max_ref: Counter = Counter()
            for r in rs:
                max_ref |= _ngrams(r, n)
            matches[n - 1] += sum(min(v, max_ref[g]) for g, v in cn.items())
            totals[n - 1] += max(len(c) - n + 1, 0)
    if min(matches) == 0 or cand_len == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    bp = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return bp * math.exp(log_p)


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015, the coco-caption implementation): TF-IDF
    n-gram vectors (n = 1..4) with document frequencies over the reference sets,
    clipped candidate counts, a Gaussian length penalty (sigma 6), times 10,
    averaged over n and over references, then over the corpus."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate is needed")
    n_max = 4
    refs_tok = [[caption_tokens(r) for r in refs] for refs in references]
    cands_tok = [caption_tokens(c) for c in candidates]
    df: Counter = Counter()
    for refs in refs_tok:
        grams: set = set()
        for r in refs:
            for n in range(1, n_max + 1):
                grams.update(_ngrams(r, n))
        df.update(grams)
    log_n = math.log(float(len(references)))

    def vec(tokens: Sequence[str]) -> tuple[list[dict], list[float], int]:
        vs, norms = [], []
        for n in range(1, n_max + 1):
            v = {g: tf * (log_n - math.log(max(1.0, df[g]))) for g, tf in _ngrams(tokens, n).items()}
            vs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vs, norms, len(tokens)

    def sim(c: tuple, r: tuple) -> np.ndarray:
        (vc, nc, lc), (vr, nr, lr) = c, r
        out = np.zeros(n_max)
        for n in range(n_max):
            # CIDEr-D clips candidate weights at the reference's (min(vc, vr)).
            val = sum(min(w, vr[n][g]) * vr[n][g] for g, w in vc[n].items() if g in vr[n])
            if nc[n] != 0 and nr[n] != 0:
                val /= nc[n] * nr[n]
            out[n] = val * math.exp(-((lc - lr) ** 2) / (2 * sigma**2))
        return out

    scores = []
    for c_tok, refs in zip(cands_tok, refs_tok):
        vc = vec(c_tok)
        s = np.zeros(n_max)
        for r in refs:
            s += sim(vc, vec(r))
        scores.append(float(np.mean(s) / len(refs) * 10.0))
    return float(np.mean(scores)) if scores else float("nan")


def exact_match_accuracy(predictions: Iterable[str], answers: Iterable[str]) -> float:
    """Percent of predictions equal to the answer after canonicalisation (QA top-1)."""
    pairs = list(zip(predictions, answers))
    if not pairs:
        return float("nan")
    return 100.0 * sum(caption_tokens(p) == caption_tokens(a) for p, a in pairs) / len(pairs)
