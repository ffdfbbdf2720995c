"""``videoprism synth`` / ``check-data`` / ``shards``: make, check and pack video datasets."""

from __future__ import annotations

import argparse
import json
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
    p.set_defaults(func=_synth)

    c = subparsers.add_parser(
        "check-data",
        help="decode every sample of a manifest or shard set and report bad ones",
        description=(
            "Decode every entry of MANIFEST (.jsonl/.csv, or WebDataset shards) the way training would "
            "(same sampling and transform, plus each video's last frame to catch truncation), and report the good count and each bad entry with its reason "
            "(missing, empty, not_video, no_video_stream, corrupt, truncated). Exits 1 when any entry is bad."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    c.add_argument("manifest", metavar="MANIFEST",
                   help="a .jsonl/.csv manifest, or WebDataset shards (a .tar, shard-{000000..000009}.tar, or a folder)")
    c.add_argument("--frames", type=int, default=16, help="frames per clip")
    c.add_argument("--size", type=int, default=288, help="output frame side")
    c.add_argument("--stride", type=int, default=2, help="frame stride of training clips")
    c.add_argument("--sampling", default="random", choices=("random", "uniform", "multiclip"),
                   help="frame sampling: random clip (training), uniform (official eval), multiclip")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    c.add_argument("--limit", type=int, default=None, help="check only the first N entries")
    c.add_argument("--no-tail-check", action="store_true",
                   help="do not also decode each video's last frame (faster; misses truncation outside the sampled clip)")
    c.set_defaults(func=_check)

    s = subparsers.add_parser(
        "shards",
        help="pack a manifest's videos into WebDataset tar shards",
        description=(
            "Write the samples of MANIFEST into OUT_DIR/shard-NNNNNN.tar (WebDataset layout: "
            "<key>.mp4 + <key>.json with captions, labels and times). Complete shards are kept on re-runs; "
            "missing or empty videos are skipped and listed."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("manifest", metavar="MANIFEST", help="a .jsonl/.csv manifest")
    s.add_argument("out_dir", metavar="OUT_DIR", help="folder for shard-NNNNNN.tar (created)")
    s.add_argument("--samples-per-shard", type=int, default=256,
                   help="samples per tar; use at least ranks x workers shards in all")
    s.set_defaults(func=_shards)


def _synth(args: argparse.Namespace) -> int:
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


def _check(args: argparse.Namespace) -> int:
    from collections import Counter

    from open_videoprism.data.config import VideoDataConfig
    from open_videoprism.data.dataset import ClipSampler, sample_rng
    from open_videoprism.data.decode import DecodeError
    from open_videoprism.data.manifest import Manifest, ManifestEntry
    from open_videoprism.data.webdataset_io import expand_shards, is_shard_source, iter_tar_samples
    from open_videoprism.progress import progress_bar

    cfg = VideoDataConfig(num_frames=args.frames, image_size=args.size, frame_stride=args.stride,
                          sampling=args.sampling)
    sampler = ClipSampler(cfg, training=True)
    ok, bad = 0, []
    reasons: Counter = Counter()

    def items():
        if is_shard_source(args.manifest):
            for shard in expand_shards(args.manifest):
                for key, parts in iter_tar_samples(shard):
                    media = [e for e in parts if e != "json"]
                    meta = json.loads(parts["json"]) if "json" in parts else {}
                    name = f"{shard}:{key}.{media[0] if media else '?'}"
                    yield ManifestEntry(path=name, captions=meta.get("captions") or [], start=meta.get("start"),
                                        end=meta.get("end")), (parts[media[0]] if media else b"")
        else:
            for e in Manifest.read(args.manifest):
                yield e, None

    for i, (entry, data) in enumerate(progress_bar(items(), desc="check", unit="video", enabled=not args.json)):
        if args.limit is not None and i >= args.limit:
            break
        try:
            sampler.load(entry, sample_rng(0, 0, i), data=data, check_tail=not args.no_tail_check)
            ok += 1
        except DecodeError as exc:
            reasons[exc.reason] += 1
            bad.append({"path": entry.path, "reason": exc.reason, "detail": exc.detail[:300]})
    if args.json:
        print(json.dumps({"ok": ok, "bad": len(bad), "reasons": dict(reasons), "bad_entries": bad}))
    else:
        for b in bad:
            print(f"bad  {b['path']}: {b['reason']} ({b['detail']})")
        summary = ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) or "none"
        print(f"{ok} ok, {len(bad)} bad ({summary})")
    return 1 if bad else 0


def _shards(args: argparse.Namespace) -> int:
    from open_videoprism.data.webdataset_io import write_shards
    from open_videoprism.errors import ConfigError

    if args.samples_per_shard < 1:
        raise ConfigError(f"--samples-per-shard must be positive, got {args.samples_per_shard}")
    res = write_shards(args.manifest, args.out_dir, samples_per_shard=args.samples_per_shard,
                       progress=sys.stderr.isatty())
    for sk in res["skipped"]:
        print(f"skipped {sk['path']}: {sk['reason']}")
    print(f"{res['samples']} samples in {res['shards']} shards ({res['written']} written now): {res['pattern']}")
    return 0
