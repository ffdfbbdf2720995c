"""``videoprism shards``: pack a manifest's videos into WebDataset tar shards."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
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
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
