"""The evaluation tasks behind ``videoprism eval TASK``: each one extracts (or
reuses) frozen features, trains its light head where it has one, scores the
test split and writes ``metrics.json``, ``metrics.md`` and figures.

=========  ================================================  ===========================
task       what                                              metrics
=========  ================================================  ===========================
probe      attentive (MAP) probe on frozen tokens            top-1/top-5 (mAP multi-label)
linear     linear probe on mean-pooled tokens                top-1/top-5 (mAP multi-label)
retrieval  zero-shot text<->video retrieval                  R@1/5/10, median rank
zeroshot   zero-shot classification from class names         top-1/top-5
localize   temporal head over per-snippet features           mAP at tIoU 0.5:0.95
caption    Perceiver resampler + decoder, captions           BLEU-4, CIDEr-D
qa         Perceiver resampler + decoder, question->answer   accuracy
=========  ================================================  ===========================

Splits default to the synthetic benchmark layout (``--data`` folder with
``probe_train.jsonl``, ``test.jsonl``, ``long.jsonl``, ``classes.json``,
``tokenizer.model``); ``--train``/``--test`` point at other manifests.
Every result also carries a reference "chance" level (uniform guessing, or the
answer prior for QA and the most frequent caption for captioning), so that a
random backbone can be seen to sit at chance.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from open_videoprism.atomic import write_json, write_jsonl
from open_videoprism.errors import DataError, UserError
from open_videoprism.eval import captioning as cap
from open_videoprism.eval import localization as loc
from open_videoprism.eval import plots
from open_videoprism.eval.config import EvalConfig
from open_videoprism.eval.features import (
    FeatureConfig,
    FeatureSet,
    extract_features,
    file_fingerprint,
    fingerprint_hash,
    load_features,
)
from open_videoprism.eval.metrics import (
    Segment,
    bleu,
    cider_d,
    confusion_matrix,
    exact_match_accuracy,
    localization_map,
    mean_average_precision,
    retrieval_metrics,
    topk_accuracy,
)
from open_videoprism.eval.probes import Features, ProbeConfig, ProbeKind, predict, train_probe
from open_videoprism.eval.report import write_report
from open_videoprism.eval.zeroshot import (
    PROMPT_TEMPLATES,
    class_embeddings,
    classify,
    encode_texts,
    require_video_text,
    similarity,
)
from open_videoprism.models import VideoPrism
from open_videoprism.tokenizer import find_tokenizer

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Everything a task needs besides the model: where things are, and the ``eval:`` config."""

    checkpoint: str
    out_dir: Path
    data_dir: Path | None = None
    train_manifest: str | None = None
    test_manifest: str | None = None
    cache_dir: Path | None = None  # default: OUT/features
    tokenizer: str | None = None  # default: DATA/tokenizer.model
    cfg: EvalConfig = field(default_factory=EvalConfig)
    progress: bool = True

    @property
    def features(self) -> FeatureConfig:
        return self.cfg.features

    @property
    def label_field(self) -> str:
        return self.cfg.features.label_field


# ----------------------------------------------------------------------------- helpers


def _split(settings: EvalSettings, which: str) -> str:
    """Manifest of ``which`` in {"train", "test", "long"}."""
    explicit = {"train": settings.train_manifest, "test": settings.test_manifest}.get(which)
    if explicit:
        if not Path(explicit).is_file():
            raise DataError(f"{explicit}: manifest not found")
        return explicit
    if settings.data_dir is None:
        raise UserError(f"no {which} split: pass --data SYNTH_DIR or --{which} MANIFEST")
    name = {"train": "probe_train.jsonl", "test": "test.jsonl", "long": "long.jsonl"}[which]
    path = Path(settings.data_dir) / name
    if not path.is_file():
        raise DataError(f"{path}: not found; --data must be a `videoprism synth` folder, or pass --{which} MANIFEST")
    return str(path)


def _manifest(path: str):
    from open_videoprism.data import Manifest

    return Manifest.read(path)


def _cache_folder(settings: EvalSettings, manifest: str, cfg: FeatureConfig, dtype: torch.dtype = torch.float32) -> Path:
    ident: dict[str, Any] = {"manifest": file_fingerprint(manifest), "checkpoint": file_fingerprint(settings.checkpoint),
                             "cfg": cfg.identity()}
    if dtype != torch.float32:  # bf16 features get their own folder; fp32 folders keep their names
        ident["model_dtype"] = str(dtype).removeprefix("torch.")
    key = fingerprint_hash(ident)
    return (settings.cache_dir or settings.out_dir / "features") / f"{Path(manifest).stem}-{key}"


def features_for(model: VideoPrism, settings: EvalSettings, manifest: str, cfg: FeatureConfig | None = None,
                 mmap: bool = False) -> FeatureSet:
    """Cached features of ``manifest``. The cache folder name hashes everything that
    determines them, so a changed setting never reuses stale features; a task that
    needs no tokens reuses a finished folder that has them (a superset). ``mmap``: the
    tokens stay memory-mapped in the shards (:func:`load_features`)."""
    cfg = (cfg or settings.features).resolved(model)
    if not cfg.store_tokens:
        superset = _cache_folder(settings, manifest, FeatureConfig(**{**asdict(cfg), "store_tokens": True}), model.dtype)
        progress = superset / "progress.json"
        if progress.is_file() and json.loads(progress.read_text()).get("complete"):
            return load_features(superset, mmap=mmap)
    cache = _cache_folder(settings, manifest, cfg, model.dtype)
    log.info("features of %s: %s", manifest, cache)
    extract_features(model, manifest, cache, cfg, checkpoint=settings.checkpoint, progress=settings.progress)
    return load_features(cache, mmap=mmap)


def _class_names(settings: EvalSettings, field_name: str) -> list[str] | None:
    if settings.data_dir is None:
        return None
    path = Path(settings.data_dir) / "classes.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    names = doc.get(field_name) if isinstance(doc, dict) else None
    return list(names) if isinstance(names, list) else None


def _labels(manifest: str, fs: FeatureSet, field_name: str, num_classes: int | None = None) -> torch.Tensor:
    """The labels of the samples in ``fs``; each must be a class index in [0, num_classes) (when known)."""
    entries = _manifest(manifest)
    labels = []
    for i in fs.index.tolist():
        value = entries[i].label(field_name)
        if value is None:
            raise DataError(f"{manifest}: sample {i} has no '{field_name}' field (choose another --label-field)")
        ids = value if isinstance(value, list) else [value]
        bad = [v for v in ids if v < 0 or (num_classes is not None and v >= num_classes)]
        if bad:
            known = f"the {num_classes} classes of classes.json" if num_classes is not None else "valid class indices"
            raise DataError(
                f"{manifest}: sample {i} has {field_name} {bad[0]}, outside [0, {num_classes if num_classes is not None else 'inf'}) "
                f"({known}); fix the manifest or classes.json"
            )
        labels.append(value)
    if len({isinstance(v, list) for v in labels}) > 1:
        raise DataError(f"{manifest}: '{field_name}' mixes single labels and label lists; use one kind")
    if isinstance(labels[0], list):  # multi-label: lists of class ids -> multi-hot
        c = 1 + max(max(v) for v in labels if v)
        hot = torch.zeros(len(labels), c)
        for r, v in enumerate(labels):
            hot[r, v] = 1.0
        return hot
    return torch.tensor(labels, dtype=torch.long)


# Per-sample feature size up to which heads train on one CPU thread.
_SMALL_HEAD_NUMEL = 1 << 16


@contextmanager
def head_threads(sample_numel: int) -> Iterator[None]:
    """Train small heads single-threaded: intra-op threading gains nothing on such
    tiny matmuls and its synchronisation costs up to 8x on a busy 2-core machine
    (measured). Large inputs (e.g. base-model tokens) keep the process setting."""
    before = torch.get_num_threads()
    if sample_numel <= _SMALL_HEAD_NUMEL:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _chance_topk(num_classes: int) -> dict[str, float]:
    return {"top1": 100.0 / num_classes, "top5": 100.0 * min(5, num_classes) / num_classes}


# ------------------------------------------------------------------------------ tasks


# Token sets up to this size (as float32) are read into memory for the probe.
IN_MEMORY_BYTES = 1 << 30


def _probe_tokens(fs: FeatureSet, order: str) -> Features | None:
    """The tokens a probe reads: a memory-mapped set small enough to hold as float32 becomes a tensor
    (indexing a tensor saves ~1.6 ms of a ~6 ms probe step at width 64, docs/benchmarks.md, and
    trains the same probe bit for bit); larger sets, and the ``shards`` order, stay mapped."""
    if fs.tokens is None or (order == "shards" or 4 * math.prod(fs.tokens.shape) > IN_MEMORY_BYTES):
        return fs.tokens
    return fs.token_tensor()


def run_probe(model: VideoPrism, settings: EvalSettings, kind: ProbeKind) -> dict[str, Any]:
    """Attentive (``kind="attentive"``) or linear probe on frozen tokens."""
    train_m, test_m = _split(settings, "train"), _split(settings, "test")
    need_tokens = kind == "attentive"
    fcfg = FeatureConfig(**{**asdict(settings.features), "store_tokens": need_tokens})
    # Tokens stay memory-mapped (float16 on disk, read a minibatch at a time): a large set never
    # becomes one float32 tensor. The same probe as from the tensor, bit for bit.
    train_fs = features_for(model, settings, train_m, fcfg, mmap=need_tokens)
    test_fs = features_for(model, settings, test_m, fcfg, mmap=need_tokens)
    names = _class_names(settings, settings.label_field)
    known = len(names) if names else None
    y_train = _labels(train_m, train_fs, settings.label_field, known)
    y_test = _labels(test_m, test_fs, settings.label_field, known)
    multilabel = y_train.dim() == 2
    if multilabel:
        num_classes = max(y_train.shape[1], y_test.shape[1])
        pad = lambda y: torch.nn.functional.pad(y, (0, num_classes - y.shape[1]))  # noqa: E731
        y_train, y_test = pad(y_train), pad(y_test)
    else:
        num_classes = len(names) if names else 1 + int(max(y_train.max(), y_test.max()))
    # [N, K, L, D]; the linear probe sees each clip's mean token ([N, K, 1, D]) so that
    # clips stay separate samples and are averaged only at prediction time.
    cfg = replace(settings.cfg.probe, kind=kind)
    x_train = _probe_tokens(train_fs, cfg.order) if need_tokens else train_fs.mean_tokens[:, :, None]
    x_test = _probe_tokens(test_fs, cfg.order) if need_tokens else test_fs.mean_tokens[:, :, None]
    assert x_train is not None and x_test is not None
    with head_threads(math.prod(x_train.shape[1:])):
        probe, history = train_probe(
            x_train, y_train, num_classes, cfg,
            val_features=None if multilabel else x_test, val_labels=None if multilabel else y_test,
            progress=settings.progress, device=model.device,
        )
        scores = predict(probe, x_test, multilabel=multilabel)
    if multilabel:
        metrics: dict[str, Any] = {"mAP": mean_average_precision(scores, y_test)}
        chance = {"mAP": 100.0 * float(y_test.mean())}
    else:
        metrics = topk_accuracy(scores, y_test)
        chance = _chance_topk(num_classes)
    metrics.update({"num_train": len(train_fs), "num_test": len(test_fs), "num_classes": num_classes})
    out = settings.out_dir
    if settings.cfg.plots:
        if not multilabel:
            cm = confusion_matrix(scores.argmax(-1), y_test, num_classes)
            plots.plot_confusion_matrix(cm, names, out / "confusion_matrix.png", f"{kind} probe ({settings.label_field})")
        plots.plot_training_curves(
            {k: v for k, v in history.to_dict().items() if k not in ("epoch", "val_epoch")}, out / "training_curves.png",
            f"{kind} probe", epochs={"val_accuracy": history.val_epoch},
        )
    write_json(out / "history.json", history.to_dict(), sort_keys=True)
    return {"metrics": metrics, "chance": chance, "config": cfg.to_dict()}


def _tokenizer(settings: EvalSettings):
    from open_videoprism.tokenizer import Tokenizer

    path = settings.tokenizer or find_tokenizer(settings.data_dir)
    if path is None:
        raise UserError("zero-shot needs the text tokenizer: pass --tokenizer PATH (a SentencePiece .model)")
    return Tokenizer(path)


def run_retrieval(model: VideoPrism, settings: EvalSettings) -> dict[str, Any]:
    """Zero-shot text<->video retrieval on the test split, all captions of each video."""
    require_video_text(model, settings.checkpoint)
    tok = _tokenizer(settings)
    test_m = _split(settings, "test")
    fs = features_for(model, settings, test_m, FeatureConfig(**{**asdict(settings.features), "store_tokens": False}))
    entries = _manifest(test_m)
    texts, owner = [], []
    for row, i in enumerate(fs.index.tolist()):
        caps = entries[i].captions
        if not caps:
            raise DataError(f"{test_m}: sample {i} has no caption; retrieval needs captions")
        texts.extend(caps)
        owner.extend([row] * len(caps))
    text_emb = encode_texts(model, tok, texts)
    sim = similarity(fs.video_embedding(), text_emb)
    metrics: dict[str, Any] = retrieval_metrics(sim, owner)
    n = len(fs)
    metrics.update({"num_videos": n, "num_captions": len(texts)})
    chance = {f"t2v_R@{k}": 100.0 * min(k, n) / n for k in (1, 5, 10)}
    chance["t2v_median_rank"] = (n + 1) / 2
    if settings.cfg.plots:
        shown = list(range(0, len(texts), max(1, len(texts) // 4)))[:4]
        ranked = sim[shown].topk(min(5, n), dim=1).indices.tolist()
        plots.plot_retrieval_examples([texts[q] for q in shown], ranked, [owner[q] for q in shown], fs.thumbnail, settings.out_dir / "retrieval_examples.png")
    return {"metrics": metrics, "chance": chance}


def run_zeroshot(model: VideoPrism, settings: EvalSettings) -> dict[str, Any]:
    """Zero-shot classification of the test split from class names + prompt templates."""
    require_video_text(model, settings.checkpoint)
    tok = _tokenizer(settings)
    names = _class_names(settings, settings.label_field)
    if not names:
        raise UserError(f"zero-shot classification needs class names: {settings.data_dir}/classes.json with a "
                        f"'{settings.label_field}' list")
    templates: tuple[str, ...] = tuple(settings.cfg.templates)
    if not templates:
        prompts = json.loads((Path(settings.data_dir) / "classes.json").read_text()).get("prompts", {})  # type: ignore[arg-type]
        own = prompts.get(settings.label_field)
        templates = (own, *PROMPT_TEMPLATES) if own else PROMPT_TEMPLATES
    test_m = _split(settings, "test")
    fs = features_for(model, settings, test_m, FeatureConfig(**{**asdict(settings.features), "store_tokens": False}))
    labels = _labels(test_m, fs, settings.label_field, len(names))
    scores = classify(fs.video_embedding(), class_embeddings(model, tok, names, templates))
    metrics: dict[str, Any] = topk_accuracy(scores, labels)
    metrics.update({"num_test": len(fs), "num_classes": len(names)})
    if settings.cfg.plots:
        cm = confusion_matrix(scores.argmax(-1), labels, len(names))
        plots.plot_confusion_matrix(cm, names, settings.out_dir / "confusion_matrix.png", f"zero-shot ({settings.label_field})")
    return {"metrics": metrics, "chance": _chance_topk(len(names)), "templates": list(templates)}


def _snippet_centers(entry, num_clips: int, num_frames: int, stride: int) -> tuple[np.ndarray, float]:
    """Centre times (s) of the multi-clip snippets of one long video, and its duration."""
    from open_videoprism.data import VideoReader, multiclip_indices

    n, fps = entry.fields.get("num_frames"), entry.fields.get("fps")
    if not n or not fps:
        with VideoReader(entry.path) as r:
            n, fps = r.num_frames, r.fps
    idx = multiclip_indices(int(n), num_frames, stride, num_clips)
    return (idx[:, 0] + idx[:, -1] + 1) / 2.0 / float(fps), float(n) / float(fps)


def run_localize(model: VideoPrism, settings: EvalSettings) -> dict[str, Any]:
    """Temporal localization on the long-video split: first 2/3 of the videos train the head."""
    long_m = _split(settings, "long") if not settings.test_manifest else settings.test_manifest
    entries = _manifest(long_m)
    if len(entries) < 2:
        raise DataError(f"{long_m}: localization needs at least 2 long videos (one to train, one to test)")
    snippets = settings.cfg.snippets
    fcfg = FeatureConfig(**{**asdict(settings.features), "num_clips": snippets, "sampling": "multiclip", "store_tokens": False}).resolved(model)
    fs = features_for(model, settings, long_m, fcfg)
    names = _class_names(settings, "motion_label")
    segs_all = [entries[i].fields.get("segments") for i in fs.index.tolist()]
    if any(s is None for s in segs_all):
        raise DataError(f"{long_m}: every long video needs a 'segments' list of {{start, end, label}}")
    num_classes = len(names) if names else 1 + max(int(s["label"]) for segs in segs_all for s in segs)
    timing = [_snippet_centers(entries[i], snippets, fcfg.num_frames, fcfg.frame_stride) for i in fs.index.tolist()]  # type: ignore[arg-type]
    feats = [fs.mean_tokens[r] for r in range(len(fs))]
    n_train = max(1, (2 * len(fs)) // 3)
    cfg = settings.cfg.localize
    targets = [loc.snippet_targets(timing[r][0], segs_all[r], num_classes) for r in range(n_train)]
    test_rows = list(range(n_train, len(fs)))
    with head_threads(feats[0].numel()):
        head, losses = loc.train_temporal_head(feats[:n_train], targets, num_classes, cfg, progress=settings.progress)
        preds = loc.predict_segments(
            head, [feats[r] for r in test_rows], [timing[r][0] for r in test_rows], [timing[r][1] for r in test_rows], cfg
        )
    gt = [Segment(j, float(s["start"]), float(s["end"]), int(s["label"])) for j, r in enumerate(test_rows) for s in segs_all[r]]
    metrics: dict[str, Any] = localization_map(preds, gt)
    metrics.update({"num_train_videos": n_train, "num_test_videos": len(test_rows), "num_segments": len(gt)})
    write_json(settings.out_dir / "segments.json", [
        {"video": entries[int(fs.index[test_rows[p.video]])].path, "start": p.start, "end": p.end, "label": p.label, "score": p.score}
        for p in preds
    ])
    if settings.cfg.plots:
        plots.plot_training_curves({"loss": losses}, settings.out_dir / "training_curves.png", "temporal head")
    return {"metrics": metrics, "chance": {}, "config": cfg.to_dict()}


def _decoder_tokens(fs: FeatureSet) -> torch.Tensor:
    """``[N, K*L, D]``: all clips' tokens form the resampler's input (``[N, K, D]`` means without tokens)."""
    tokens = fs.token_tensor()
    return tokens.flatten(1, 2) if tokens is not None else fs.mean_tokens


def _text_samples(manifest: str, fs: FeatureSet, task: str, first_caption_only: bool) -> list[cap.TextSample]:
    entries = _manifest(manifest)
    samples: list[cap.TextSample] = []
    for row, i in enumerate(fs.index.tolist()):
        e = entries[i]
        if task == "caption":
            caps = e.captions[:1] if first_caption_only else e.captions
            samples.extend(cap.TextSample(row, "", c) for c in caps)
        else:
            samples.extend(cap.TextSample(row, q["question"], q["answer"]) for q in e.fields.get("qa") or [])
    if not samples:
        what = "captions" if task == "caption" else "'qa' question/answer pairs"
        raise DataError(f"{manifest}: no {what} in this manifest")
    return samples


def run_text_task(model: VideoPrism, settings: EvalSettings, task: str) -> dict[str, Any]:
    """``caption``: BLEU-4/CIDEr-D against all captions of a test video; ``qa``: answer accuracy."""
    train_m, test_m = _split(settings, "train"), _split(settings, "test")
    train_fs, test_fs = features_for(model, settings, train_m), features_for(model, settings, test_m)
    train = _text_samples(train_m, train_fs, task, first_caption_only=False)
    test = _text_samples(test_m, test_fs, task, first_caption_only=True)
    vocab = cap.WordVocab.build([s.target for s in train] + [s.prompt for s in train])
    cfg = settings.cfg.caption
    train_tokens, test_tokens = _decoder_tokens(train_fs), _decoder_tokens(test_fs)
    with head_threads(train_tokens[0].numel()):
        decoder, losses = cap.train_decoder(train_tokens, train, vocab, cfg, progress=settings.progress)
        outputs = cap.generate_texts(decoder, test_tokens, test, vocab, cfg.max_new_tokens, progress=settings.progress)
    test_entries = _manifest(test_m)
    if task == "caption":
        refs = [test_entries[int(test_fs.index[s.video])].captions for s in test]
        metrics: dict[str, Any] = {"BLEU-4": 100.0 * bleu(outputs, refs), "CIDEr": 100.0 * cider_d(outputs, refs)}
        # Baseline: the most frequent training caption for every video.
        common = Counter(s.target for s in train).most_common(1)[0][0]
        chance = {"BLEU-4": 100.0 * bleu([common] * len(test), refs), "CIDEr": 100.0 * cider_d([common] * len(test), refs)}
    else:
        answers = [s.target for s in test]
        metrics = {"accuracy": exact_match_accuracy(outputs, answers)}
        # Baseline: the most frequent training answer of each question (the answer prior).
        prior: dict[str, Counter] = {}
        for s in train:
            prior.setdefault(s.prompt, Counter())[s.target] += 1
        guess = [prior[s.prompt].most_common(1)[0][0] if s.prompt in prior else "" for s in test]
        chance = {"accuracy": exact_match_accuracy(guess, answers)}
        for q in sorted({s.prompt for s in test}):
            rows = [k for k, s in enumerate(test) if s.prompt == q]
            metrics[f"accuracy[{q}]"] = exact_match_accuracy([outputs[k] for k in rows], [answers[k] for k in rows])
    metrics.update({"num_train": len(train), "num_test": len(test), "vocab_size": len(vocab)})
    preds = [{"video": test_entries[int(test_fs.index[s.video])].path, "prompt": s.prompt, "target": s.target, "output": o}
             for s, o in zip(test, outputs)]
    write_jsonl(settings.out_dir / "predictions.jsonl", preds)
    if settings.cfg.plots:
        plots.plot_training_curves({"loss": losses}, settings.out_dir / "training_curves.png", f"{task} decoder")
    return {"metrics": metrics, "chance": chance, "config": cfg.to_dict()}


def head_config(cfg: EvalConfig, task: str) -> ProbeConfig | loc.LocalizationConfig | cap.CaptionConfig:
    """The config of the head ``task`` trains (the probe's for tasks without a head: its seed is used)."""
    heads: dict[str, ProbeConfig | loc.LocalizationConfig | cap.CaptionConfig] = {
        "localize": cfg.localize, "caption": cfg.caption, "qa": cfg.caption}
    return heads.get(task, cfg.probe)


RUNNERS: dict[str, Callable[[VideoPrism, EvalSettings], dict[str, Any]]] = {
    "probe": lambda m, s: run_probe(m, s, s.cfg.probe.kind),
    "linear": lambda m, s: run_probe(m, s, "linear"),
    "retrieval": run_retrieval,
    "zeroshot": run_zeroshot,
    "localize": run_localize,
    "caption": lambda m, s: run_text_task(m, s, "caption"),
    "qa": lambda m, s: run_text_task(m, s, "qa"),
}


TASKS: tuple[str, ...] = tuple(RUNNERS)


def check_task(task: str) -> None:
    if task not in RUNNERS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def run_task(task: str, model: VideoPrism, settings: EvalSettings) -> dict[str, Any]:
    """Run one task and write ``OUT/metrics.json`` + ``OUT/metrics.md``; returns the JSON payload."""
    check_task(task)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    seed = head_config(settings.cfg, task).seed
    torch.manual_seed(seed)
    result = RUNNERS[task](model, settings)
    chance = {k: v for k, v in (result.pop("chance", {}) or {}).items() if v is not None}
    metrics = result.pop("metrics")
    extra = {
        "checkpoint": str(settings.checkpoint),
        "data": str(settings.data_dir) if settings.data_dir else None,
        "label_field": settings.label_field if task in ("probe", "linear", "zeroshot") else None,
        "features": asdict(settings.features.resolved(model)),
        "seed": seed,
        **result,
    }
    write_report(settings.out_dir, task, metrics, chance=chance, extra=extra)
    return {"task": task, "metrics": metrics, "chance": chance, **extra}

