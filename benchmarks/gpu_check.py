"""One-shot GPU check: inference clips/s of VideoPrism B/L/g in bf16 and the stage-2 step's MFU for B.

Made to run in one go within 10 minutes on an H100/H200-class GPU (random weights,
nothing downloaded), printing a Markdown table for docs/benchmarks.md:

* the GPU, torch, the dtype ``"auto"`` picks and the measured bf16 matmul peak
  (best 8192^3 matmul) next to the nominal dense bf16 peak of the card where known;
* encoder inference (``encode_video`` without the pooler, ``torch.inference_mode``) of
  ``videoprism_v1_{base,large,giant}`` in bf16: clips/s at each model's own clip size
  (B 16 x 288^2, L and g 8 x 288^2), and the fraction of the matmul peak;
* one stage-2 training step of B (student on the visible tokens at mask ratio 0.65, frozen
  bf16 teacher with MAP head, token-wise and global decoders, AdamW, bf16 autocast):
  seconds per step and MFU = FLOPs counted by ``torch.utils.flop_counter`` / time / peak.

    python benchmarks/gpu_check.py                 # on a GPU: the whole check (~5 min on an H100)
    python benchmarks/gpu_check.py --dry-run       # anywhere: the same code on a tiny model, fp32, CPU

``--dry-run`` is what the test suite runs (tests/test_benchmarks.py), so the script is known
to work before a GPU is lent.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import torch

import open_videoprism as ovp
from open_videoprism.models.config import VideoPrismConfig
from open_videoprism.precision import resolve_dtype

# Dense bf16 tensor-core peaks (no sparsity) from the vendors' data sheets, FLOP/s.
NOMINAL_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "GH200": 989e12}
# Each model at its own clip size (its position tables): (name, frames, batch).
MODELS = (("videoprism_v1_base", 16, 8), ("videoprism_v1_large", 8, 8), ("videoprism_v1_giant", 8, 4))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: a @ b, device, repeats=10)


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call, counted by torch (matmuls, convolutions and attention; forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def tiny(cfg: VideoPrismConfig) -> VideoPrismConfig:
    """The dry run's stand-in for a model: same family, 4 frames of 4x4 patches, width 32."""
    v = dataclasses.replace(cfg.vision, grid=4, num_frames=4, width=32, spatial_layers=2, temporal_layers=1,
                            num_heads=2, mlp_dim=64)
    text = None if cfg.text is None else dataclasses.replace(cfg.text, vocab_size=64, width=32, num_layers=1,
                                                             num_heads=2, mlp_dim=64)
    return dataclasses.replace(cfg, vision=v, text=text, pooler_dim=128 if cfg.has_pooler else 0,
                               auxiliary_layers=min(cfg.auxiliary_layers, 1))


def inference_row(name: str, frames: int, batch: int, device: torch.device, dtype: torch.dtype, peak: float,
                  repeats: int, dry: bool) -> str:
    cfg = ovp.get_config(name)
    if dry:
        cfg, frames, batch = tiny(cfg), 4, 2
    model = ovp.create_model(cfg, dtype=dtype, device=device)
    size = cfg.vision.image_size
    video = torch.rand(batch, frames, 3, size, size, device=device, dtype=dtype)
    with torch.inference_mode():
        flops = count_flops(lambda: model.encoder(video))
        sec = best_seconds(lambda: model.encoder(video), device, repeats)
    return (f"| {name} | {batch} x {frames} x {size}^2 | {batch / sec:.1f} | {flops / sec / 1e12:.1f} "
            f"| {100 * flops / sec / peak:.0f}% |")


def stage2_step(device: torch.device, dtype: torch.dtype, dry: bool, batch: int) -> tuple[Callable[[], object], str]:
    """One optimiser step of the stage-2 objective on B (or its tiny stand-in)."""
    from open_videoprism.models.decoders import DecoderConfig
    from open_videoprism.objectives.distillation import DistillationObjective, DistillationOptions

    cfg = ovp.get_config("videoprism_lvt_v1_base")
    frames = 16
    if dry:
        cfg, frames, batch = tiny(cfg), 4, 2
    teacher = ovp.create_model(cfg, device=device)
    opts = DistillationOptions(teacher_dtype="bf16" if dtype == torch.bfloat16 else "fp32")
    if dry:
        opts.decoder = DecoderConfig(width=32, depth=1, num_heads=2, mlp_dim=64)
    objective = DistillationObjective(teacher, opts).to(device).train()
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    size = cfg.vision.image_size
    video = torch.rand(batch, frames, 3, size, size, device=device)
    autocast = device.type == "cuda" or dtype == torch.bfloat16

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = objective({"video": video})["loss"]
        loss.backward()
        optimizer.step()
        return loss

    return step, f"{batch} x {frames} x {size}^2"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny models on the CPU in fp32: checks the script runs")
    p.add_argument("--models", default=",".join(m for m, _, _ in MODELS), help="comma list of the models to time")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--stage2-batch", type=int, default=16, help="clips per stage-2 step (B, 16 x 288^2)")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device: run with --dry-run to check the script on the CPU")
    threads = torch.get_num_threads()
    if args.dry_run:  # tiny models: one thread, so a shared CPU's spinning threads do not stall it
        torch.set_num_threads(1)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    dtype = torch.float32 if dry else torch.bfloat16
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name = "CPU (dry run)" if dry else torch.cuda.get_device_name(device)
    auto = resolve_dtype("auto", device)
    peak = matmul_peak(device, dtype, 512 if dry else 8192)
    nominal = next((v for k, v in NOMINAL_BF16.items() if k in name), None)
    print(f"# {name}; torch {torch.__version__}; dtype 'auto' picks {auto.name} ({auto.reason})")
    print(f"# measured {str(dtype).removeprefix('torch.')} matmul peak {peak / 1e12:.1f} TFLOP/s"
          + (f", nominal dense bf16 {nominal / 1e12:.0f} TFLOP/s" if nominal and not dry else ""))
    print("\n| model | clips | clips/s | TFLOP/s | % of measured peak |\n|---|---|---|---|---|")
    wanted = args.models.split(",")
    for model_name, frames, batch in MODELS:
        if model_name in wanted:
            print(inference_row(model_name, frames, batch, device, dtype, peak, args.repeats, dry), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the model is gone with its row

    step, clips = stage2_step(device, dtype, dry, args.stage2_batch)
    step()  # allocate optimiser state, warm the kernels
    flops = count_flops(step)
    sec = best_seconds(step, device, args.repeats, warmup=1)
    mfu = f"{100 * flops / sec / peak:.0f}% of measured"
    if nominal and not dry:
        mfu += f", {100 * flops / sec / nominal:.0f}% of nominal"
    print("\n| stage-2 step (B) | clips | s / step | TFLOP / step | MFU |\n|---|---|---|---|---|")
    print(f"| student visible tokens (ratio 0.65), bf16 teacher, both decoders, AdamW | {clips} | {sec:.3f} "
          f"| {flops / 1e12:.2f} | {mfu} |")
    if device.type == "cuda":
        print(f"# peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
