"""Stage-2 student cost: the visible-token forward at a mask ratio vs the full forward.

The student encodes only its visible tokens (``encode_video(visible=...)``):
the spatial stage packs each frame's visible tokens to the longest frame and
the temporal stage packs each position's visible frames to the longest
position, dropping empty rows. Its cost therefore depends on the *structure*
of the mask, not only on the ratio. This script times the encoder forward for
each mask type and reports the padded token counts each stage processes (a
machine-independent measure of the work).

    python benchmarks/student_speed.py                       # tiny + base widths, 8x144px
    python benchmarks/student_speed.py --models base --frames 8 --size 288 --repeats 2
    python benchmarks/student_speed.py --json out.json

Timings are the minimum over ``--repeats`` rounds (cases interleaved, after a warm-up round), under
``torch.no_grad()`` (and ``--backward`` adds forward+backward timings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from typing import Any, Callable

import torch

import open_videoprism as ovp
from open_videoprism.masks import MaskConfig, TokenGrid, build_mask_generator
from open_videoprism.models import VideoPrismConfig, VisionConfig

MODELS: dict[str, Callable[[], VisionConfig]] = {
    "tiny": lambda: ovp.get_config("videoprism_test_tiny").vision,
    "base": lambda: ovp.get_config("videoprism_v1_base").vision,
}

MASKS: dict[str, MaskConfig] = {
    "bevt (span 1.0, default)": MaskConfig(type="bevt", span_range=(1.0, 1.0)),
    "bevt (span 0.5-1.0, BEVT's)": MaskConfig(type="bevt", span_range=(0.5, 1.0)),
    "tube": MaskConfig(type="tube"),
    "random": MaskConfig(type="random"),
}


def _timed_interleaved(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time of each case over ``repeats`` rounds.

    Cases are interleaved within each round (after one warm-up round), so a
    change in machine load hits every case alike instead of skewing one.
    """
    best = {k: float("inf") for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _stage_work(model: ovp.VideoPrism, video: torch.Tensor, visible: torch.Tensor | None) -> dict[str, int]:
    """Padded tokens (rows x length) entering each stage's transformer."""
    seen: dict[str, int] = {}
    hooks = []
    for name in ("spatial", "temporal"):
        mod = getattr(model.encoder, name)

        def hook(_m: torch.nn.Module, args: tuple, name: str = name) -> None:
            # Summed: packed rows run in groups of similar length, one call per group.
            seen[name] = seen.get(name, 0) + int(args[0].shape[0] * args[0].shape[1])

        hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        model.encoder(video, visible=visible)
    for h in hooks:
        h.remove()
    return seen


def run(models: list[str], frames: int, size: int, batch: int, ratio: float, repeats: int, backward: bool) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        vision = MODELS[name]()
        torch.manual_seed(0)
        model = ovp.create_model(VideoPrismConfig(vision=vision))
        video = torch.rand(batch, frames, 3, size, size)
        grid = TokenGrid.from_video(video.shape, vision.patch_size)
        full_work = _stage_work(model, video, None)

        def fwd(visible: torch.Tensor | None) -> Callable[[], Any]:
            def f() -> Any:
                with torch.no_grad():
                    return model.encoder(video, visible=visible)
            return f

        def fwd_bwd(visible: torch.Tensor | None) -> Callable[[], Any]:
            def f() -> None:
                model.zero_grad(set_to_none=True)
                tokens, _ = model.encoder(video, visible=visible)
                tokens.float().square().mean().backward()
            return f

        visible: dict[str, torch.Tensor | None] = {"full forward": None}
        for label, mcfg in MASKS.items():
            mcfg = dataclasses.replace(mcfg, ratio=ratio)
            visible[label] = build_mask_generator(mcfg)(batch, grid, torch.Generator().manual_seed(0)).visible
        t_fwd = _timed_interleaved({k: fwd(v) for k, v in visible.items()}, repeats)
        t_fb = _timed_interleaved({k: fwd_bwd(v) for k, v in visible.items()}, repeats) if backward else {}
        for label, vis in visible.items():
            work = full_work if vis is None else _stage_work(model, video, vis)
            rows.append({
                "model": name, "mask": label, "visible": grid.num_tokens if vis is None else int(vis.shape[1]),
                "time_s": t_fwd[label], "time_fb_s": t_fb.get(label),
                "rel_time": t_fwd[label] / t_fwd["full forward"],
                **{f"{k}_tokens": v for k, v in work.items()},
            })
    return rows


def to_markdown(rows: list[dict[str, Any]], full_tokens: dict[str, int]) -> str:
    head = "| model | mask | visible tokens | spatial work | temporal work | forward (s) | vs full |"
    sep = "|---|---|---|---|---|---|---|"
    has_fb = any(r["time_fb_s"] is not None for r in rows)
    if has_fb:
        head += " fwd+bwd (s) |"
        sep += "---|"
    lines = [head, sep]
    for r in rows:
        fs, ft = full_tokens[r["model"] + "s"], full_tokens[r["model"] + "t"]
        line = (
            f"| {r['model']} | {r['mask']} | {r['visible']} | {r['spatial_tokens'] / fs:.2f} | "
            f"{r['temporal_tokens'] / ft:.2f} | {r['time_s']:.4f} | {r['rel_time']:.2f} |"
        )
        if has_fb:
            line += f" {r['time_fb_s']:.4f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "base"], help="encoder widths to time")
    p.add_argument("--frames", type=int, default=8, help="clip length T")
    p.add_argument("--size", type=int, default=144, help="frame side in pixels (a multiple of 18)")
    p.add_argument("--batch", type=int, default=2, help="clips per forward")
    p.add_argument("--ratio", type=float, default=0.65, help="mask ratio (paper: 0.65)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (the minimum is reported)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--backward", action="store_true", help="also time forward+backward")
    p.add_argument("--pack-groups", type=int, default=None,
                   help="length groups of packed rows (default: the library's PACK_GROUPS; 1: one group, as before)")
    p.add_argument("--json", help="write the rows to this JSON file too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.pack_groups:
        from open_videoprism.models import videoprism

        videoprism.PACK_GROUPS = args.pack_groups
    rows = run(args.models, args.frames, args.size, args.batch, args.ratio, args.repeats, args.backward)
    full = {}
    for r in rows:
        if r["mask"] == "full forward":
            full[r["model"] + "s"], full[r["model"] + "t"] = r["spatial_tokens"], r["temporal_tokens"]
    from open_videoprism.models.videoprism import PACK_GROUPS

    print(f"# {args.batch} x {args.frames} frames at {args.size}px, ratio {args.ratio}, {PACK_GROUPS} length groups, "
          f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("# work = padded tokens entering the stage's transformer / the full forward's")
    print(to_markdown(rows, full))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
