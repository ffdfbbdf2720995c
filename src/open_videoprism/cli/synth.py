"""``videoprism synth``: generate the synthetic appearance/motion benchmark."""

from __future__ import annotations

import argparse
import os
import sys
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate the synthetic appearance/motion benchmark",
        description=(
            "Render the synthetic benchmark into OUT_DIR: mp4 clips of a coloured shape over a grey "
            "texture, with an appearance task (shape x colour, solvable from one frame) and a motion task "
            "(12 classes in time-reversed pairs, solvable only from temporal order). Writes "
            "pretrain.jsonl, probe_train.jsonl, test.jsonl (1/2, 1/4, 1/4 of --clips), long.jsonl (long "
            "videos with action segments), qa.jsonl, classes.json and a SentencePiece tokenizer.model "
            "trained on the pretrain captions. Deterministic from --seed; re-running resumes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", help="folder to write into (created)")
    p.add_argument("--out", dest="out_flag", metavar="OUT_DIR", help="same as the positional OUT_DIR")
    p.add_argument("--clips", type=int, default=200, help="short clips over the three splits")
    p.add_argument("--seed", type=int, default=0, help="everything derives from it")
    p.add_argument("--long", type=int, default=None, dest="long_videos",
                   help="long videos for localization (default: clips/25, at least 2)")
    p.add_argument("--size", type=int, default=72, help="frame side in pixels (72 or 144; even)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written videos")
    p.add_argument("--crf", type=int, default=18, help="x264 quality (lower: better, bigger)")
    p.add_argument("--vocab-size", type=int, default=200, help="SentencePiece pieces (at most)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="re-render videos that already exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.data.synthetic import SynthConfig, generate
    from open_videoprism.errors import ConfigError

    out_dir = args.out_flag or args.out_dir
    if not out_dir or (args.out_flag and args.out_dir and args.out_flag != args.out_dir):
        raise ConfigError("give the output folder once: `videoprism synth OUT_DIR` (or --out OUT_DIR)")
    args.out_dir = out_dir
    if args.clips < 3:
        raise ConfigError("--clips must be at least 3 (one per split)")
    try:
        cfg = SynthConfig(num_frames=args.frames, size=args.size, fps=args.fps, crf=args.crf)
    except ValueError as exc:
        raise ConfigError(f"--size/--frames: {exc}") from None
    t = time.perf_counter()
    summary = generate(args.out_dir, args.clips, seed=args.seed, long_videos=args.long_videos, cfg=cfg,
                       workers=args.workers, overwrite=args.overwrite, vocab_size=args.vocab_size,
                       progress=sys.stderr.isatty())
    sizes = ", ".join(f"{k} {v}" for k, v in summary["sizes"].items())
    print(f"wrote {args.out_dir}: {sizes} videos in {time.perf_counter() - t:.1f} s; tokenizer {summary['tokenizer']}")
    return 0
