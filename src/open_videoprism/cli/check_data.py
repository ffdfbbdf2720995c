"""``videoprism check-data``: decode every sample of a manifest or shard set and report bad ones."""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers: argparse._SubParsersAction) -> None:
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
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from collections import Counter

    from open_videoprism.data.config import VideoDataConfig
    from open_videoprism.data.dataset import ClipSampler, sample_rng
    from open_videoprism.data.decode import DecodeError
    from open_videoprism.data.manifest import Manifest, ManifestEntry
    from open_videoprism.data.webdataset_io import (
        expand_shards,
        is_shard_source,
        iter_tar_samples,
        shard_entry,
    )
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
