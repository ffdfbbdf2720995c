"""``videoprism download``: fill the Hugging Face cache for a released checkpoint (for offline use)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="fetch a released checkpoint (and its tokenizer) into the Hugging Face cache",
        description=(
            "Download the official .npz (or the HF-format weights) and the tokenizer of a released VideoPrism "
            "checkpoint into the Hugging Face cache (HF_HOME), so later runs work offline (HF_HUB_OFFLINE=1). "
            "Names: google/videoprism-{base-f16r288,large-f8r288,lvt-base-f16r288,lvt-large-f8r288}, the registry "
            "names (videoprism_lvt_v1_base, ...), or hf-hub:ORG/NAME; NAME@REVISION pins a revision."
        ),
    )
    p.add_argument("name", help="hub id or registry name, e.g. google/videoprism-lvt-base-f16r288")
    p.add_argument("--revision", help="branch, tag, refs/pr/N or commit hash")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism import hub

    files = hub.resolve(args.name, args.revision)
    print(f"checkpoint: {files.checkpoint}")
    if files.tokenizer:
        print(f"tokenizer: {files.tokenizer}")
    return 0
