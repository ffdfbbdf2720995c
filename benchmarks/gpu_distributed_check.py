"""One-GPU check of the CUDA path of distributed training, in one go (a few minutes on an H200).

It runs, on one GPU (rank 0 of 1), and records what it measures in a JSON file:

1. ``nccl``: a process group of one rank; all_reduce and the differentiable all_gather the
   contrastive loss uses;
2. ``sdpa``: which scaled-dot-product-attention kernels accept bf16 inputs of the base model's
   head shape (flash, memory-efficient, cuDNN, math), and the bf16 forward of the base encoder
   against fp32 (cosine of the embeddings);
3. ``stage2_fsdp``: engine steps of the ``b16-stage2`` recipe (bf16 FSDP2 mixed precision,
   activation checkpointing, Adafactor, a bf16 teacher) under FSDP2 on one rank: seconds per step,
   peak CUDA memory, finite losses; a DCP checkpoint written and resumed;
4. ``stage1_fsdp_accum``: ``b16-stage1`` steps with 2 micro-batches through the contrastive feature cache.

    python benchmarks/gpu_distributed_check.py --json gpu_check.json            # on a GPU machine
    python benchmarks/gpu_distributed_check.py --dry-run                        # CPU, gloo, tiny models (CI)

``--dry-run`` runs the same code path on the CPU with gloo and tiny models in seconds, so the
script is tested where no GPU is (``tests/test_distributed.py``). Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from open_videoprism.train.distributed import free_port


def check_collectives(device: torch.device) -> dict[str, Any]:
    from open_videoprism.objectives.loss import gather_with_grad

    x = torch.arange(4.0, device=device)
    dist.all_reduce(x)
    y = torch.ones(3, 2, device=device, requires_grad=True)
    g = gather_with_grad(y)
    g.sum().backward()
    assert torch.equal(x.cpu(), torch.arange(4.0)) and y.grad is not None
    return {"backend": dist.get_backend(), "all_reduce": True, "all_gather_with_grad": True}


def check_sdpa(device: torch.device, model_name: str, frames: int, size: int) -> dict[str, Any]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import open_videoprism as ovp

    cfg = ovp.get_config(model_name).vision
    head = cfg.width // cfg.num_heads
    q = torch.randn(4, cfg.num_heads, cfg.grid * cfg.grid, head, device=device, dtype=torch.bfloat16)
    kernels = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, q, q)
            kernels[name.lower()] = True
        except RuntimeError:
            kernels[name.lower()] = False
    torch.manual_seed(0)
    model = ovp.create_model(model_name).to(device).eval()
    video = torch.rand(2, frames, 3, size, size, device=device)
    with torch.no_grad():
        ref = model.encode_video(video).embedding.float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            t0 = time.perf_counter()
            low = model.encode_video(video).embedding.float()
            _sync(device)
            seconds = time.perf_counter() - t0
    cos = float(torch.nn.functional.cosine_similarity(ref, low, dim=-1).min())
    assert cos > 0.99, f"bf16 embeddings drift from fp32: min cosine {cos:.4f}"
    return {"kernels_bf16": kernels, "bf16_vs_fp32_min_cosine": cos, "bf16_forward_s": seconds}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(recipe: str, overrides: list[str], device: torch.device, teacher: str | None, steps: int, run: Path) -> dict[str, Any]:
    from open_videoprism.train.config import load_config
    from open_videoprism.train.data import build_stream_factory
    from open_videoprism.train.distributed import DistInfo, unwrap
    from open_videoprism.train.engine import Trainer, build_objective

    # AdamW: torch's Adafactor (the recipes' optimiser) does not run on FSDP2's DTensor parameters.
    cfg = load_config(recipe, [f"steps={steps}", "log_every=1", f"ckpt_every={steps - 1}", "keep_last=2",
                               "optim.name=adamw", "distributed.strategy=fsdp", f"device={device}", "data.num_workers=0",
                               *overrides])
    info = DistInfo(rank=0, world_size=1, device=device)
    objective = build_objective(cfg, teacher=teacher)
    make = build_stream_factory(cfg, "random", collate_fn=getattr(unwrap(objective), "collate_fn", None))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg, objective, make, run, info=info, progress=False)
    t0 = time.perf_counter()
    first = trainer.fit(stop_after=1)  # the first step compiles kernels and allocates the optimiser state
    _sync(device)
    t1 = time.perf_counter()
    rest = trainer.fit(resume=True, stop_after=steps - 1)
    _sync(device)
    per_step = (time.perf_counter() - t1) / max(1, steps - 2)
    # Resume the last step from the DCP checkpoint in a fresh trainer, as a crashed job would.
    again = Trainer(cfg, build_objective(cfg, teacher=teacher), make, run, info=info, progress=False).fit(resume=True)
    losses = {**first.losses, **rest.losses, **again.losses}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    out = {"first_step_s": t1 - t0, "seconds_per_step": per_step, "losses": losses, "resumed_from": again.resumed_from,
           "batch_size": cfg.batch_size, "accum_steps": cfg.accum_steps, "frames": cfg.data.num_frames, "size": cfg.data.image_size}
    if device.type == "cuda":
        out["peak_cuda_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _teacher(tmp: Path, name: str) -> str:
    import open_videoprism as ovp

    torch.manual_seed(0)
    model = ovp.create_model(name)
    return str(ovp.save_checkpoint(tmp / "teacher" / "model.safetensors", model.state_dict(), model.cfg))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, gloo, tiny models: the code path without a GPU")
    p.add_argument("--steps", type=int, default=None, help="engine steps per stage (default 6, dry run 3)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per step on the GPU (dry run: 2)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run for the CPU code path", file=sys.stderr)
        return 2
    device = torch.device("cpu") if dry else torch.device("cuda", 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    dist.init_process_group("gloo" if dry else "nccl", rank=0, world_size=1)
    steps = args.steps or (3 if dry else 6)
    base = "videoprism_lvt_test_tiny" if dry else "videoprism_lvt_v1_base"
    small = ["batch_size=2", "data.num_frames=4", "data.image_size=72", f"model.name={base}", "model.num_frames=4"] if dry else \
        [f"batch_size={args.batch_size}"]
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": dry,
    }
    failed = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        teacher = _teacher(tmp, base)
        checks: dict[str, Callable[[], dict[str, Any]]] = {
            "nccl" if not dry else "gloo": lambda: check_collectives(device),
            "sdpa": lambda: check_sdpa(device, base, 4 if dry else 8, 72 if dry else 288),
            "stage2_fsdp": lambda: _train("b16-stage2", small + (["objective.decoder.width=40", "objective.decoder.num_heads=4",
                                                                  "objective.decoder.mlp_dim=160", "objective.decoder.depth=1"] if dry else []),
                                          device, teacher, steps, tmp / "stage2"),
            "stage1_fsdp_accum": lambda: _train("b16-stage1", [*small, "accum_steps=2"], device, None, steps, tmp / "stage1"),
        }
        for name, fn in checks.items():
            t0 = time.perf_counter()
            try:
                results[name] = {"ok": True, **fn(), "wall_s": time.perf_counter() - t0}
            except Exception as exc:  # keep going: one report with every check
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "wall_s": time.perf_counter() - t0}
                traceback.print_exc()
                failed.append(name)
            print(f"{name}: {json.dumps(results[name])[:400]}", flush=True)
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
