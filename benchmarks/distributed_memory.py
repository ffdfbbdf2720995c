"""Memory per rank of a stage-2 step: FSDP2 against DDP, measured with gloo ranks on the CPU.

Two ranks are spawned per strategy; each builds the stage-2 objective of a recipe (default
``b16-stage2``: a VideoPrism-B LvT teacher in bf16, its encoder as the student, both decoders)
with random weights, runs one engine step (which allocates the optimiser state), then measures
a second step:

- ``state``: bytes of this rank's tensors by role, exact: trainable parameters, gradients and
  optimiser state (the local shards under FSDP2), and the frozen teacher;
- ``rss``: the process's resident set after the step (``VmRSS``) and its peak during the step
  (``VmHWM`` after resetting it through ``/proc/self/clear_refs``; Linux only), which adds
  activations, communication buffers, the allocator's slack and the Python/torch runtime.

    python benchmarks/distributed_memory.py --strategies ddp fsdp fsdp-shard --json mem.json optim.name=adamw
    python benchmarks/distributed_memory.py --frames 8 --size 288 optim.name=adamw

(``optim.name=adamw``: the recipe's Adafactor does not run under FSDP2; docs/distributed.md.)

Clip size matters little here: with activation checkpointing and one clip per rank the
activations are small next to the model state, which is what sharding divides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from open_videoprism.train.distributed import free_port

MB = 1 << 20


def _status(key: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS (VmHWM) to the current RSS


def _local_bytes(tensors: Any) -> int:
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        if isinstance(t, DTensor):
            t = t.to_local()
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import open_videoprism as ovp
        from open_videoprism.train.config import load_config
        from open_videoprism.train.data import RandomPairStream
        from open_videoprism.train.distributed import DistInfo
        from open_videoprism.train.engine import Trainer, build_objective

        cfg = load_config(args.recipe, [
            "steps=2", "batch_size=1", "log_every=1", f"data.num_frames={args.frames}", f"data.image_size={args.size}",
            f"distributed.strategy={args.strategy}", f"distributed.frozen={args.frozen}", *args.overrides,
        ])
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            teacher = ovp.create_model(args.teacher)
            path = Path(tmp) / f"teacher-{rank}.safetensors"
            ovp.save_checkpoint(path, teacher.state_dict(), teacher.cfg)
            del teacher
            objective = build_objective(cfg, teacher=str(path))
        collate = getattr(objective, "collate_fn", None)
        info = DistInfo(rank=rank, world_size=world, device=torch.device("cpu"))

        def stream(state: Any) -> RandomPairStream:
            return RandomPairStream(1, args.frames, args.size, 16, 1000, 8, 0, rank, world, collate, state)

        trainer = Trainer(cfg, objective, stream, None, info=info, progress=False)
        trainer.fit(stop_after=1)  # allocates the optimiser state
        dist.barrier()
        _reset_peak()
        base = _status("VmRSS")
        trainer.fit(stop_after=2)
        peak, rss = _status("VmHWM"), _status("VmRSS")
        obj = trainer.objective
        frozen = {id(p) for p in obj.teacher.parameters()}  # type: ignore[union-attr]
        trainable = [p for p in obj.parameters() if id(p) not in frozen and p.requires_grad]
        opt_state = [v for s in trainer.optimizer.state.values() for v in s.values()]
        row = {
            "rank": rank,
            "params_mb": _local_bytes(trainable) / MB,
            "grads_mb": _local_bytes(p.grad for p in trainable if p.grad is not None) / MB,
            "optim_mb": _local_bytes(opt_state) / MB,
            "teacher_mb": _local_bytes(obj.teacher.parameters()) / MB,  # type: ignore[union-attr]
            "rss_before_step_mb": base / MB,
            "rss_after_step_mb": rss / MB,
            "peak_rss_step_mb": peak / MB,
        }
        rows: list[Any] = [None] * world
        dist.all_gather_object(rows, row)
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rows.json")
        mp.spawn(_worker, args=(args.ranks, free_port(), args, out), nprocs=args.ranks, join=True)
        return json.loads(Path(out).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="b16-stage2")
    p.add_argument("--teacher", default="videoprism_lvt_v1_base", help="registry name of the (random) stage-1 teacher")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=144)
    p.add_argument("--strategies", nargs="+", default=["ddp", "fsdp"], help="ddp, fsdp, fsdp-shard (teacher sharded too)")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    args = p.parse_args()
    results = {}
    for name in args.strategies:
        args.strategy = "fsdp" if name.startswith("fsdp") else "ddp"
        args.frozen = "shard" if name == "fsdp-shard" else "replicate"
        rows = measure(args)
        results[name] = rows
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "rank"}
        print(f"{name:10s} per rank (mean of {len(rows)}): " + ", ".join(f"{k} {v:.0f}" for k, v in mean.items()), flush=True)
    if args.json:
        meta = {"recipe": args.recipe, "teacher": args.teacher, "ranks": args.ranks, "frames": args.frames, "size": args.size,
                "overrides": args.overrides, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
