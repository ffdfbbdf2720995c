"""The library API: what the ``videoprism`` commands do, as functions.

>>> import open_videoprism as ovp
>>> run = ovp.pretrain("stage1-tiny", data="synth/pretrain.jsonl", out="runs/s1", overrides=["steps=200"])
>>> run.final_path                                    # runs/s1/final/model.safetensors
>>> ovp.evaluate("probe", "runs/s1", data="synth", out="eval/s1-motion", label_field="motion_label")["metrics"]
>>> ovp.extract_features("runs/s1", "synth/test.jsonl", "feats/test", overrides=["num_clips=4"])

The CLI only parses arguments into these calls and prints their results; a
script (``videoprism reproduce``, a sweep) calls them directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from open_videoprism.atomic import write_json
from open_videoprism.errors import ConfigError, UserError

if TYPE_CHECKING:
    from open_videoprism.eval.config import EvalConfig
    from open_videoprism.eval.features import FeatureConfig
    from open_videoprism.models import VideoPrism
    from open_videoprism.tokenizer import Tokenizer
    from open_videoprism.train.config import TrainConfig
    from open_videoprism.train.engine import TrainResult

PathLike = str | os.PathLike
DATA_SOURCE_FILE = "data_source.json"


# ----------------------------------------------------------------------------- pretraining


def _train_config(config: TrainConfig | PathLike | None, out: Path, overrides: Sequence[str], resume: bool) -> TrainConfig:
    from open_videoprism.config import to_dict
    from open_videoprism.train.config import TrainConfig, load_config
    from open_videoprism.train.engine import CONFIG_FILE

    if isinstance(config, TrainConfig):
        return load_config(to_dict(config), overrides)
    if config is not None:
        return load_config(config, overrides)
    saved = out / CONFIG_FILE
    if resume and saved.is_file():
        return load_config(saved, overrides)
    raise ConfigError("a config is required (a recipe path or name), except when resuming a run that has config.yaml")


def _data_source(data: PathLike | None, out: Path, resume: bool, cfg: TrainConfig) -> str | None:
    import json

    meta = out / DATA_SOURCE_FILE
    if data is None and resume and meta.is_file():
        data = json.loads(meta.read_text())["data"]
    if data is None and not cfg.data.datasets:
        raise ConfigError("no data: give a manifest, WebDataset shards or 'random', or list data.datasets in the config")
    if data not in (None, "random") and not Path(data).exists() and not any(c in str(data) for c in "{*"):
        raise UserError(f"{data}: no such manifest, shard or folder (generate one with `videoprism synth DIR`)")
    return None if data is None else str(data)


def _teacher_ref(teacher: PathLike | None) -> str | None:
    """``--teacher`` as the run records it: an absolute path when it is one (a hub name stays as is)."""
    if teacher is None:
        return None
    return str(Path(teacher).resolve()) if Path(teacher).exists() else str(teacher)


def _saved_teacher(out: Path) -> str | None:
    """The ``--teacher`` a run was started with (``data_source.json``), if any."""
    import json

    meta = out / DATA_SOURCE_FILE
    return json.loads(meta.read_text()).get("teacher") if meta.is_file() else None


def _train_tokenizer(path: PathLike | None, data: str | None, cfg: TrainConfig, model: VideoPrism) -> tuple[Path | None, Tokenizer | None]:
    """The captions' tokenizer: ``path``, else the one next to the data; checked against the model's vocabulary."""
    from open_videoprism.tokenizer import Tokenizer, find_tokenizer

    if path is not None and not Path(path).is_file():
        raise UserError(f"{path}: tokenizer file not found")
    found = Path(path) if path is not None else find_tokenizer(data)
    if found is None:
        if cfg.objective_name == "contrastive" and data not in (None, "random"):
            raise UserError(f"the contrastive objective needs its captions tokenized: no tokenizer.model next to {data}; "
                            "pass a tokenizer (videoprism synth writes tokenizer.model next to its manifests)")
        return None, None
    tok = Tokenizer(found)
    if model.text is not None and tok.vocab_size > model.text.cfg.vocab_size:
        raise ConfigError(f"{found}: {tok.vocab_size} pieces but model {cfg.model.name or cfg.model.init} has a text "
                          f"vocabulary of {model.text.cfg.vocab_size}; use a matching tokenizer or model")
    return found, tok


def pretrain(
    config: TrainConfig | PathLike | None = None,
    *,
    out: PathLike,
    data: PathLike | None = None,
    overrides: Sequence[str] = (),
    teacher: PathLike | None = None,
    tokenizer: PathLike | None = None,
    resume: bool = False,
    eval_data: PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run a pretraining recipe into the run folder ``out``; returns the :class:`TrainResult`
    (``final_path``: the encoder checkpoint, ``ovp.load(out)`` reads it).

    Args:
        config: a recipe (path or shipped name such as ``"stage1-tiny"``) or a
            :class:`TrainConfig`; None with ``resume``: the run's ``config.yaml``.
        out: the run folder (``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``final/``).
        data: a manifest, WebDataset shards, a folder, or ``"random"`` (synthetic
            tensors); None: the recipe's ``data.datasets``, or on resume the run's data.
        overrides: ``key=value`` settings over the recipe (``["optim.lr=3e-4"]``).
        teacher: stage 2: the teacher run folder or checkpoint, passed to the objective.
        tokenizer: SentencePiece model of the captions (default: ``tokenizer.model`` next to ``data``).
        resume: continue from the last intact checkpoint in ``out``.
        eval_data: after training, zero-shot retrieval on this held-out manifest with the
            ``retrieval`` task's protocol; its payload lands in ``result.eval["retrieval"]``
            and ``out/final/retrieval/``.
    """
    from open_videoprism.runlock import acquire, release
    from open_videoprism.train.data import build_stream_factory
    from open_videoprism.train.distributed import cleanup, init_distributed, unwrap
    from open_videoprism.train.engine import FINAL_DIR, Trainer, build_objective

    out = Path(out)
    cfg = _train_config(config, out, overrides, resume)
    source = _data_source(data, out, resume, cfg)
    if teacher is None and resume:  # checkpoints leave the frozen teacher out: rebuild it from where the run had it
        teacher = _saved_teacher(out)
    info = init_distributed(cfg.device, cfg.distributed.backend)
    lock = None
    try:
        objective = build_objective(cfg, teacher=None if teacher is None else str(teacher))
        model = unwrap(objective).export_model()  # type: ignore[operator]  # the objective contract
        tok_path, tok = _train_tokenizer(tokenizer, source, cfg, model)
        if eval_data is not None and tok_path is None:
            raise UserError("retrieval after training needs a tokenizer (pass one, or keep tokenizer.model next to the data)")
        make_stream = build_stream_factory(cfg, source, tokenizer=tok, rank=info.rank, world_size=info.world_size,
                                           collate_fn=getattr(unwrap(objective), "collate_fn", None))
        if info.is_main:  # held to the end: a second run into `out` fails here, before writing anything
            lock = acquire(out)
        if info.is_main and source is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / DATA_SOURCE_FILE, {"data": source, "tokenizer": str(tok_path) if tok_path else None,
                                                "teacher": _teacher_ref(teacher)})
        result = Trainer(cfg, objective, make_stream, out, info=info, progress=progress).fit(resume=resume)
        if eval_data is not None and info.is_main and result.final_path is not None:
            result.eval["retrieval"] = evaluate(
                "retrieval", result.final_path, test=eval_data, tokenizer=tok_path, out=out / FINAL_DIR / "retrieval",
                config=cfg.eval, device=str(info.device), progress=progress,
            )
    finally:
        if lock is not None:
            release(lock)
        cleanup()
    return result


# ----------------------------------------------------------------------------- evaluation


def _frozen_model(checkpoint: PathLike, device: str | None, dtype: str = "fp32") -> VideoPrism:
    import torch

    from open_videoprism.checkpoints import load
    from open_videoprism.hub import is_hub_name

    if not is_hub_name(str(checkpoint)) and not Path(checkpoint).exists():
        raise UserError(f"{checkpoint}: checkpoint not found")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load(checkpoint, device=device, dtype=dtype)
    return model.requires_grad_(False)


# Which section of the eval config a task's --epochs / --lr set.
_HEADS = {"probe": "probe", "linear": "probe", "localize": "localize", "caption": "caption", "qa": "caption"}


def _shorthands(task: str, label_field: str | None, seed: int | None, epochs: int | None, lr: float | None) -> list[str]:
    """The overrides behind ``evaluate``'s keyword shorthands (and the CLI's flags)."""
    out = [] if label_field is None else [f"features.label_field={label_field}"]
    if seed is not None:
        out += [f"{head}.seed={seed}" for head in ("probe", "localize", "caption")]
    for name, value in (("epochs", epochs), ("lr", lr)):
        if value is None:
            continue
        if task not in _HEADS:
            raise ConfigError(f"{name}: task {task!r} trains no head")
        out.append(f"{_HEADS[task]}.{name}={value}")
    return out


def evaluate(
    task: str,
    checkpoint: PathLike,
    *,
    out: PathLike,
    data: PathLike | None = None,
    train: PathLike | None = None,
    test: PathLike | None = None,
    cache: PathLike | None = None,
    tokenizer: PathLike | None = None,
    config: EvalConfig | PathLike | None = None,
    overrides: Sequence[str] = (),
    label_field: str | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    device: str | None = None,
    dtype: str = "fp32",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a frozen checkpoint on one task (``probe``, ``linear``, ``retrieval``,
    ``zeroshot``, ``localize``, ``caption``, ``qa``); writes ``out/metrics.json``,
    ``metrics.md`` and figures, and returns the same payload (``["metrics"]``, ``["chance"]``).

    Args:
        data: a ``videoprism synth`` folder (``probe_train.jsonl``, ``test.jsonl``,
            ``long.jsonl``, ``classes.json``, ``tokenizer.model``); ``train``/``test``
            name other manifests.
        cache: the feature cache folder (default ``out/features``), shared by tasks.
        config: the ``eval:`` settings: an :class:`EvalConfig`, or a recipe whose
            ``eval:`` section is used; ``overrides`` are keys of that section
            (``probe.epochs=5``).
        label_field, seed, epochs, lr: shorthands for ``features.label_field``, every
            head's ``seed``, and the ``epochs``/``lr`` of the head ``task`` trains.
        dtype: the frozen model's precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 where
            native, :mod:`open_videoprism.precision`); heads train in float32 either way.
    """
    from open_videoprism.config import build, override_layers, to_dict
    from open_videoprism.eval.config import EvalConfig, load_eval_config
    from open_videoprism.eval.tasks import EvalSettings, check_task, run_task

    check_task(task)
    if data is not None and not Path(data).is_dir():
        raise UserError(f"{data}: the data must be a folder (a `videoprism synth` output)")
    extra = [*overrides, *_shorthands(task, label_field, seed, epochs, lr)]
    if isinstance(config, EvalConfig):
        cfg = build(EvalConfig, [("eval config", to_dict(config)), *override_layers(o.removeprefix("eval.") for o in extra)],
                    path="eval")
    else:
        cfg = load_eval_config(config, extra)
    from open_videoprism.runlock import run_lock

    model = _frozen_model(checkpoint, device, dtype)
    settings = EvalSettings(
        checkpoint=str(checkpoint), out_dir=Path(out), data_dir=Path(data) if data else None,
        train_manifest=None if train is None else str(train), test_manifest=None if test is None else str(test),
        cache_dir=Path(cache) if cache else None, tokenizer=None if tokenizer is None else str(tokenizer), cfg=cfg,
        progress=progress,
    )
    with run_lock(out):  # one writer per output folder
        return run_task(task, model, settings)


def extract_features(
    checkpoint: PathLike,
    manifest: PathLike,
    out: PathLike,
    *,
    config: FeatureConfig | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    device: str | None = None,
    dtype: str = "fp32",
    progress: bool = True,
) -> Path:
    """Cache frozen features of every video of ``manifest`` in ``out`` (resumable; see
    :func:`open_videoprism.eval.features.extract_features`); ``overrides`` are
    :class:`FeatureConfig` keys (``num_clips=4``); ``dtype``: ``"fp32"``, ``"bf16"`` or
    ``"auto"`` (a folder records a non-fp32 dtype in its identity). Returns ``out``;
    :func:`open_videoprism.eval.load_features` reads it."""
    from open_videoprism.config import build, override_layers, to_dict
    from open_videoprism.eval.features import FeatureConfig
    from open_videoprism.eval.features import extract_features as extract

    if not Path(manifest).is_file():
        raise UserError(f"{manifest}: manifest not found")
    base = [("features", to_dict(config))] if config is not None else []
    cfg = build(FeatureConfig, [*base, *override_layers(overrides)], source="features")
    from open_videoprism.ranks import is_dist
    from open_videoprism.runlock import acquire, release
    from open_videoprism.train.distributed import barrier, cleanup, init_distributed

    # Under torchrun every rank extracts its share of the manifest (eval/features.py).
    started = not is_dist()
    info = init_distributed(device or "auto")
    lock = None
    try:
        model = _frozen_model(checkpoint, str(info.device), dtype)
        if info.is_main:  # one job per output folder; its ranks share it
            lock = acquire(out)
        barrier()
        return extract(model, str(manifest), out, cfg, checkpoint=str(checkpoint), overwrite=overwrite,
                       progress=progress)
    finally:
        if lock is not None:
            release(lock)
        if started:  # leave a caller's own process group alone
            cleanup()


__all__ = ["evaluate", "extract_features", "pretrain"]
