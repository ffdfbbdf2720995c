"""``videoprism index`` throughput of a full-size model on this machine.

Random weights of a real config (default ``videoprism_lvt_v1_base``: 16 frames
at 288 x 288 per moment) index generated 2-second clips with 1-second windows
(3 moments per clip: the whole clip and two windows), through the same
``index_folder`` the CLI runs (worker decoding, SQLite writes included).

    python benchmarks/index_speed.py --clips 2

Run by hand; figures go to docs/benchmarks.md with the command and machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import open_videoprism as ovp
from open_videoprism.cli.main import main as cli
from open_videoprism.search import IndexSettings, index_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="videoprism_lvt_v1_base")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cli(["synth", str(tmp / "synth"), "--clips", str(max(8, 4 * args.clips)), "--size", "144", "--workers", "1"])
        folder = tmp / "videos"
        folder.mkdir()
        for src in sorted((tmp / "synth" / "videos" / "test").glob("*.mp4"))[: args.clips]:
            shutil.copy(src, folder / src.name)
        model = ovp.create_model(args.model)
        ckpt = tmp / "model.safetensors"
        ovp.save_checkpoint(ckpt, model.state_dict(), model.cfg)
        v = model.cfg.vision
        del model
        t = time.perf_counter()
        summary = index_folder(folder, tmp / "videos.db", IndexSettings(
            checkpoint=str(ckpt), window=1.0, batch_size=args.batch_size, workers=1), progress=False)
        wall = time.perf_counter() - t
        print(summary.line())
        print(f"{args.model}: {v.num_frames} x {v.image_size}^2 per moment, {summary.moments} moments in {wall:.1f} s "
              f"(incl. model load): {summary.moments / wall:.3f} moments/s, {wall / summary.moments:.1f} s/moment; "
              f"{args.threads} threads, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
