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
    p.set_defaults(func=_synth)

    c = subparsers.add_parser(
        "check-data",
        help="decode every sample of a manifest or shard set and report bad ones",
        description=(
            "Decode every entry of MANIFEST (.jsonl/.csv, or WebDataset shards) the way training would "
            "(same sampling and transform, plus each video's last frame to catch truncation), and report the good count and each bad entry with its reason "
            "(missing, empty, not_video, no_video_stream, corrupt, truncated, no_caption, duplicate, bad_time_range). "
            "Exits 1 when any entry is bad."
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
    c.add_argument("--captions", choices=("auto", "required", "ignore"), default="auto",
                   help="report entries without text as bad (no_caption): always (required), when any other "
                        "entry has text (auto: a caption set with holes), or never (ignore)")
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
    s.add_argument("--allow-outside", action="store_true",
                   help="also pack entries whose file lies outside the manifest's folder (skipped and counted otherwise)")
    s.set_defaults(func=_shards)


def _synth(args: argparse.Namespace) -> int:
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


def _check(args: argparse.Namespace) -> int:
    from collections import Counter

    from open_videoprism.data.config import VideoDataConfig
    from open_videoprism.data.dataset import ClipSampler, sample_rng
    from open_videoprism.data.decode import DecodeError
    from open_videoprism.data.manifest import Manifest, ManifestEntry
    from open_videoprism.data.webdataset_io import expand_shards, is_shard_source, iter_tar_samples, shard_entry
    from open_videoprism.errors import DataError
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
                    name = f"{shard}:{key}.{media[0] if media else '?'}"
                    try:
                        entry, _ = shard_entry(name, json.loads(parts["json"]) if "json" in parts else {})
                    except (DataError, ValueError, TypeError, OverflowError, RecursionError) as exc:
                        yield ManifestEntry(path=name), None, f"bad .json member: {exc}"
                        continue
                    yield entry, (parts[media[0]] if media else b""), None
        else:
            for e in Manifest.read(args.manifest):
                yield e, None, None

    def report(path: str, reason: str, detail: str) -> None:
        reasons[reason] += 1
        bad.append({"path": path, "reason": reason, "detail": detail[:300]})

    seen: dict[tuple, int] = {}
    uncaptioned: list[str] = []
    any_caption = False
    for i, (entry, data, problem) in enumerate(progress_bar(items(), desc="check", unit="video", enabled=not args.json)):
        if args.limit is not None and i >= args.limit:
            break
        if problem is not None:
            report(entry.path, "bad_metadata", problem)
            continue
        key = (os.path.normpath(entry.path), entry.start, entry.end)
        if key in seen:  # the same clip twice: double weight in training, a leak between splits
            report(entry.path, "duplicate", f"same path and times as entry {seen[key] + 1}")
            continue
        seen[key] = i
        any_caption |= bool(entry.captions)
        try:
            sampler.load(entry, sample_rng(0, 0, i), data=data, check_tail=not args.no_tail_check)
        except DecodeError as exc:
            report(entry.path, exc.reason, exc.detail)
            continue
        if entry.captions:
            ok += 1
        else:
            uncaptioned.append(entry.path)
    if args.captions == "required" or (args.captions == "auto" and any_caption):
        for path in uncaptioned:
            report(path, "no_caption", "no 'caption' or 'captions' text (video-text training skips it)")
    else:
        ok += len(uncaptioned)
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
    from open_videoprism.runlock import run_lock

    with run_lock(args.out_dir):
        res = write_shards(args.manifest, args.out_dir, samples_per_shard=args.samples_per_shard,
                           progress=sys.stderr.isatty(), allow_outside=args.allow_outside)
    for sk in res["skipped"]:
        print(f"skipped {sk['path']}: {sk['reason']}")
    outside = sum(sk["reason"] == "outside_manifest_folder" for sk in res["skipped"])
    if outside:
        print(f"warning: {outside} entries lie outside the manifest's folder and were not packed "
              "(pass --allow-outside to pack them)", file=sys.stderr)
    print(f"{res['samples']} samples in {res['shards']} shards ({res['written']} written now): {res['pattern']}")
    return 0
