"""``videoprism features``: cached frozen features of a manifest, and the extraction flags ``eval`` shares."""

from __future__ import annotations

import argparse
import json

from open_videoprism.precision import DTYPE_NAMES


def add_extraction_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("clip sampling and extraction (default: the config's features section)")
    g.add_argument("--frames", type=int, help="frames per clip (default: the model's table, 16 base)")
    g.add_argument("--image-size", type=int, help="frame side, divisible by 18 (default: the model's, 288)")
    g.add_argument("--num-clips", type=int, help="clips per video; >1 samples evenly spaced clips (multi-view; default 1)")
    g.add_argument("--stride", type=int, help="frame stride inside a clip when --num-clips > 1 (default 2)")
    g.add_argument("--batch-size", type=int, help="videos per forward pass (default 8)")
    g.add_argument("--shard-size", type=int, help="videos per shard = resume granularity (default 256)")
    g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                   help="model precision; auto (default): bf16 where the device runs it natively, else fp32")


EXTRACTION_KEYS = {"frames": "num_frames", "image_size": "image_size", "num_clips": "num_clips", "stride": "frame_stride",
                   "batch_size": "batch_size", "shard_size": "shard_size"}


def extraction_overrides(args: argparse.Namespace, prefix: str, **more: object) -> list[str]:
    """The flags given (not None) as ``key=value`` overrides of the config, after the positional ones."""
    pairs = {f"{prefix}{key}": getattr(args, flag) for flag, key in EXTRACTION_KEYS.items()}
    pairs.update(more)
    return [*args.overrides, *(f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None)]


def set_threads(args: argparse.Namespace) -> None:
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
    add_extraction_args(f)
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.api import extract_features
    from open_videoprism.eval.features import load_features

    set_threads(args)
    store_tokens = False if args.no_tokens else None
    out = extract_features(
        args.checkpoint, args.manifest, args.out, overwrite=args.overwrite, device=args.device, dtype=args.dtype,
        overrides=extraction_overrides(args, "", store_tokens=store_tokens, shard_format=args.format),
    )
    fs = load_features(out)
    shapes = {k: list(v.shape) for k, v in (("mean_tokens", fs.mean_tokens), ("embedding", fs.embedding), ("tokens", fs.tokens)) if v is not None}
    print(f"wrote {out}: {len(fs)} videos, " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return 0
