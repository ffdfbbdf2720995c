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
    p.add_argument("--clips", type=int, default=200,
                   help="short clips over the three splits (with --pretrain-clips: over probe_train and test)")
    p.add_argument("--pretrain-clips", type=int, default=None,
                   help="pretraining clips (default: half of --clips); the rest of --clips is split evenly "
                        "between probe_train and test")
    p.add_argument("--seed", type=int, default=0, help="everything derives from it")
    p.add_argument("--long", type=int, default=None, dest="long_videos",
                   help="long videos for localization (default: clips/25, at least 2)")
    p.add_argument("--size", type=int, default=72, help="frame side in pixels (72 or 144; even)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written videos")
    p.add_argument("--crf", type=int, default=18, help="x264 quality (lower: better, bigger)")
    p.add_argument("--vocab-size", type=int, default=320, help="SentencePiece pieces (at most)")
    t = p.add_argument_group(
        "pretraining text",
        "What the pretraining clips' text says (after the paper's corpus: few clean captions, much noisy web "
        "text). pretrain.jsonl gets the chosen regime, pretrain_clean.jsonl always the clean captions.")
    t.add_argument("--captions", choices=("mixed", "clean"), default="mixed",
                   help="mixed: clean captions for --clean-fraction of the clips, noisy web/ASR-like text for the "
                        "rest; clean: every clip's caption states appearance and motion")
    t.add_argument("--clean-fraction", type=float, default=0.06,
                   help="clips with a clean caption (paper Table 1: 36.1M of 618M clips)")
    t.add_argument("--noisy-motion-rate", type=float, default=0.1,
                   help="noisy texts that state a motion at all (about the share of VLM-captioned noisy clips)")
    t.add_argument("--noisy-wrong-rate", type=float, default=0.3,
                   help="of the motions stated in noisy text, the share that is wrong")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="re-render videos that already exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.data.synthetic import CaptionConfig, SynthConfig, generate
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
    try:
        captions = CaptionConfig(regime=args.captions, clean_fraction=args.clean_fraction,
                                 noisy_motion_rate=args.noisy_motion_rate, noisy_wrong_rate=args.noisy_wrong_rate)
    except ValueError as exc:
        raise ConfigError(f"synth: {exc} (--clean-fraction and the noise rates are fractions)") from None
    t = time.perf_counter()
    from open_videoprism.runlock import run_lock

    with run_lock(args.out_dir):  # two renders into one folder would race on the same files
        summary = generate(args.out_dir, args.clips, seed=args.seed, long_videos=args.long_videos, cfg=cfg,
                           workers=args.workers, overwrite=args.overwrite, vocab_size=args.vocab_size,
                           progress=sys.stderr.isatty(), captions=captions, pretrain_clips=args.pretrain_clips)
    sizes = ", ".join(f"{k} {v}" for k, v in summary["sizes"].items())
    print(f"wrote {args.out_dir}: {sizes} videos in {time.perf_counter() - t:.1f} s; tokenizer {summary['tokenizer']}")
    return 0
