"""Frozen-backbone evaluation: cached features, probes, zero-shot retrieval and
classification, temporal localization, captioning/QA, metrics, plots, reports.

>>> from open_videoprism.eval import extract_features, load_features, train_probe, ProbeConfig
>>> extract_features(model, "synth/test.jsonl", "feats/test")
>>> fs = load_features("feats/test")          # fs.tokens [N, K, T*N, D], fs.embedding [N, K, D]
>>> big = load_features("feats/k400", mmap=True)  # big.tokens: a TokenStore, read a minibatch at a time

The CLI front end is ``videoprism features`` / ``videoprism eval TASK``
(:mod:`open_videoprism.eval.tasks`). See docs/evaluation.md.
"""

from open_videoprism.eval.config import EvalConfig, load_eval_config
from open_videoprism.eval.features import FeatureConfig, FeatureSet, extract_features, load_features
from open_videoprism.eval.metrics import (
    bleu,
    cider_d,
    localization_map,
    mean_average_precision,
    retrieval_metrics,
    topk_accuracy,
)
from open_videoprism.eval.probes import AttentiveProbe, LinearProbe, ProbeConfig, predict, train_probe
from open_videoprism.eval.store import ShardWindows, TokenStore
from open_videoprism.eval.zeroshot import NotVideoTextModelError, class_embeddings, encode_texts, require_video_text

__all__ = [
    "AttentiveProbe",
    "EvalConfig",
    "FeatureConfig",
    "FeatureSet",
    "LinearProbe",
    "NotVideoTextModelError",
    "ProbeConfig",
    "ShardWindows",
    "TokenStore",
    "bleu",
    "cider_d",
    "class_embeddings",
    "encode_texts",
    "extract_features",
    "load_eval_config",
    "load_features",
    "localization_map",
    "mean_average_precision",
    "predict",
    "require_video_text",
    "retrieval_metrics",
    "topk_accuracy",
    "train_probe",
]
