"""``videoprism features`` and ``videoprism eval TASK``: frozen-backbone evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_TASK_HELP = {
    "probe": "attentive (MAP) probe on frozen tokens, VideoGLUE recipe: top-1/top-5",
    "linear": "linear probe on mean-pooled tokens: top-1/top-5",
    "retrieval": "zero-shot text<->video retrieval (video-text models): R@1/5/10, median rank",
    "zeroshot": "zero-shot classification from class names and prompt templates: top-1/top-5",
    "localize": "temporal action localization on long videos: mAP at tIoU 0.5:0.95",
    "caption": "Perceiver resampler + small decoder trained on captions: BLEU-4, CIDEr",
    "qa": "Perceiver resampler + small decoder trained on question/answer pairs: accuracy",
}


def _add_extraction_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("clip sampling and extraction (default: the config's features section)")
    g.add_argument("--frames", type=int, help="frames per clip (default: the model's table, 16 base)")
    g.add_argument("--image-size", type=int, help="frame side, divisible by 18 (default: the model's, 288)")
    g.add_argument("--num-clips", type=int, help="clips per video; >1 samples evenly spaced clips (multi-view; default 1)")
    g.add_argument("--stride", type=int, help="frame stride inside a clip when --num-clips > 1 (default 2)")
    g.add_argument("--batch-size", type=int, help="videos per forward pass (default 8)")
    g.add_argument("--shard-size", type=int, help="videos per shard = resume granularity (default 256)")
    g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


_EXTRACTION_KEYS = {"frames": "num_frames", "image_size": "image_size", "num_clips": "num_clips", "stride": "frame_stride",
                    "batch_size": "batch_size", "shard_size": "shard_size"}


def _overrides(args: argparse.Namespace, prefix: str, **more: object) -> list[str]:
    """The flags given (not None) as ``key=value`` overrides of the config, after the positional ones."""
    pairs = {f"{prefix}{key}": getattr(args, flag) for flag, key in _EXTRACTION_KEYS.items()}
    pairs.update(more)
    return [*args.overrides, *(f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None)]


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "features",
        help="extract cached frozen features of a manifest (resumable)",
        description=(
            "Encode every video of MANIFEST with a frozen VideoPrism and write safetensors shards to --out: "
            "per video 'mean_tokens' [K, D], 'embedding' [K, D] (video-text models), 'tokens' [K, T*N, D] "
            "(unless --no-tokens; float16) and a thumbnail, K = --num-clips (--format npz for numpy shards). Shards and progress.json are "
            "written atomically; rerunning the same command resumes an interrupted run, and a folder made "
            "with another checkpoint or settings is refused (use --overwrite)."
        ),
    )
    f.add_argument("manifest", metavar="MANIFEST", help="a .jsonl/.csv manifest (paths relative to its folder)")
    f.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings of open_videoprism.eval.FeatureConfig, e.g. token_dtype=bfloat16")
    f.add_argument("--checkpoint", required=True, help="official .npz, our .safetensors, HF folder or run folder")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--no-tokens", action="store_true", help="store only pooled features (much smaller)")
    f.add_argument("--overwrite", action="store_true", help="replace a folder made with other settings")
    f.add_argument("--format", choices=("safetensors", "npz"),
                   help="shard file format (npz: numpy arrays, readable without safetensors)")
    _add_extraction_args(f)
    f.set_defaults(func=run_features)

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
    _add_extraction_args(e)
    e.set_defaults(func=run_eval)


def run_features(args: argparse.Namespace) -> int:
    from open_videoprism.api import extract_features
    from open_videoprism.eval.features import load_features

    _threads(args)
    store_tokens = False if args.no_tokens else None
    out = extract_features(
        args.checkpoint, args.manifest, args.out, overwrite=args.overwrite, device=args.device,
        overrides=_overrides(args, "", store_tokens=store_tokens, shard_format=args.format),
    )
    fs = load_features(out)
    shapes = {k: list(v.shape) for k, v in (("mean_tokens", fs.mean_tokens), ("embedding", fs.embedding), ("tokens", fs.tokens)) if v is not None}
    print(f"wrote {out}: {len(fs)} videos, " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from open_videoprism.api import evaluate

    _threads(args)
    overrides = _overrides(args, "features.", snippets=args.snippets, templates=args.template,
                           plots=False if args.no_plots else None)
    result = evaluate(
        args.task, args.checkpoint, out=args.out, data=args.data, train=args.train, test=args.test, cache=args.cache,
        tokenizer=args.tokenizer, config=args.config, overrides=overrides, label_field=args.label_field,
        seed=args.seed, epochs=args.epochs, lr=args.lr, device=args.device,
    )
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in result["metrics"].items()}
    print(json.dumps({"task": args.task, "metrics": shown, "chance": {k: round(v, 2) for k, v in result["chance"].items()}}))
    print(f"wrote {Path(args.out) / 'metrics.json'} and metrics.md")
    return 0
