"""Encoder inference speed: open_videoprism vs Hugging Face transformers, and vs the matmul peak.

Times the video encoder (random weights) on one clip in fp32 and in bf16 (bf16
weights for both implementations), measures the machine's matmul peak in the
same run, and prints each one's seconds per clip, the ratio HF / ours and the
fraction of the peak reached (model FLOPs / time / peak FLOP/s).

    python benchmarks/encoder_speed.py                      # base, 16x288x288
    python benchmarks/encoder_speed.py --model videoprism_v1_large --frames 8

Run by hand; figures go to docs/benchmarks.md with the command and machine.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time

import torch

import open_videoprism as ovp
from open_videoprism.models.config import VisionConfig


def encoder_flops(v: VisionConfig, frames: int, size: int, batch: int = 1) -> float:
    """Matmul FLOPs (2 x multiply-adds) of one encoder forward."""
    n = (size // v.patch_size) ** 2
    d, m = v.width, v.mlp_dim

    def layer(seq: int, count: int) -> float:
        dense = 2 * seq * (4 * d * d + 2 * d * m)
        attn = 2 * 2 * seq * seq * d
        return count * (dense + attn)

    patch = 2 * batch * frames * n * (3 * v.patch_size**2) * d
    spatial = v.spatial_layers * layer(n, batch * frames)
    temporal = v.temporal_layers * layer(frames, batch * n)
    return patch + spatial + temporal


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n x n matmul in ``dtype``."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def time_call(fn, repeats: int) -> float:
    with torch.inference_mode():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(times)


def hf_encoder(cfg: VisionConfig, size: int, dtype: torch.dtype):
    import transformers

    hcfg = transformers.VideoPrismVisionConfig(
        image_size=cfg.image_size, num_frames=cfg.num_frames, hidden_size=cfg.width,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
        num_spatial_layers=cfg.spatial_layers, num_temporal_layers=cfg.temporal_layers,
    )
    model = transformers.VideoPrismVisionModel(hcfg).to(dtype).eval()
    interp = size != cfg.image_size
    return lambda video: model(pixel_values_videos=video, interpolate_pos_encoding=interp)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="videoprism_v1_base")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=288)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers comparison")
    args = p.parse_args()

    torch.manual_seed(0)
    cfg = ovp.get_config(args.model)
    flops = encoder_flops(cfg.vision, args.frames, args.size)
    print(f"# {args.model} encoder, 1 x {args.frames} x {args.size}^2, {flops / 1e9:.0f} GFLOP per clip")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| dtype | matmul peak (TFLOP/s) | ours (s) | ours % peak | HF (s) | HF % peak | HF / ours |")
    print("|---|---|---|---|---|---|---|")
    video = torch.rand(1, args.frames, 3, args.size, args.size)
    for name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        peak = matmul_peak(dtype)
        model = ovp.create_model(cfg, dtype=dtype)
        v = video.to(dtype)
        ours = time_call(functools.partial(model.encoder, v), args.repeats)
        del model  # free its memory before the HF model is built
        row = f"| {name} | {peak / 1e12:.2f} | {ours:.2f} | {100 * flops / ours / peak:.0f}% |"
        if args.no_hf:
            print(row + " - | - | - |")
            continue
        hf = hf_encoder(cfg.vision, args.size, dtype)
        theirs = time_call(lambda: hf(v), args.repeats)
        print(row + f" {theirs:.2f} | {100 * flops / theirs / peak:.0f}% | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
