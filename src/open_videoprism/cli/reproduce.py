"""``videoprism reproduce``: the whole recipe in miniature, over seeds, with the paper's claims measured.

Generates the synthetic appearance/motion benchmark (pretraining text like the paper's corpus:
a few clean captions, much noisy web-like text), pretrains stage 1 (video-text contrastive) and
stage 2 (masked video modelling with global-local distillation and token shuffling), the paper's
stage-2 ablations, the one-stage baseline and LiT on the frozen encoders, evaluates every model
frozen (attentive probes on the appearance and motion tasks, text retrieval and zero-shot
classification for the video-text models), for each seed, and writes OUT/results.json and
OUT/report.md with the paper's claims, tables and plots.

Every step writes into its own folder and is skipped when it already finished with the same
settings, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from open_videoprism.reproduce.runs import ABLATIONS, DEFAULT_ABLATIONS, PRESETS, REGIMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="both pretraining stages, ablations, baselines and frozen evaluation on generated data, over seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets: " + "; ".join(
            f"{k}: {p.clips} clips ({p.splits_text()} pretrain / probe / test), "
            f"model {p.model}, stage 1 {p.steps1} steps, stage 2 {p.steps2} steps, {p.seeds} seed(s)"
            for k, p in PRESETS.items()),
    )
    p.add_argument("--out", default="runs/reproduce", help="output folder (default: runs/reproduce)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="size of the study: smoke (under a minute, CI), quick (default), full")
    p.add_argument("--seed", type=int, default=0, help="first seed (data, initialisation, probes); default 0")
    p.add_argument("--seeds", type=int, help="how many seeds, from --seed on (default: the preset's)")
    p.add_argument("--ablations", default=",".join(DEFAULT_ABLATIONS),
                   help=f"stage-2 ablations besides the full model, comma-separated from {', '.join(ABLATIONS)}; "
                        f"'all' or 'none' (default: {','.join(DEFAULT_ABLATIONS)})")
    p.add_argument("--regimes", default=",".join(REGIMES),
                   help="pretraining text regimes: 'mixed' (paper-like, required) and 'clean' (every caption "
                        "states the motion: stage 1 and stage 2 only); default: mixed,clean")
    p.add_argument("--clips", type=int, help="synthetic clips (overrides the preset)")
    p.add_argument("--steps1", type=int, help="stage-1 steps (overrides the preset; stage 2 runs 1.5x)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the tiny models gain nothing from more, and lose much on a busy machine)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes running independent steps at once (default 2: one per core of a small machine)")
    p.add_argument("--force", action="store_true", help="redo every step instead of skipping finished ones")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.reproduce import ReproduceConfig, reproduce

    cfg = ReproduceConfig(out=args.out, preset=args.preset, seed=args.seed, seeds=args.seeds, ablations=args.ablations,
                          regimes=tuple(r.strip() for r in args.regimes.split(",") if r.strip()), clips=args.clips,
                          steps1=args.steps1, threads=args.threads, workers=args.workers, force=args.force, progress=sys.stderr.isatty())
    path = reproduce(cfg)
    print(f"wrote {path} and {path.parent / 'results.json'}")
    return 0
