"""Clips/s of decode + transform (16 x 288 x 288), from the demo clip and from the synthetic set.

    python benchmarks/data_speed.py [--clips 48] [--workers 0 2] [--synth-dir DIR]

Measures the manifest loader end to end (decode with PyAV, sample 16 frames,
random resized crop to 288, float [0, 1], batch of 8) in training mode
(random clip, stride 2) and evaluation mode (official uniform sampling), for
each worker count. The demo clip (512x512, 100 frames) is listed repeatedly in
a temporary manifest; the synthetic set is generated at 72 px (upsampled to
288 by the transform, as a 288-px model would read it) unless --synth-dir is given.

The machines are shared and noisy, so each source also gets an in-run
reference: a plain PyAV decode of every frame of one of its videos to RGB
(single thread, no sampling, no transform, no loader), in clips/s; the table
reports each setting as a ratio to it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from open_videoprism.data import VideoDataConfig, build_loader
from open_videoprism.data.synthetic import generate

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "water_bottle_drumming.mp4"


def measure(manifest: Path, training: bool, workers: int, clips: int, size: int, batch: int = 8) -> float:
    cfg = VideoDataConfig(num_frames=16, image_size=size, frame_stride=2,
                          sampling="random" if training else "uniform")
    loader = build_loader(manifest, cfg, batch_size=batch, training=training, num_workers=workers, seed=0)
    it = iter(loader)
    next(it)  # start-up (worker processes, first decode) is not throughput
    n, t = 0, time.perf_counter()
    while n < clips:
        try:
            b = next(it)
        except StopIteration:
            it = iter(build_loader(manifest, cfg, batch_size=batch, training=training, num_workers=workers))
            continue
        n += b["video"].shape[0]
    return n / (time.perf_counter() - t)


def raw_decode_reference(video: Path, seconds: float = 3.0) -> float:
    """Clips/s of decoding every frame of ``video`` to RGB with plain PyAV, one thread."""
    import av

    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            for f in c.decode(s):
                f.to_ndarray(format="rgb24")
        n += 1
    return n / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=48, help="clips timed per setting (after one warm-up batch)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--size", type=int, default=288)
    p.add_argument("--synth-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)  # one core per loader process, as in training
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = {}
        if DEMO.is_file():
            m = Path(tmp) / "demo.jsonl"
            m.write_text("".join(json.dumps({"path": str(DEMO), "label": 0}) + "\n" for _ in range(64)))
            sources["demo 512x512, 100 frames"] = m
        else:
            print(f"demo clip not found at {DEMO}: skipping it", file=sys.stderr)
        synth = args.synth_dir
        if synth is None:
            synth = Path(tmp) / "synth"
            generate(synth, 128, long_videos=0, workers=1, progress=False)
        sources["synthetic 72x72, 16 frames"] = synth / "pretrain.jsonl"
        for name, manifest in sources.items():
            first = json.loads(manifest.read_text().splitlines()[0])["path"]
            ref = raw_decode_reference(Path(first) if Path(first).is_absolute() else manifest.parent / first)
            print(f"{name:28s} reference (plain full decode, 1 thread): {ref:6.2f} clips/s", file=sys.stderr)
            for training in (True, False):
                for w in args.workers:
                    cps = measure(manifest, training, w, args.clips, args.size)
                    rows.append({"source": name, "mode": "train (random clip, RRC)" if training else "eval (uniform)",
                                 "workers": w, "clips_per_s": round(cps, 2), "reference": round(ref, 2),
                                 "ratio": round(cps / ref, 2)})
                    print(f"{name:28s} {rows[-1]['mode']:26s} workers={w}: {cps:6.2f} clips/s", file=sys.stderr)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__}; output 16x{args.size}x{args.size}\n")
    print("| source | mode | workers | clips/s | reference clips/s | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['mode']} | {r['workers']} | {r['clips_per_s']} | {r['reference']} | {r['ratio']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
