"""Evaluation at scale: memory and time of attentive-probe training over a large feature folder.

Writes a synthetic finished feature folder (N clips of L tokens x D dims, float16 tokens,
``--shard-size``-row safetensors shards; the defaults, 100,000 clips of the tiny model's
64 x 64 in 256-row shards, are ~800 MB) into a temporary folder, then runs each case in a
fresh process:

* ``eager``:  ``load_features`` (all shards read, tokens upcast to one float32 tensor), then
  ``--steps`` attentive-probe steps in the global order;
* ``mmap``:   ``load_features(mmap=True)`` (tokens stay in the shards, memory-mapped), the same steps;
* ``shards``: the store again, the samples in ``ProbeConfig.order = "shards"`` order (shards in a
  random order, shuffled within windows of ``--window`` shards).

Each step is what ``train_probe`` does: gather the batch's tokens (``probes.clip_samples``),
forward, backward, AdamW. Reported per case: seconds to load; ms per step and the part of it
spent gathering; peak anonymous memory above the process's baseline after imports (RssAnon
sampled every 5 ms: what the process itself allocates, the mapped file pages excluded); VmHWM
(peak resident memory, mapped pages included); RssFile at the end (mapped pages resident).
``--cold`` evicts the folder's pages from the page cache before each case (posix_fadvise on
these files only), as for a set larger than memory.

    python benchmarks/eval_scale.py                           # 100,000 clips, ~800 MB
    python benchmarks/eval_scale.py --clips 20000 --steps 300 --cold

Run by hand; figures go to docs/benchmarks.md with the command and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASES = ("eager", "mmap", "shards")


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmHWM``, ``RssAnon``, ``RssFile``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        import platform

        return platform.processor() or "unknown"


def write_folder(root: Path, clips: int, tokens: int, dim: int, shard_size: int, classes: int, seed: int = 0) -> int:
    """A finished feature folder of random float16 tokens; returns its size in bytes."""
    import numpy as np
    import torch

    from open_videoprism.arrays import write_arrays
    from open_videoprism.atomic import write_json
    from open_videoprism.eval.features import PROGRESS_FILE

    rng = np.random.default_rng(seed)
    names = []
    for start in range(0, clips, shard_size):
        n = min(shard_size, clips - start)
        toks = rng.standard_normal((n, 1, tokens, dim), dtype=np.float32)
        arrays = {"index": torch.arange(start, start + n), "mean_tokens": torch.from_numpy(toks.mean(2)),
                  "tokens": torch.from_numpy(toks.astype(np.float16))}
        names.append(f"shard-{len(names):05d}.safetensors")
        write_arrays(root / names[-1], arrays, fsync=True)  # fsync: clean pages can be evicted (--cold)
    write_json(root / PROGRESS_FILE, {"complete": True, "shards": names, "classes": classes})
    return sum(p.stat().st_size for p in root.iterdir())


def evict(root: Path) -> None:
    """Drop this folder's pages from the page cache (these files only; nothing else is touched)."""
    for p in root.iterdir():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_case(folder: Path, case: str, steps: int, batch_size: int, window: int, threads: int) -> dict[str, float]:
    """One case in this process (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from open_videoprism.eval.features import load_features
    from open_videoprism.eval.probes import ProbeConfig, build_probe, clip_samples, sample_shards
    from open_videoprism.eval.store import ShardWindows
    from open_videoprism.optim import param_groups

    torch.set_num_threads(threads)
    base = _status("RssAnon")
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _status("RssAnon"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    fs = load_features(folder, mmap=case != "eager")
    load_s = time.perf_counter() - t0
    tokens = fs.tokens
    assert tokens is not None
    classes = int(fs.meta["classes"])
    labels = fs.index % classes
    take, n, k = clip_samples(tokens)
    gen = torch.Generator().manual_seed(0)
    if case == "shards":
        order = ShardWindows(sample_shards(tokens), window)(gen)
    else:
        order = torch.randperm(n * k, generator=gen)
    torch.manual_seed(0)
    cfg = ProbeConfig()
    probe = build_probe(cfg, tokens.shape[-1], classes)
    opt = torch.optim.AdamW(param_groups(probe, cfg.weight_decay), lr=cfg.lr, foreach=True)
    gather_s = 0.0
    t0 = time.perf_counter()
    for i in range(steps):
        idx = order[(i * batch_size) % (n * k) :][:batch_size]
        t1 = time.perf_counter()
        x = take(idx)
        gather_s += time.perf_counter() - t1
        loss = F.cross_entropy(probe(x), labels[idx // k], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak = max(peak, _status("RssAnon"))
    mb = 2**20
    return {"load_s": load_s, "step_ms": 1000 * train_s / steps, "gather_ms": 1000 * gather_s / steps,
            "anon_peak_mb": (peak - base) / mb, "vm_hwm_mb": _status("VmHWM") / mb, "rss_file_mb": _status("RssFile") / mb}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--tokens", type=int, default=64, help="tokens per clip (the tiny model: 4 frames x 16 patches)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--window", type=int, default=4, help="shards per shuffle window of the shards case")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--cold", action="store_true", help="evict the folder from the page cache before each case")
    ap.add_argument("--dir", help="parent of the temporary feature folder (default: the system's temp dir)")
    ap.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        row = run_case(Path(args.folder), args.worker, args.steps, args.batch_size, args.window, args.threads)
        print(json.dumps(row))
        return 0

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, {args.threads} thread(s); load average {os.getloadavg()[0]:.1f}")
    tmp = Path(tempfile.mkdtemp(prefix="eval_scale-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        size = write_folder(tmp, args.clips, args.tokens, args.dim, args.shard_size, args.classes)
        print(f"wrote {args.clips:,} clips of {args.tokens} x {args.dim} float16 tokens in "
              f"{-(-args.clips // args.shard_size)} shards: {size / 2**20:,.0f} MB in {time.perf_counter() - t0:.1f} s "
              f"({'cold' if args.cold else 'warm'} page cache for each case)")
        rows = {}
        for case in args.cases:
            if args.cold:
                evict(tmp)
            cmd = [sys.executable, __file__, "--worker", case, "--folder", str(tmp), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--window", str(args.window), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            rows[case] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.steps} attentive-probe steps of batch {args.batch_size}; load average after {os.getloadavg()[0]:.1f}\n")
    print("| case | load (s) | ms / step | of which gather | peak anonymous memory (MB) | VmHWM (MB) | RssFile at end (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case, r in rows.items():
        print(f"| {case} | {r['load_s']:.2f} | {r['step_ms']:.1f} | {r['gather_ms']:.2f} | {r['anon_peak_mb']:,.0f} "
              f"| {r['vm_hwm_mb']:,.0f} | {r['rss_file_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
