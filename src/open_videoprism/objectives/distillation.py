"""Stage 2: masked video modelling with global-local distillation and token shuffling.

The paper's second stage (paper Sec. 2.3.2, App. C.2, Algorithm 1):

* a **teacher** -- the frozen stage-1 video encoder with its auxiliary layers
  and MAP head -- encodes the full clip (eval mode, no gradients, optionally
  bf16) into token targets ``[B, T*N, D]`` and a global target ``[B, D]``;
* a **student** encoder, initialised from the same stage-1 weights, encodes
  only the visible tokens (``visible_idx`` from the mask collator);
* the **token-wise** branch (:class:`~open_videoprism.models.decoders.TokenDecoder`)
  fills masked slots with a MASK token, shuffles each sample's sequence, adds
  decoder positions after the shuffle and predicts every teacher token
  (cosine distance, all tokens, canonical order);
* the **global** branch (:class:`~open_videoprism.models.decoders.GlobalDecoder`)
  decodes the visible tokens without shuffle or positions and a MAP head
  predicts the teacher's global embedding (cosine distance);
* ``loss = local_weight * loss_local + global_weight * loss_global``.

Ablation switches (paper Fig. 4, Table 26, Fig. 6): ``shuffle``,
``global_distillation``, ``mask.type`` / ``mask.ratio``. The teacher-free
"contrastive + MAE in one stage" baseline is its own objective
(:mod:`open_videoprism.objectives.one_stage`).

Config (the ``objective:`` section of configs/stage2-*.yaml)::

    objective:
      name: distillation
      shuffle: true
      global_distillation: true
      mask: {type: bevt, ratio: 0.65}
      decoder: {width: 512, depth: 4, num_heads: 8, mlp_dim: 2048}

Run it with ``videoprism pretrain --config configs/stage2-tiny.yaml --teacher
STAGE1_RUN --data PRETRAIN.jsonl --out RUN``; the exported model is the student
as an encoder-only checkpoint.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from open_videoprism.errors import ConfigError
from open_videoprism.masks import MaskCollator, MaskConfig, TokenGrid, build_mask_generator
from open_videoprism.models import VideoPrism, VideoPrismConfig, create_model
from open_videoprism.models.decoders import DecoderConfig, GlobalDecoder, TokenDecoder
from open_videoprism.objectives import register_objective
from open_videoprism.optim import param_groups

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_NORMS = ("none", "instance")


@dataclass
class DistillationOptions:
    """The ``objective:`` section of a stage-2 config (see the module docstring).

    Attributes:
        shuffle: shuffle the token-wise decoder's input per sample (paper: on).
        global_distillation: add the global (MAP) branch (paper: on).
        local_weight / global_weight: loss weights (paper: equal).
        mask: the mask generator (paper: BEVT at ratio 0.65).
        decoder: both decoders' sizes (paper: 4 layers, width 512, MLP 2048).
        teacher_dtype: ``fp32`` or ``bf16`` for the frozen teacher.
        student_from_teacher: start the student from the teacher's encoder
            (paper); False builds it from ``model:`` in the config instead
            (e.g. a larger student under a base teacher).
        global_pool_from_teacher: start the global branch's MAP head from the
            teacher's stage-1 MAP head (its target's own head) when shapes match.
        target_norm: ``none`` (paper: the teacher's tokens as they are) or
            ``instance``: each clip's token targets normalised per channel over
            the clip's tokens (data2vec's instance norm), which removes the part
            every token shares (docs/stage2.md).
        student_hold: the fraction of the run's steps for which the student is
            held (learning rate 0) while the decoders learn to read the
            teacher-initialised student; then the student starts its own warmup
            and decay over the remaining steps. 0 (the paper's setting) moves
            student and decoders together from step 0 (docs/stage2.md).
    """

    shuffle: bool = True
    global_distillation: bool = True
    local_weight: float = 1.0
    global_weight: float = 1.0
    mask: MaskConfig = field(default_factory=MaskConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    teacher_dtype: str = "fp32"
    student_from_teacher: bool = True
    global_pool_from_teacher: bool = True
    target_norm: str = "none"
    student_hold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.student_hold < 1.0:
            raise ConfigError(f"objective.student_hold: {self.student_hold}; a fraction of the steps in [0, 1)")
        if self.target_norm not in TARGET_NORMS:
            raise ConfigError(f"objective.target_norm: {self.target_norm!r}; choose from {', '.join(TARGET_NORMS)}")


def instance_norm(tokens: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise ``[B, L, D]`` per sample and channel over the ``L`` tokens (data2vec's targets)."""
    return F.instance_norm(tokens.transpose(1, 2), eps=eps).transpose(1, 2)


def cosine_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos(pred, target)`` along the last axis, in float32 (0 = aligned, 2 = opposite)."""
    return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-6)


def encoder_only(model: VideoPrism) -> VideoPrism:
    """A copy of ``model``'s video encoder as an encoder-only :class:`VideoPrism`."""
    student = create_model(VideoPrismConfig(vision=copy.deepcopy(model.cfg.vision)))
    student.encoder.load_state_dict(model.encoder.state_dict())
    return student


class DistillationObjective(nn.Module):
    """Stage-2 objective (see the module docstring).

    The teacher is a *frozen submodule* (``frozen_submodules``): the engine never
    checkpoints it (the builder reloads it from ``--teacher``) and places it under
    FSDP as ``distributed.frozen`` says.

    Args:
        teacher: the stage-1 model; needs a MAP head when ``global_distillation``.
        options: :class:`DistillationOptions`.
        student: the student; default: an encoder-only copy of the teacher's encoder.
        grid: ``(frames, height, width)`` token grid of the training clips, the size
            of the decoder's position tables (default: the student config's; other
            clip sizes are served by resizing the tables).
        student_hold_steps: optimiser steps the student is held at lr 0
            (:meth:`param_groups`); the builder sets it from ``options.student_hold``.
    """

    frozen_submodules: tuple[str, ...] = ("teacher",)

    def __init__(
        self,
        teacher: VideoPrism,
        options: DistillationOptions | None = None,
        student: VideoPrism | None = None,
        grid: tuple[int, int, int] | None = None,
        student_hold_steps: int = 0,
    ) -> None:
        super().__init__()
        if student_hold_steps < 0:
            raise ConfigError(f"student_hold_steps: {student_hold_steps}; must be >= 0")
        self.student_hold_steps = student_hold_steps
        opts = options or DistillationOptions()
        if opts.teacher_dtype not in _DTYPES:
            raise ConfigError(f"objective.teacher_dtype: {opts.teacher_dtype!r} is not one of {', '.join(_DTYPES)}")
        if opts.global_distillation and teacher.pooler is None:
            raise ConfigError(
                "objective.global_distillation needs a teacher with a MAP head (a stage-1 LvT model); "
                "this teacher is encoder-only -- set global_distillation: false or use the stage-1 run"
            )
        self.options = opts
        # Frozen teacher: no grads, eval mode forever (see train()).
        self.teacher = teacher.to(_DTYPES[opts.teacher_dtype]).eval().requires_grad_(False)
        self.student = (student if student is not None else encoder_only(teacher)).float().train()
        v_s, v_t = self.student.cfg.vision, teacher.cfg.vision
        if v_s.patch_size != v_t.patch_size:
            raise ConfigError(f"student patch size {v_s.patch_size} != teacher patch size {v_t.patch_size}")
        grid = grid or (v_s.num_frames, v_s.grid, v_s.grid)
        self.token_decoder = TokenDecoder(v_s.width, v_t.width, opts.decoder, grid, shuffle=opts.shuffle)
        self.global_decoder: GlobalDecoder | None = None
        if opts.global_distillation:
            pool_dim = teacher.cfg.pooler_dim
            self.global_decoder = GlobalDecoder(v_s.width, v_t.width, opts.decoder, v_t.num_heads, pool_dim)
            if opts.global_pool_from_teacher and teacher.pooler is not None:  # checked above
                head = {k: v.float() for k, v in teacher.pooler.state_dict().items()}
                self.global_decoder.pool.load_state_dict(head)
        self.collate_fn = MaskCollator(build_mask_generator(opts.mask), v_s.patch_size, opts.mask.seed)

    # -- the contract ------------------------------------------------------------

    def train(self, mode: bool = True) -> DistillationObjective:
        super().train(mode)
        self.teacher.eval()  # the teacher never switches to training behaviour
        return self

    def export_model(self) -> VideoPrism:
        """The student, encoder-only: what ``ovp.load`` and the evaluation tools read."""
        return self.student

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The decoders' groups, then the student's, which start at ``student_hold_steps``
        (the engine holds a group at lr 0 until its ``start_step``). Without a hold: the plain two
        groups, so checkpoints of earlier runs still resume."""
        if not self.student_hold_steps:
            return param_groups(self, weight_decay)
        student = param_groups(self.student, weight_decay)
        for g in student:
            g["name"] = f"student_{g['name']}"
            g["start_step"] = self.student_hold_steps
        rest = [m for n, m in self.named_children() if n not in ("student", "teacher")]
        return [*param_groups(nn.ModuleList(rest), weight_decay), *student]

    @torch.no_grad()
    def teacher_targets(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(tokens [B, T*N, D], embedding [B, D] or None)`` of the full clip, float32."""
        self.teacher.eval()
        out = self.teacher.encode_video(video.to(self.teacher.dtype), frame_embeddings=False)
        emb = out.embedding.float() if out.embedding is not None else None
        return out.tokens.float(), emb

    def student_tokens(self, video: torch.Tensor, visible_idx: torch.Tensor) -> torch.Tensor:
        """The student encoder's outputs on the visible tokens, ``[B, V, D]``."""
        tokens, _ = self.student.encoder(video.to(self.student.dtype), visible=visible_idx)
        return tokens

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Losses of one batch (``video``; ``visible_idx`` from :attr:`collate_fn`,
        drawn here if absent). ``generator`` drives the token shuffle."""
        video = batch["video"]
        if "visible_idx" not in batch:
            batch = self.collate_fn(dict(batch))
        visible = batch["visible_idx"].to(video.device)
        grid = TokenGrid.from_video(video.shape, self.student.cfg.vision.patch_size)
        t_tokens, t_emb = self.teacher_targets(video)
        if self.options.target_norm == "instance":
            t_tokens = instance_norm(t_tokens)
        s_tokens = self.student_tokens(video, visible)

        pred, _ = self.token_decoder(s_tokens, visible, (grid.frames, grid.height, grid.width), generator)
        per_token = cosine_distance(pred, t_tokens)  # [B, L], canonical order
        loss_local = per_token.mean()
        out = {"loss_local": loss_local}
        with torch.no_grad():  # diagnostics: where the local loss comes from (no host sync)
            vis = torch.zeros_like(per_token).scatter_(1, visible, 1.0)
            d = per_token.detach()
            out["loss_local_visible"] = (d * vis).sum() / vis.sum().clamp(min=1.0)
            out["loss_local_masked"] = (d * (1 - vis)).sum() / (1 - vis).sum().clamp(min=1.0)
        loss = self.options.local_weight * loss_local
        if self.global_decoder is not None and t_emb is not None:
            loss_global = cosine_distance(self.global_decoder(s_tokens), t_emb).mean()
            out["loss_global"] = loss_global
            loss = loss + self.options.global_weight * loss_global
        out["loss"] = loss
        return out


def _resolve_teacher(teacher: str | None) -> VideoPrism:
    from open_videoprism.checkpoints import load

    if not teacher:
        raise ConfigError(
            "objective distillation needs a teacher: pass --teacher STAGE1_RUN_DIR_OR_CHECKPOINT "
            "(the stage-1 run folder or its final model.safetensors)"
        )
    return load(teacher)


@register_objective("distillation", options=DistillationOptions)
def build_distillation(options: DistillationOptions, *, train_config: Any, teacher: str | None) -> nn.Module:
    """Registry builder: load the teacher from ``--teacher`` and build the student."""
    if options.teacher_dtype not in _DTYPES:
        raise ConfigError(f"objective.teacher_dtype: {options.teacher_dtype!r} is not one of {', '.join(_DTYPES)}")
    # The hold as steps of this run (the fraction scales with `steps=`); the student always trains at least one.
    steps = int(getattr(train_config, "steps", 0) or 0)
    hold = min(round(options.student_hold * steps), max(0, steps - 1))
    teacher_model = _resolve_teacher(teacher)
    # Stage 2 never runs the teacher's text tower: free it on every rank (B: 44 % of the LvT weights, g: 26 %).
    teacher_model.text = None
    student = None
    if not options.student_from_teacher:
        from open_videoprism.objectives import build_model

        student = encoder_only(build_model(train_config.model, seed=train_config.seed))
    data = getattr(train_config, "data", None)
    grid = None
    if data is not None:  # size the decoder positions for the training clips
        side = data.image_size // teacher_model.cfg.vision.patch_size
        grid = (data.num_frames, side, side)
    objective = DistillationObjective(teacher_model, options, student, grid, student_hold_steps=hold)
    if getattr(train_config.model, "grad_checkpointing", False):
        objective.student.set_grad_checkpointing(True)
    log.info(
        "stage 2: teacher %s (width %d), student width %d, mask %s ratio %.2f, shuffle %s, global %s, "
        "student held for %d steps",
        teacher, teacher_model.cfg.vision.width, objective.student.cfg.vision.width,
        options.mask.type, options.mask.ratio, options.shuffle, options.global_distillation, hold,
    )
    return objective


__all__ = [
    "DistillationObjective",
    "DistillationOptions",
    "build_distillation",
    "cosine_distance",
    "encoder_only",
    "instance_norm",
]
