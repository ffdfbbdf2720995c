"""``videoprism pretrain``: run a pretraining recipe (stage 1 contrastive, stage 2 distillation)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, cast

from open_videoprism.atomic import write_json
from open_videoprism.errors import ConfigError, UserError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  videoprism synth synth/                      # the synthetic benchmark + tokenizer.model
  videoprism pretrain --config configs/stage1-tiny.yaml --data synth/pretrain.jsonl --out runs/s1 \\
      --eval-data synth/test.jsonl
  videoprism pretrain --out runs/s1 --resume        # continue after a crash (config from the run)
  videoprism pretrain --config configs/stage1-tiny.yaml --data synth/pretrain.jsonl --out runs/lr \\
      optim.lr=3e-4 steps=500 precision=bf16
  videoprism pretrain --config configs/stage2-tiny.yaml --data synth/pretrain.jsonl --out runs/s2 \\
      --teacher runs/s1
  torchrun --nproc-per-node 2 -m open_videoprism.cli.main pretrain ...   # DDP (gloo on CPU, nccl on GPU)

The run folder holds config.yaml (resolved), metrics.jsonl (one JSON per logged step),
checkpoints/step_XXXXXXX/ (the last keep_last) and final/model.safetensors, which
ovp.load(RUN_DIR) reads. Recipes and every key: docs/training.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain VideoPrism (stage 1 video-text contrastive, stage 2 masked distillation)",
        description=(
            "Train an objective with the settings of a YAML recipe. Overrides are key=value pairs on "
            "the recipe's keys (e.g. optim.lr=3e-4 objective.token_drop_ratio=0.5); an unknown key "
            "or a bad value stops with one line naming it. Checkpoints are written atomically every "
            "ckpt_every steps; --resume continues from the last intact one, reproducing the "
            "uninterrupted run exactly on CPU."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4 steps=500")
    p.add_argument("--config", help="YAML recipe: a file, or a shipped recipe by name (stage1-tiny, stage2-tiny, b16-stage1, "
                        "b16-stage2); with --resume the run's config.yaml by default")
    p.add_argument("--data", help="training manifest (.jsonl/.csv), WebDataset shards, or 'random' (synthetic tensors, for speed tests)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, help="total optimiser steps (overrides the recipe's steps)")
    p.add_argument("--resume", action="store_true", help="continue from the last intact checkpoint in --out")
    p.add_argument("--teacher", help="stage 2: the teacher, a run folder or checkpoint (passed to the objective)")
    p.add_argument("--tokenizer", help="SentencePiece .model for captions (default: tokenizer.model next to --data)")
    p.add_argument("--eval-data", help="after training, zero-shot text<->video retrieval on this held-out manifest")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs and metrics.jsonl only)")
    p.set_defaults(func=run)


def _default_tokenizer(data: str | None) -> Path | None:
    if not data or data == "random":
        return None
    p = Path(data)
    return (p if p.is_dir() else p.parent) / "tokenizer.model"


def _load_config(args: argparse.Namespace) -> Any:
    from open_videoprism.train.config import config_from_dict, load_config, read_yaml
    from open_videoprism.train.engine import CONFIG_FILE

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    if args.config:
        return load_config(args.config, overrides)
    saved = Path(args.out) / CONFIG_FILE
    if args.resume and saved.is_file():
        from open_videoprism.train.config import apply_overrides

        return config_from_dict(apply_overrides(read_yaml(saved), overrides), str(saved))
    raise ConfigError("--config is required (except with --resume on a run that has config.yaml)")


def evaluate_retrieval(model: Any, manifest: str, cfg: Any, tokenizer: Any, batch_size: int = 32) -> dict[str, float]:
    """Zero-shot text<->video retrieval of every clip of ``manifest`` against its first caption.

    Clips are sampled uniformly without augmentation (the evaluation protocol);
    metrics are ``open_videoprism.eval.metrics.retrieval_metrics`` (percent).
    """
    import torch

    from open_videoprism.data import VideoDataConfig, build_loader
    from open_videoprism.eval.metrics import retrieval_metrics
    from open_videoprism.objectives.contrastive import embed_pairs

    vcfg = VideoDataConfig(
        num_frames=cfg.data.num_frames,
        image_size=cfg.data.image_size,
        sampling="uniform",
        random_resized_crop=False,
        max_text_length=cfg.data.max_text_length,
    )
    loader = build_loader(manifest, vcfg, batch_size=batch_size, training=False, tokenizer=tokenizer)
    video, text = embed_pairs(model, loader)
    out = retrieval_metrics(text @ video.T, torch.arange(len(text)))
    out["num_clips"] = float(len(text))
    out["chance_R@1"] = 100.0 / len(text)
    return out


def run(args: argparse.Namespace) -> int:
    from open_videoprism.train.data import build_stream_factory
    from open_videoprism.train.distributed import cleanup, init_distributed, unwrap
    from open_videoprism.train.engine import FINAL_DIR, Trainer, build_objective

    cfg = _load_config(args)
    data = args.data
    if data is None and args.resume:
        meta = Path(args.out) / "data_source.json"
        data = json.loads(meta.read_text())["data"] if meta.is_file() else None
    if data is None and not cfg.data.datasets:
        raise ConfigError("--data is required (a manifest, WebDataset shards, or 'random') unless the config lists data.datasets")
    if data not in (None, "random") and not Path(data).exists() and not any(c in str(data) for c in "{*"):
        raise UserError(f"{data}: no such manifest, shard or folder (generate one with `videoprism synth DIR`)")

    from open_videoprism.runlock import acquire as acquire_run_lock
    from open_videoprism.runlock import release as release_run_lock

    info = init_distributed(cfg.device)
    lock = None
    try:
        objective = build_objective(cfg, teacher=args.teacher)
        model = cast(Any, unwrap(objective)).export_model()
        tokenizer = None
        tok_path = Path(args.tokenizer) if args.tokenizer else _default_tokenizer(data)
        if tok_path is not None and tok_path.is_file():
            from open_videoprism.tokenizer import Tokenizer

            tokenizer = Tokenizer(tok_path)
            if model.text is not None and tokenizer.vocab_size > model.text.cfg.vocab_size:
                raise ConfigError(
                    f"{tok_path}: {tokenizer.vocab_size} pieces but model {cfg.model.name or cfg.model.init} "
                    f"has a text vocabulary of {model.text.cfg.vocab_size}; use a matching tokenizer or model"
                )
        elif args.tokenizer:
            raise UserError(f"{args.tokenizer}: tokenizer file not found")
        elif cfg.objective_name == "contrastive" and data != "random":
            raise UserError(
                f"the contrastive objective needs captions tokenized: no {tok_path}; pass --tokenizer PATH "
                "(videoprism synth writes tokenizer.model next to its manifests)"
            )
        make_stream = build_stream_factory(
            cfg, data, tokenizer=tokenizer, rank=info.rank, world_size=info.world_size,
            collate_fn=getattr(unwrap(objective), "collate_fn", None),
        )
        out = Path(args.out)
        if info.is_main:  # held until exit: a second run into --out fails here, before writing anything
            lock = acquire_run_lock(out)
        if info.is_main and data is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "data_source.json", {"data": str(data), "tokenizer": str(tok_path) if tokenizer else None})
        trainer = Trainer(cfg, objective, make_stream, out, info=info, progress=not args.no_progress)
        result = trainer.fit(resume=args.resume)
        if info.is_main:
            last = result.losses.get(result.step)
            first = result.losses.get(min(result.losses)) if result.losses else None
            print(f"trained to step {result.step} in {result.seconds:.0f}s"
                  + (f"; loss {first:.4f} (step {min(result.losses)}) -> {last:.4f}" if first is not None and last is not None else ""))
            if result.final_path is not None:
                print(f"final encoder checkpoint: {result.final_path}")
        if args.eval_data and info.is_main and result.final_path is not None:
            if tokenizer is None:
                raise UserError("--eval-data needs a tokenizer (--tokenizer PATH)")
            metrics = evaluate_retrieval(model, args.eval_data, cfg, tokenizer)
            write_json(out / FINAL_DIR / "retrieval.json", {"data": args.eval_data, **metrics})
            print(
                f"zero-shot retrieval on {int(metrics['num_clips'])} held-out clips: "
                f"text->video R@1 {metrics['t2v_R@1']:.1f}%, R@5 {metrics['t2v_R@5']:.1f}% "
                f"(chance {metrics['chance_R@1']:.1f}%); video->text R@1 {metrics['v2t_R@1']:.1f}%"
            )
    finally:
        if lock is not None:
            release_run_lock(lock)
        cleanup()
    return 0
