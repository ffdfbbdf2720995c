"""``videoprism pretrain``: run a pretraining recipe (stage 1 contrastive, stage 2 distillation)."""

from __future__ import annotations

import argparse
import os

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
ovp.load(RUN_DIR) reads. Recipes and every key: docs/training.md. The same from Python:
open_videoprism.pretrain(config, out=..., data=..., overrides=[...]).
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
    p.add_argument("--eval-data", help="after training, zero-shot text<->video retrieval on this held-out manifest "
                        "(the `videoprism eval retrieval` protocol; results in RUN/final/retrieval/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs and metrics.jsonl only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.api import pretrain

    overrides = [*args.overrides, *([f"steps={args.steps}"] if args.steps is not None else [])]
    result = pretrain(
        args.config, out=args.out, data=args.data, overrides=overrides, teacher=args.teacher,
        tokenizer=args.tokenizer, resume=args.resume, eval_data=args.eval_data, progress=not args.no_progress,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    line = f"trained to step {result.step} in {result.seconds:.0f}s"
    if result.losses:
        first = min(result.losses)
        line += f"; loss {result.losses[first]:.4f} (step {first}) -> {result.losses[max(result.losses)]:.4f}"
    print(line)
    if result.final_path is not None:
        print(f"final encoder checkpoint: {result.final_path}")
    if "retrieval" in result.eval:
        m, chance = result.eval["retrieval"]["metrics"], result.eval["retrieval"]["chance"]
        print(f"zero-shot retrieval on {m['num_videos']} held-out clips ({m['num_captions']} captions): "
              f"text->video R@1 {m['t2v_R@1']:.1f}%, R@5 {m['t2v_R@5']:.1f}% (chance {chance['t2v_R@1']:.1f}%); "
              f"video->text R@1 {m['v2t_R@1']:.1f}%")
    return 0
