"""``videoprism export``: a checkpoint as a transformers folder or an ONNX video encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

from open_videoprism.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint for transformers (--format hf) or ONNX runtimes (--format onnx)",
        description=(
            "hf: a folder with config.json + model.safetensors that transformers' VideoPrismClipModel / "
            "VideoPrismVideoModel / VideoPrismVisionModel load with from_pretrained (the text position table is "
            "saved as the official sinusoid; see docs/models.md). onnx: the video encoder, video [B, T, 3, H, W] "
            "in [0, 1] -> tokens [B, T*N, D] and embedding [B, D], batch axis dynamic (needs `pip install "
            "open-videoprism[export]`)."
        ),
    )
    p.add_argument("checkpoint", help="any checkpoint ovp.load reads, including hub names")
    p.add_argument("out", help="output folder (hf) or .onnx file (onnx)")
    p.add_argument("--format", choices=("hf", "onnx"), required=True)
    p.add_argument("--tokenizer", help="hf: SentencePiece .model to copy into the folder as spiece.model")
    p.add_argument("--frames", type=int, default=None, help="onnx: frames of the exported input (default: the model's)")
    p.add_argument("--size", type=int, default=None, help="onnx: frame size of the exported input (default: the model's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from open_videoprism.checkpoints import load
    from open_videoprism.export import export_hf, export_onnx

    model = load(args.checkpoint)
    out = Path(args.out)
    if args.format == "hf":
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a folder; --format hf writes a folder")
        tok = args.tokenizer or (model.tokenizer.path if model.tokenizer is not None else None)
        export_hf(model, out, tokenizer=tok)
        print(f"wrote {out}: config.json, model.safetensors{', spiece.model' if tok else ''}")
    else:
        if out.suffix != ".onnx":
            raise UserError(f"{out}: --format onnx writes a .onnx file; give OUT a .onnx name")
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UserError("--format onnx needs onnx and onnxscript: pip install 'open-videoprism[export]'") from None
        export_onnx(model, out, frames=args.frames, size=args.size)
        print(f"wrote {out}")
    return 0
