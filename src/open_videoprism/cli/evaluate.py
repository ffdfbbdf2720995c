"""``videoprism features`` and ``videoprism eval TASK``: frozen-backbone evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from open_videoprism.errors import UserError
from open_videoprism.runlock import run_lock

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
    g = p.add_argument_group("clip sampling and extraction")
    g.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model's table, 16 base)")
    g.add_argument("--image-size", type=int, default=None, help="frame side, divisible by 18 (default: the model's, 288)")
    g.add_argument("--num-clips", type=int, default=1, help="clips per video; >1 samples evenly spaced clips (multi-view)")
    g.add_argument("--stride", type=int, default=2, help="frame stride inside a clip when --num-clips > 1")
    g.add_argument("--batch-size", type=int, default=8, help="videos per forward pass")
    g.add_argument("--shard-size", type=int, default=256, help="videos per shard = resume granularity")
    g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


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
    f.add_argument("--checkpoint", required=True, help="official .npz, our .safetensors, HF folder or run folder")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--no-tokens", action="store_true", help="store only pooled features (much smaller)")
    f.add_argument("--overwrite", action="store_true", help="replace a folder made with other settings")
    f.add_argument("--format", choices=("safetensors", "npz"), default="safetensors",
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
            "scored, long.jsonl serves localize, classes.json and tokenizer.model serve zero-shot."
        ),
        epilog=(
            "examples:\n"
            "  videoprism eval probe --checkpoint run/final.safetensors --data synth --out eval/probe\n"
            "  videoprism eval probe --label-field motion_label --checkpoint ck.safetensors --data synth --out eval/motion\n"
            "  videoprism eval retrieval --checkpoint lvt.safetensors --data synth --tokenizer synth/tokenizer.model --out eval/ret"
        ),
    )
    e.add_argument("task", choices=list(_TASK_HELP), metavar="TASK", help=", ".join(_TASK_HELP))
    e.add_argument("--checkpoint", required=True, help="official .npz, our .safetensors, HF folder or run folder")
    e.add_argument("--data", help="a `videoprism synth` folder with the standard splits")
    e.add_argument("--out", required=True, help="output folder for metrics.json, metrics.md and figures")
    e.add_argument("--train", help="training manifest for heads (default: DATA/probe_train.jsonl)")
    e.add_argument("--test", help="test manifest (default: DATA/test.jsonl; DATA/long.jsonl for localize)")
    e.add_argument("--cache", help="feature cache folder (default: OUT/features)")
    e.add_argument("--label-field", default="label",
                   help="manifest field with the class (synthetic: 'label' appearance, 'motion_label' motion)")
    e.add_argument("--tokenizer", help="SentencePiece .model of the text encoder (default: DATA/tokenizer.model)")
    e.add_argument("--template", action="append", default=None,
                   help="zero-shot prompt template with {} for the class name (repeatable; default: classes.json's + CLIP-style)")
    e.add_argument("--snippets", type=int, default=16, help="localize: snippets (clips) per long video")
    e.add_argument("--epochs", type=int, default=None, help="epochs of the trained head (default: per task)")
    e.add_argument("--lr", type=float, default=None, help="peak learning rate of the head (default: per task)")
    e.add_argument("--seed", type=int, default=0, help="seed of head initialisation and shuffling")
    e.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    _add_extraction_args(e)
    e.set_defaults(func=run_eval)


def _setup(args: argparse.Namespace):
    import open_videoprism as ovp

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from open_videoprism.hub import is_hub_name

    if not is_hub_name(args.checkpoint) and not Path(args.checkpoint).exists():
        raise UserError(f"{args.checkpoint}: checkpoint not found")
    model = ovp.load(args.checkpoint, device=device)
    model.requires_grad_(False)
    return model


def _feature_config(args: argparse.Namespace, store_tokens: bool = True):
    from open_videoprism.eval.features import FeatureConfig

    for name in ("num_clips", "batch_size", "shard_size", "frames", "image_size", "stride"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    return FeatureConfig(
        num_frames=args.frames, image_size=args.image_size, num_clips=args.num_clips, frame_stride=args.stride,
        sampling="multiclip" if args.num_clips > 1 else "uniform", store_tokens=store_tokens,
        batch_size=args.batch_size, shard_size=args.shard_size, label_field=getattr(args, "label_field", "label"),
        shard_format=getattr(args, "format", "safetensors"),
    )


def run_features(args: argparse.Namespace) -> int:
    from open_videoprism.eval.features import extract_features, load_features

    if not Path(args.manifest).is_file():
        raise UserError(f"{args.manifest}: manifest not found")
    model = _setup(args)
    with run_lock(args.out):  # one writer per output folder
        out = extract_features(
            model, args.manifest, args.out, _feature_config(args, store_tokens=not args.no_tokens),
            checkpoint=args.checkpoint, overwrite=args.overwrite,
        )
    fs = load_features(out)
    shapes = {k: list(v.shape) for k, v in (("mean_tokens", fs.mean_tokens), ("embedding", fs.embedding), ("tokens", fs.tokens)) if v is not None}
    print(f"wrote {out}: {len(fs)} videos, " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from open_videoprism.eval.tasks import EvalSettings, run_task

    if args.data and not Path(args.data).is_dir():
        raise UserError(f"{args.data}: --data must be a folder (a `videoprism synth` output)")
    if args.snippets < 2:
        raise UserError("--snippets must be at least 2")
    model = _setup(args)
    settings = EvalSettings(
        checkpoint=args.checkpoint, out_dir=Path(args.out), data_dir=Path(args.data) if args.data else None,
        train_manifest=args.train, test_manifest=args.test, cache_dir=Path(args.cache) if args.cache else None,
        tokenizer=args.tokenizer, label_field=args.label_field, features=_feature_config(args),
        snippets=args.snippets, epochs=args.epochs, lr=args.lr, seed=args.seed, plots=not args.no_plots,
        templates=tuple(args.template) if args.template else None,
    )
    with run_lock(args.out):  # one writer per output folder
        result = run_task(args.task, model, settings)
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in result["metrics"].items()}
    print(json.dumps({"task": args.task, "metrics": shown, "chance": {k: round(v, 2) for k, v in result["chance"].items()}}))
    print(f"wrote {Path(args.out) / 'metrics.json'} and metrics.md")
    return 0
