"""``videoprism eval TASK``: evaluate a frozen checkpoint on one task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from open_videoprism.cli.features import add_extraction_args, extraction_overrides, set_threads

_TASK_HELP = {
    "probe": "attentive (MAP) probe on frozen tokens, VideoGLUE recipe: top-1/top-5",
    "linear": "linear probe on mean-pooled tokens: top-1/top-5",
    "retrieval": "zero-shot text<->video retrieval (video-text models): R@1/5/10, median rank",
    "zeroshot": "zero-shot classification from class names and prompt templates: top-1/top-5",
    "localize": "temporal action localization on long videos: mAP at tIoU 0.5:0.95",
    "caption": "Perceiver resampler + small decoder trained on captions: BLEU-4, CIDEr",
    "qa": "Perceiver resampler + small decoder trained on question/answer pairs: accuracy",
}


def register(sub: argparse._SubParsersAction) -> None:
    tasks = "\n".join(f"  {k:<10} {v}" for k, v in _TASK_HELP.items())
    e = sub.add_parser(
        "eval",
        help="evaluate a frozen checkpoint: probe, linear, retrieval, zeroshot, localize, caption, qa",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Evaluate a frozen VideoPrism checkpoint on one task. Writes OUT/metrics.json and OUT/metrics.md\n"
            "(each metric next to its chance level) and PNG figures (confusion matrix, retrieval examples,\n"
            "training curves). Features are cached under --cache (default OUT/features) and reused by\n"
            "every task that needs the same ones.\n\ntasks:\n" + tasks + "\n\n"
            "--data is a `videoprism synth` folder: probe_train.jsonl trains the heads, test.jsonl is\n"
            "scored, long.jsonl serves localize, classes.json and tokenizer.model serve zero-shot.\n\n"
            "Every setting is a key of the eval config (open_videoprism.eval.config.EvalConfig): give\n"
            "KEY=VALUE overrides (probe.weight_decay=0.01) or --config RECIPE (its eval: section); the\n"
            "flags below are shorthands. From Python: open_videoprism.evaluate(task, checkpoint, ...)."
        ),
        epilog=(
            "examples:\n"
            "  videoprism eval probe --checkpoint run/final.safetensors --data synth --out eval/probe\n"
            "  videoprism eval probe --label-field motion_label --checkpoint ck.safetensors --data synth --out eval/motion\n"
            "  videoprism eval linear --checkpoint ck.safetensors --data synth --out eval/lin probe.weight_decay=0.01\n"
            "  videoprism eval probe --checkpoint ck.safetensors --train big.jsonl --test test.jsonl --out eval/big \\\n"
            "      probe.order=shards probe.shard_window=4   # stream the memory-mapped token shards window by window\n"
            "  videoprism eval retrieval --checkpoint lvt.safetensors --data synth --tokenizer synth/tokenizer.model --out eval/ret"
        ),
    )
    e.add_argument("task", choices=list(_TASK_HELP), metavar="TASK", help=", ".join(_TASK_HELP))
    e.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings of the eval config, e.g. probe.weight_decay=0.01 probe.kind=linear caption.dim=256")
    e.add_argument("--config", help="a recipe whose eval: section gives the settings (a path or a shipped recipe name)")
    e.add_argument("--checkpoint", required=True, help="official .npz, our .safetensors, HF folder or run folder")
    e.add_argument("--data", help="a `videoprism synth` folder with the standard splits")
    e.add_argument("--out", required=True, help="output folder for metrics.json, metrics.md and figures")
    e.add_argument("--train", help="training manifest for heads (default: DATA/probe_train.jsonl)")
    e.add_argument("--test", help="test manifest (default: DATA/test.jsonl; DATA/long.jsonl for localize)")
    e.add_argument("--cache", help="feature cache folder (default: OUT/features)")
    e.add_argument("--label-field",
                   help="manifest field with the class (synthetic: 'label' appearance, 'motion_label' motion)")
    e.add_argument("--tokenizer", help="SentencePiece .model of the text encoder (default: DATA/tokenizer.model)")
    e.add_argument("--template", action="append", default=None,
                   help="zero-shot prompt template with {} for the class name (repeatable; default: classes.json's + CLIP-style)")
    e.add_argument("--snippets", type=int, help="localize: snippets (clips) per long video (default 16)")
    e.add_argument("--epochs", type=int, help="epochs of the head the task trains (probe.epochs, localize.epochs or caption.epochs)")
    e.add_argument("--lr", type=float, help="peak learning rate of the head the task trains")
    e.add_argument("--seed", type=int, help="seed of every head's initialisation and shuffling (default 0)")
    e.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    add_extraction_args(e)
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.api import evaluate

    set_threads(args)
    overrides = extraction_overrides(args, "features.", snippets=args.snippets, templates=args.template,
                           plots=False if args.no_plots else None)
    result = evaluate(
        args.task, args.checkpoint, out=args.out, data=args.data, train=args.train, test=args.test, cache=args.cache,
        tokenizer=args.tokenizer, config=args.config, overrides=overrides, label_field=args.label_field,
        seed=args.seed, epochs=args.epochs, lr=args.lr, device=args.device, dtype=args.dtype,
    )
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in result["metrics"].items()}
    print(json.dumps({"task": args.task, "metrics": shown, "chance": {k: round(v, 2) for k, v in result["chance"].items()}}))
    print(f"wrote {Path(args.out) / 'metrics.json'} and metrics.md")
    return 0
