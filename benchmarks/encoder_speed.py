"""Encoder inference speed: open_videoprism vs Hugging Face transformers, vs the matmul peak, in one run.

Reports, all measured in the same process (these machines are shared, so only
ratios within one run mean something):

* the machine: CPU model and its bf16 flags, torch threads, load average before and after;
* the fp32 and bf16 matmul peak (best n^3 matmul);
* the dtype ``"auto"`` picks and why (:mod:`open_videoprism.precision`);
* for each dtype asked (default: fp32, plus bf16 where it is native): seconds per clip of
  our encoder (``fast`` attention, and ``reference`` for the parity arithmetic), of HF's
  ``VideoPrismVisionModel`` with the same weights layout and precision, the ratio HF / ours,
  and each one's fraction of the matmul peak (model matmul FLOPs / time / peak).

Rounds interleave the implementations (ours, HF, ours, HF, ...) and keep each one's best,
so a burst of load from another job hits both alike.

    python benchmarks/encoder_speed.py                      # base, 16 x 288^2
    python benchmarks/encoder_speed.py --frames 8 --repeats 3 --dtypes fp32,bf16
    python benchmarks/encoder_speed.py --model videoprism_v1_large --frames 8 --compile

Run by hand; figures go to docs/benchmarks.md with the command and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import torch

import open_videoprism as ovp
from open_videoprism.models.config import VideoPrismConfig, VisionConfig
from open_videoprism.precision import native_bf16, read_cpu_flags, resolve_dtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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


def matmul(dtype: torch.dtype, n: int = 4096) -> tuple[Callable[[], object], float]:
    """An n^3 matmul in ``dtype`` and its FLOPs (n = 1024 where a 512^3 probe shows emulation)."""
    probe = torch.randn(512, 512).to(dtype)
    probe @ probe
    t0 = time.perf_counter()
    probe @ probe
    if time.perf_counter() - t0 > 0.05:  # < 5 GFLOP/s: emulated; a 4096^3 matmul would take minutes
        n = 1024
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return (lambda: a @ b), 2.0 * n**3


def matmul_peak(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best FLOP/s of :func:`matmul` over ``repeats`` calls."""
    fn, flops = matmul(dtype)
    return flops / interleaved({"matmul": fn}, repeats)["matmul"]


def machine() -> str:
    """CPU model name and its bf16-related flags (``lscpu``'s words), or the GPU."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    flags = sorted(f for f in read_cpu_flags() if "bf16" in f or f.startswith("amx") or f in ("avx512f", "avx2"))
    return f"{name}; flags: {' '.join(flags) or 'unknown'}; {os.cpu_count()} CPUs"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def hf_encoder(cfg: VisionConfig, dtype: torch.dtype) -> Callable[[torch.Tensor], object]:
    import transformers

    hcfg = transformers.VideoPrismVisionConfig(
        image_size=cfg.image_size, num_frames=cfg.num_frames, hidden_size=cfg.width,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
        num_spatial_layers=cfg.spatial_layers, num_temporal_layers=cfg.temporal_layers,
    )
    model = transformers.VideoPrismVisionModel(hcfg).to(dtype).eval()
    return lambda video: model(pixel_values_videos=video)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best seconds of each function over ``repeats`` interleaved rounds (after one warm-up each)."""
    best = {k: float("inf") for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def dtype_rows(args: argparse.Namespace, cfg: VideoPrismConfig, v: torch.Tensor, flops: float, peak: float) -> list[str]:
    """Table rows of one dtype: each implementation of ours against HF, timed in interleaved rounds."""
    dtype = v.dtype
    fast = ovp.create_model(cfg, dtype=dtype, attn_impl="fast").encoder
    # The matmul peak is timed in the same rounds as the models, so a change of load hits it alike.
    peak_fn, peak_flops = matmul(dtype)
    fns: dict[str, Callable[[], object]] = {"matmul peak": peak_fn, "fast": lambda: fast(v)}
    if not args.no_reference:
        ref = ovp.create_model(cfg, dtype=dtype, attn_impl="reference").encoder
        fns["reference"] = lambda: ref(v)
    if not args.no_hf:
        hf = hf_encoder(cfg.vision, dtype)
        fns["HF"] = lambda: hf(v)
    warmups: dict[str, float] = {}  # first call of the compiled ones (compilation included)
    compiled: dict[str, Callable[[], object]] = {}
    if args.flex:
        flex = ovp.create_model(cfg, dtype=dtype, attn_impl="flex").encoder
        compiled["flex"] = lambda: flex(v)
    if args.compile:
        whole = torch.compile(fast)
        compiled["fast, torch.compile"] = lambda: whole(v)
    if args.freeze:
        # Inductor's inference mode: weights become constants, so linears run on prepacked oneDNN
        # weights with their bias/GELU fused (CPU). The flag is read at compile time (the first call, below).
        frozen = torch.compile(ovp.create_model(cfg, dtype=dtype, attn_impl="fast").encoder)
        compiled["fast, torch.compile + freezing"] = lambda: frozen(v)
    for label, fn in compiled.items():
        import torch._inductor.config as inductor_config  # only when something is compiled

        inductor_config.freezing = "freezing" in label
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn()
        warmups[label] = time.perf_counter() - t0
        fns[label] = fn
    best = interleaved(fns, args.repeats)
    peak = max(peak, peak_flops / best.pop("matmul peak"))
    theirs = best.get("HF")
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    rows = [f"| {name} | matmul peak: {peak / 1e9:.0f} GFLOP/s (best of the start and every round) | | | | | |"]
    for impl, sec in best.items():
        if impl == "HF":
            continue
        hf_cols = "- | - | -" if theirs is None else f"{theirs:.2f} | {100 * flops / theirs / peak:.0f}% | {theirs / sec:.2f}"
        label = impl if impl not in warmups else f"{impl} (first call {warmups[impl]:.0f} s)"
        rows.append(f"| {name} | {label} | {sec:.2f} | {100 * flops / sec / peak:.0f}% | {hf_cols} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="videoprism_v1_base")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=288)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", default=None, help="comma list of fp32,bf16 (default: fp32, plus bf16 where native)")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers comparison")
    p.add_argument("--no-reference", action="store_true", help="skip our reference attention path")
    p.add_argument("--flex", action="store_true", help="also time attn_impl='flex' (compiled FlexAttention; warm-up reported)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of our encoder (warm-up reported)")
    p.add_argument("--freeze", action="store_true",
                   help="also time torch.compile with Inductor's freezing (prepacked weights, fused epilogues; warm-up reported)")
    args = p.parse_args()

    torch.manual_seed(0)
    cfg = ovp.get_config(args.model)
    # Position tables of the clip's own size: no table resizing in either implementation
    # (HF's antialiased resize has no bf16 CPU kernel).
    cfg.vision.num_frames, cfg.vision.grid = args.frames, args.size // cfg.vision.patch_size
    flops = encoder_flops(cfg.vision, args.frames, args.size)
    auto = resolve_dtype("auto", "cpu")
    native, _ = native_bf16("cpu")
    names = args.dtypes.split(",") if args.dtypes else ["fp32", *(["bf16"] if native else [])]
    print(f"# {args.model} encoder, 1 x {args.frames} x {args.size}^2, {flops / 1e9:.0f} GFLOP per clip")
    print(f"# {machine()}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; load average before: {load_average()}")
    peaks = {name: matmul_peak(DTYPES[name]) for name in ("fp32", "bf16")}
    print("# matmul peak: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
          + f" (bf16 / fp32 = {peaks['bf16'] / peaks['fp32']:.2f})")
    print(f"# dtype 'auto' picks {auto.name}: {auto.reason}")
    print("| dtype | impl | s / clip | % of matmul peak | HF s / clip | HF % of peak | HF time / ours |")
    print("|---|---|---|---|---|---|---|")
    video = torch.rand(1, args.frames, 3, args.size, args.size)
    for name in names:
        for row in dtype_rows(args, cfg, video.to(DTYPES[name]), flops, peaks[name]):
            print(row, flush=True)
    print(f"# load average after: {load_average()}")


if __name__ == "__main__":
    main()
