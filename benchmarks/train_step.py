"""Training steps on this machine: the stage-2 step's fraction of the matmul peak, and what
activation checkpointing costs and saves, per model size.

For each model and ``model.grad_checkpointing`` off/on, a fresh process builds one optimiser step
and reports seconds per step (best of ``--repeats`` after a warm-up), the FLOPs torch counts
(``torch.utils.flop_counter``: matmuls, convolutions, attention; forward and backward; with
checkpointing the recomputed forward too), the fraction of the machine's matmul peak in the step's dtype
measured in the same process (model FLOPs, those of the step without recomputation), the step's own
memory (the high-water mark during the steps above the memory resident between them: activations and
gradients; Linux) and the process's peak resident memory (``ru_maxrss``: everything, set-up included).

* ``stage2``: the distillation objective (student on the visible tokens at mask ratio 0.65, frozen
  teacher, token-wise and global decoders) and AdamW, as ``stage2-tiny``/``b16-stage2`` build it;
* ``stage1``: the contrastive objective (video and text towers, 50 % token dropping) and AdamW.

    python benchmarks/train_step.py                                  # tiny and base, both objectives
    python benchmarks/train_step.py --models base --batch 2 --frames 8 --size 144 --threads 2

The GPU form of the stage-2 row (B at 16 x 288^2, bf16) is ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import best_seconds, count_flops, matmul_peak  # noqa: E402

MODELS = {"tiny": "videoprism_lvt_test_tiny", "base": "videoprism_lvt_v1_base", "large": "videoprism_lvt_v1_large"}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
        flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
        native = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f" {f}" in flags]
        return f"{name or platform.processor()} ({', '.join(native) or 'no AVX flags'})"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"


def build_step(objective_name: str, model: str, batch: int, frames: int, size: int, ckpt: bool, dtype: torch.dtype):
    """One optimiser step of ``objective_name`` on ``model`` with random clips (and captions)."""
    import open_videoprism as ovp
    from open_videoprism.models.decoders import DecoderConfig

    cfg = ovp.get_config(model)
    video = torch.rand(batch, frames, 3, size, size)
    if objective_name == "stage2":
        from open_videoprism.objectives.distillation import DistillationObjective, DistillationOptions

        opts = DistillationOptions(teacher_dtype="bf16" if dtype == torch.bfloat16 else "fp32")
        if cfg.vision.width <= 64:  # stage2-tiny's decoders
            opts.decoder = DecoderConfig(width=40, depth=1, num_heads=1, mlp_dim=160)
        objective = DistillationObjective(ovp.create_model(cfg), opts)
        if ckpt:
            objective.student.set_grad_checkpointing(True)
        batch_in = {"video": video}
    else:
        from open_videoprism.objectives.contrastive import ContrastiveObjective, ContrastiveOptions

        model_ = ovp.create_model(cfg)
        if ckpt:
            model_.set_grad_checkpointing(True)
        objective = ContrastiveObjective(model_, ContrastiveOptions(token_drop_ratio=0.5))
        assert cfg.text is not None
        batch_in = {"video": video, "text_ids": torch.randint(1, cfg.text.vocab_size, (batch, 16)),
                    "text_paddings": torch.zeros(batch, 16)}
    objective.train()
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = objective(batch_in)["loss"]
        loss.backward()
        optimizer.step()
        return loss

    return step


def _status_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux: ``clear_refs`` 5), so it measures from here."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(args: argparse.Namespace) -> dict:
    """One configuration, in this (fresh) process."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    step = build_step(args.objective, MODELS[args.model], args.batch, args.frames, args.size, args.ckpt, dtype)
    step()  # optimiser state, allocator warm-up
    # The step's own memory (activations, gradients): the high-water mark over the steps above what
    # stays resident between them (weights, optimiser state).
    resident, reset = _status_mb("VmRSS"), _reset_high_water_mark()
    sec = best_seconds(step, torch.device("cpu"), args.repeats, warmup=0)
    hwm = _status_mb("VmHWM")
    step_mb = hwm - resident if reset and hwm is not None and resident is not None else float("nan")
    flops = count_flops(step)
    peak = matmul_peak(torch.device("cpu"), dtype, 1024)
    return {"sec": sec, "flops": flops, "peak": peak, "step_mb": step_mb,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,base", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--objectives", default="stage2,stage1", help="comma list of stage2, stage1")
    p.add_argument("--batch", type=int, default=2, help="clips per step (tiny: 16)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (tiny: its own 4)")
    p.add_argument("--size", type=int, default=144, help="frame size (tiny: its own 72)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure one configuration
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--objective", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args)))
        return 0
    print(f"# {cpu_name()}; torch {torch.__version__}; {args.threads} thread(s); {args.dtype}; "
          f"load average {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")
    print("\n| objective | model | clips | activation checkpointing | s / step | GFLOP / step | % of matmul peak "
          "| step memory (MB) | peak RSS (MB) |\n|---|---|---|---|---:|---:|---:|---:|---:|")
    for objective in args.objectives.split(","):
        for model in args.models.split(","):
            tiny = model == "tiny"
            batch, frames, size = (16, 4, 72) if tiny else (args.batch, args.frames, args.size)
            model_flops = None  # the step's FLOPs without recomputation: MFU's numerator for both rows
            for ckpt in (False, True):
                cmd = [sys.executable, __file__, "--one", "--model", model, "--objective", objective,
                       "--batch", str(batch), "--frames", str(frames), "--size", str(size), "--dtype", args.dtype,
                       "--threads", str(args.threads), "--repeats", str(args.repeats)] + (["--ckpt"] if ckpt else [])
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"| {objective} | {model} | failed: {out.stderr.strip().splitlines()[-1]} |")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                model_flops = model_flops or r["flops"]
                print(f"| {objective} | {model} | {batch} x {frames} x {size}^2 | {'on' if ckpt else 'off'} "
                      f"| {r['sec']:.3f} | {r['flops'] / 1e9:.1f} | {100 * model_flops / r['sec'] / r['peak']:.0f}% "
                      f"(peak {r['peak'] / 1e9:.0f} GFLOP/s) | {r['step_mb']:.0f} | {r['rss_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
