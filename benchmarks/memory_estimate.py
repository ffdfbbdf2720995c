"""Analytic GPU memory per rank for VideoPrism pretraining: B, L and g at 8 and 16 frames.

Parameter counts are exact (the models are built on the ``meta`` device: no memory, no
weights); everything else is arithmetic, so the figures are estimates (about +-30 %:
allocator fragmentation, NCCL buffers, the CUDA context of ~0.5 GB and kernels' workspaces
are not modelled). The terms, per rank, for ``N`` ranks and ``b`` clips per rank:

- model state of the trained parameters ``P``: fp32 weights + fp32 gradients + AdamW's two
  fp32 moments = 16 bytes x P, divided by ``N`` under FSDP2 (DDP keeps it whole, plus DDP's
  gradient buckets, ~4 bytes x P); FSDP2 adds the bf16 copy of the one or two blocks it
  has gathered at a time;
- stage 2's frozen teacher in bf16: 2 bytes x P_teacher, replicated (``distributed.frozen:
  replicate``) or divided by ``N`` (``shard``);
- activations in bf16 with activation checkpointing (the recipes' setting): each block keeps
  its input (``tokens x width x 2`` bytes), and the block being recomputed holds about
  ``34 x tokens x width`` bytes (Korthikanti et al. 2022, with a fused attention kernel
  that stores no ``tokens x tokens`` scores). Stage 1 drops 50 % of the tokens (tubes);
  stage 2's student sees 35 % (mask ratio 0.65), its two 4-layer decoders (width 512, not
  checkpointed) see every token, and the teacher's no-grad forward over every token holds
  one block's working set.

    python benchmarks/memory_estimate.py                       # the table of docs/distributed.md
    python benchmarks/memory_estimate.py --batch 16 --ranks 8 64 --json est.json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

import open_videoprism as ovp
from open_videoprism.models import VideoPrismConfig
from open_videoprism.models.decoders import DecoderConfig, GlobalDecoder, TokenDecoder

GB = 1e9
MODELS = {"B": "videoprism_lvt_v1_base", "L": "videoprism_lvt_v1_large", "g": "videoprism_lvt_v1_giant"}
IMAGE = 288  # the paper's frame size: 16 x 16 patches of 18 px
TEXT_LEN = 64


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(name: str, frames: int) -> dict[str, int]:
    """Exact parameter counts, built on the meta device."""
    cfg = ovp.get_config(name)
    with torch.device("meta"):
        full = ovp.create_model(cfg)
        encoder = ovp.create_model(VideoPrismConfig(vision=cfg.vision))
        dec = DecoderConfig()  # the paper's: 4 layers, width 512, MLP 2048
        grid = (frames, cfg.vision.grid, cfg.vision.grid)
        decoders = TokenDecoder(cfg.vision.width, cfg.vision.width, dec, grid)
        global_dec = GlobalDecoder(cfg.vision.width, cfg.vision.width, dec, cfg.vision.num_heads, cfg.pooler_dim)
    block = 12 * cfg.vision.width**2  # attention 4 w^2 + MLP 2 x 4 w^2 (mlp_dim = 4 w)
    teacher = _count(full) - (_count(full.text) if full.text is not None else 0)  # stage 2 drops the teacher's text tower
    return {"stage1": _count(full), "teacher": teacher, "student": _count(encoder) + _count(decoders) + _count(global_dec),
            "block": block, "width": cfg.vision.width, "grid": cfg.vision.grid,
            "layers": cfg.vision.spatial_layers + cfg.vision.temporal_layers + cfg.auxiliary_layers,
            "encoder_layers": cfg.vision.spatial_layers + cfg.vision.temporal_layers,
            "text_width": cfg.text.width if cfg.text else 0, "text_layers": cfg.text.num_layers if cfg.text else 0}


def estimate(name: str, frames: int, batch: int, ranks: int, strategy: str, stage: int) -> dict[str, float]:
    """Bytes per rank (see the module docstring), in GB."""
    c = param_counts(name, frames)
    w, n = c["width"], c["grid"] ** 2
    shard = ranks if strategy == "fsdp" else 1
    trained = c["stage1"] if stage == 1 else c["student"]
    state = 16 * trained / shard + (4 * trained if strategy == "ddp" else 2 * 2 * c["block"])
    tokens = batch * frames * n
    if stage == 1:
        vis = int(tokens * 0.5)
        act = 2 * vis * w * c["layers"] + 34 * vis * w  # block inputs + one block recomputed
        act += batch * TEXT_LEN * c["text_width"] * (2 * c["text_layers"] + 34)
        teacher = 0.0
    else:
        vis = int(tokens * 0.35)
        act = 2 * vis * w * c["encoder_layers"] + 34 * vis * w
        act += 34 * 512 * 4 * (tokens + vis)  # token decoder (every token) + global decoder (visible): 4 layers, not checkpointed
        act += 4 * tokens * w * 2  # teacher targets (fp32) and predictions
        act = max(act, 10 * tokens * w * 2)  # the teacher's no-grad block working set, freed before the student runs
        teacher = 2 * c["teacher"] / (ranks if strategy == "fsdp-shard" else 1)
    return {"params_M": trained / 1e6, "state_GB": state / GB, "teacher_GB": teacher / GB, "activations_GB": act / GB,
            "total_GB": (state + teacher + act) / GB}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="clips per rank (the b16 recipes: 16)")
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64])
    p.add_argument("--json")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    print(f"GB per rank, {args.batch} clips of {IMAGE}px per rank, bf16 + activation checkpointing, AdamW")
    print("| model | frames | stage | DDP | " + " | ".join(f"FSDP2 x{r}" for r in args.ranks) + " | trained params |")
    print("|---|---|---|---|" + "---|" * len(args.ranks) + "---|")
    for short, name in MODELS.items():
        for frames in (8, 16):
            for stage in (1, 2):
                ddp = estimate(name, frames, args.batch, 1, "ddp", stage)
                fs = [estimate(name, frames, args.batch, r, "fsdp", stage) for r in args.ranks]
                rows.append({"model": short, "frames": frames, "stage": stage, "ddp": ddp,
                             **{f"fsdp_{r}": e for r, e in zip(args.ranks, fs)}})
                cells = " | ".join(f"{e['total_GB']:.0f}" for e in fs)
                print(f"| {short} | {frames} | {stage} | {ddp['total_GB']:.0f} | {cells} | {ddp['params_M']:.0f} M |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
