"""Memory and time of one long clip: 8 to 64 frames at 288^2, fast attention path vs reference.

Each (implementation, frames) case runs in a fresh process, which samples its resident memory
every 5 ms during one ``encode_video`` (``torch.inference_mode``) and reports the peak above
the resident memory just before the call: the forward's working memory, the model excluded.

The video-text model (``videoprism_lvt_v1_base``) is the hard case: its two auxiliary layers
attend over all T x 256 tokens of the clip jointly, so the reference path's logits grow with the
square of the frames (12 heads x (64 x 256)^2 floats = 12.9 GB at 64 frames); the fast path
computes them in query chunks of at most ``layers.LOGITS_BUDGET`` and stays linear.

    python benchmarks/long_video.py                                # lvt base, auto dtype
    python benchmarks/long_video.py --frames 8 16 32 64 --reference-frames 8 16 --dtype fp32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(model: str, frames: int, impl: str, dtype: str) -> dict[str, float]:
    """One forward in this process: seconds and peak working memory (bytes above the pre-call RSS)."""
    import torch

    import open_videoprism as ovp

    m = ovp.create_model(model, dtype=dtype, attn_impl=impl)
    size = m.cfg.vision.image_size
    video = torch.rand(1, frames, 3, size, size).to(m.dtype)
    base = _rss()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with torch.inference_mode():
        m.encode_video(video, frame_embeddings=False)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    return {"seconds": seconds, "peak_bytes": float(peak - base), "dtype": str(m.dtype).removeprefix("torch.")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="videoprism_lvt_v1_base")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--reference-frames", type=int, nargs="*", default=[8, 16],
                   help="frame counts for the reference path (its memory is quadratic: keep them small)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--case", nargs=3, metavar=("IMPL", "FRAMES", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:  # the child process
        impl, frames, dtype = args.case
        print(json.dumps(run_case(args.model, int(frames), impl, dtype)))
        return
    print(f"# {args.model}, 1 clip at the model's frame size, load average {os.getloadavg()[0]:.2f}")
    print("| impl | frames | dtype | s / clip | working memory (MB) | MB / frame |\n|---|---|---|---|---|---|")
    cases = [("fast", f) for f in args.frames] + [("reference", f) for f in args.reference_frames]
    for impl, frames in cases:
        cmd = [sys.executable, __file__, "--model", args.model, "--case", impl, str(frames), args.dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        mb = r["peak_bytes"] / 2**20
        print(f"| {impl} | {frames} | {r['dtype']} | {r['seconds']:.1f} | {mb:.0f} | {mb / frames:.1f} |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
