"""``videoprism embed``: features of video files with the official demo preprocessing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from open_videoprism.arrays import SUFFIXES, write_arrays
from open_videoprism.errors import UserError
from open_videoprism.precision import DTYPE_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="extract VideoPrism features of video files",
        description=(
            "Encode videos with a VideoPrism checkpoint, preprocessing as the official demo does: "
            "T frames at np.linspace(0, n, T, endpoint=False), resized to the model size (non-square "
            "videos: short side resize, then centre crop), values in [0, 1]. Writes, stacked over the "
            "videos in the order given: 'tokens' [V, T*N, D] (official 'embeddings'), and for video-text "
            "models 'embedding' [V, D] and 'frame_embeddings' [V, T, D]; with --text also "
            "'text_embedding' [K, D] and 'scores' [V, K] (softmax over texts at temperature 0.01, as the "
            "official demo)."
        ),
    )
    p.add_argument("videos", nargs="+", help="video files (anything FFmpeg reads; images are 1-frame videos)")
    p.add_argument("--checkpoint", required=True, help="official .npz, our .safetensors, HF folder, run folder, or a hub name (google/videoprism-lvt-base-f16r288[@rev])")
    p.add_argument("--out", required=True, help="output file, .npz or .safetensors (written atomically)")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: the model's table, 16 base / 8 large)")
    p.add_argument("--size", type=int, default=None, help="frame size in pixels, divisible by 18 (default: the model's, 288)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                   help="inference precision; auto (default): bf16 where the CPU/GPU runs it natively, else fp32")
    p.add_argument("--pooled-only", action="store_true", help="do not write the [V, T*N, D] tokens")
    p.add_argument("--text", action="append", default=[], help="a text query to score against the videos (repeatable)")
    p.add_argument("--tokenizer", help="SentencePiece .model for --text (default for hub names: the repo's; else the c4_en vocabulary for released models)")
    p.set_defaults(func=run)


def _load_clip(path: str, frames: int, size: int) -> torch.Tensor:
    from open_videoprism.data.decode import read_video
    from open_videoprism.data.transforms import center_crop, resize_short_side

    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    video = torch.as_tensor(read_video(path, num_frames=frames, as_tensor=True))  # [T, 3, H, W] in [0, 1]
    return center_crop(resize_short_side(video, size), size)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.checkpoints import load
    from open_videoprism.progress import progress_bar

    out = Path(args.out)
    if out.suffix not in SUFFIXES:
        raise UserError(f"{out}: --out must end in .npz or .safetensors")
    for flag, value in (("--frames", args.frames), ("--size", args.size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be a positive integer, got {value}")
    if out.is_dir():
        raise UserError(f"{out}: --out is a folder; give a file name ending in .npz or .safetensors")
    model = load(args.checkpoint, dtype=args.dtype)
    if args.text and model.text is None:
        raise UserError(f"{args.checkpoint}: this checkpoint has no text encoder; --text needs a video-text (LvT) model")
    tokenizer = None
    if args.text:
        from open_videoprism.tokenizer import Tokenizer

        tokenizer = Tokenizer(args.tokenizer) if args.tokenizer else getattr(model, "tokenizer", None)
        if tokenizer is None:  # hub names bring their repo's tokenizer; anything else needs one
            raise UserError("--text needs --tokenizer (a SentencePiece .model file)")
        assert model.text is not None  # checked above
        if tokenizer.vocab_size > model.text.cfg.vocab_size:
            raise UserError(
                f"{tokenizer.path}: {tokenizer.vocab_size} pieces but {args.checkpoint} has a text vocabulary of "
                f"{model.text.cfg.vocab_size}; use the tokenizer the model was trained with (c4_en for released models)"
            )
    frames = args.frames or model.cfg.vision.num_frames
    size = args.size or model.cfg.vision.image_size
    if size % model.cfg.vision.patch_size:
        raise UserError(f"--size {size} is not divisible by the patch size {model.cfg.vision.patch_size}")
    results: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for path in progress_bar(args.videos, desc="embed", unit="video", enabled=len(args.videos) > 1):
            o = model.encode_video(_load_clip(path, frames, size)[None])
            fields = {"tokens": None if args.pooled_only else o.tokens, "embedding": o.embedding,
                      "frame_embeddings": o.frame_embeddings}
            for k, v in fields.items():
                if v is not None:
                    results.setdefault(k, []).append(v[0].float().numpy())
        arrays = {k: np.stack(v) for k, v in results.items()}
        if args.text:
            text = model.encode_text(args.text, tokenizer=tokenizer).float()
            arrays["text_embedding"] = text.numpy()
            sims = torch.from_numpy(arrays["embedding"]) @ text.T
            arrays["scores"] = torch.softmax(sims / 0.01, dim=-1).numpy()
    meta = {"paths": json.dumps(list(args.videos)), "checkpoint": str(args.checkpoint),
            "frames": str(frames), "size": str(size), "dtype": "bf16" if model.dtype == torch.bfloat16 else "fp32"}
    write_arrays(out, arrays, meta)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    print(f"wrote {out}: {shapes}")
    if args.text:
        for i, path in enumerate(args.videos):
            best = int(arrays["scores"][i].argmax())
            print(f"{path}: best text {args.text[best]!r} (p={arrays['scores'][i, best]:.3f})")
    return 0
