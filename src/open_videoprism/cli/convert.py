"""``videoprism convert``: any supported checkpoint -> our safetensors file."""

from __future__ import annotations

import argparse
from pathlib import Path

from open_videoprism.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an official .npz or a Hugging Face folder to an open_videoprism .safetensors file",
        description=(
            "Convert a checkpoint to the open_videoprism format: one .safetensors file that stores the "
            "weights and the model config (inferred from the parameter shapes for official .npz files, "
            "which carry none). SRC may be an official JAX .npz (e.g. flax_lvt_base_f16r288_repeated.npz), "
            "a Hugging Face VideoPrism model folder, or one of our files. Nothing is downloaded."
        ),
    )
    p.add_argument("src", help="official .npz, HF model folder, or .safetensors")
    p.add_argument("dst", help="output .safetensors path (written atomically)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.checkpoints import convert, describe

    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        raise UserError(f"{dst}: the output must end in .safetensors")
    path, cfg = convert(args.src, dst)
    summary = ", ".join(f"{k}={v}" for k, v in describe(cfg).items())
    print(f"wrote {path} ({summary})")
    return 0
