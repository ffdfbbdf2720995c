"""VideoPrism: the factorized video encoder, the text encoder and the video-text model.

Token layout everywhere: ``[B, T*N, D]``, time-major, patches row-major within a
frame (the official ``b (t n) d``). A token's flat index is ``t * N + n``.

Visible-token forward (stage-2 student, stage-1 token dropping): pass
``visible`` [B, V] flat token indices. The spatial stage then attends among the
visible tokens of each frame and the temporal stage among the visible tokens of
each patch position; each stage drops sequences with no visible token and packs
the others, in groups of similar length (:data:`PACK_GROUPS`), to the longest of
their group with a key mask, so the cost follows the number of visible tokens. With every token visible the result equals the full
forward.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from open_videoprism.errors import InputError
from open_videoprism.models.config import TextConfig, VideoPrismConfig, VisionConfig
from open_videoprism.models.layers import (
    ATTN_IMPLS,
    Attention,
    AttentionPool,
    NormPolicy,
    Transformer,
    init_dense,
    init_norm,
    l2_normalize,
    layer_norm,
    trunc_normal_,
)
from open_videoprism.models.pos_embed import resize_spatial_table, resize_temporal_table, sinusoidal_table

if TYPE_CHECKING:
    from open_videoprism.tokenizer import Tokenizer


@dataclass
class VideoOutput:
    """What :meth:`VideoPrism.encode_video` returns.

    Attributes:
        tokens: ``[B, T*N, D]`` spatiotemporal features (official ``embeddings``),
            or ``[B, V, D]`` for the visible tokens when ``visible`` was given.
        spatial_tokens: ``[B, T*N, D]`` (or ``[B, V, D]``) after the spatial
            encoder's LayerNorm (official ``spatial_features``).
        embedding: ``[B, D]`` L2-normalised global embedding; None without a pooler.
        frame_embeddings: ``[B, T, D]`` per-frame pooled embeddings; None without
            a pooler or when only visible tokens were encoded.
    """

    tokens: torch.Tensor
    spatial_tokens: torch.Tensor
    embedding: torch.Tensor | None = None
    frame_embeddings: torch.Tensor | None = None


# Float videos may overshoot [0, 1] by this much (resampling filters ring a little).
RANGE_TOLERANCE = 1e-2
_LAYOUT = "[B, T, 3, H, W] (batch, frames, RGB, height, width)"


def check_video(video: torch.Tensor) -> torch.Tensor:
    """Enforce :meth:`VideoPrism.encode_video`'s input contract; returns a float video in [0, 1].

    uint8 frames are scaled by 1/255 (the official preprocessing divides by 255);
    a float video must lie in [0, 1] (within :data:`RANGE_TOLERANCE`): 0..255
    floats or mean/std-normalised frames would otherwise encode to a different
    embedding without a word. The range check (one device sync) is skipped while
    tracing (``torch.compile``, ONNX/TorchScript export) and on the meta device.
    """
    if not isinstance(video, torch.Tensor):
        raise InputError(f"video must be a torch.Tensor {_LAYOUT}; got {type(video).__name__}")
    if video.dim() != 5:
        raise InputError(f"video must be {_LAYOUT}; got shape {tuple(video.shape)}")
    b, t = video.shape[:2]
    if b == 0 or t == 0 or video.numel() == 0:
        raise InputError(f"video is empty: shape {tuple(video.shape)}; expected {_LAYOUT} with B, T >= 1")
    if video.dtype == torch.uint8:
        return video.float() / 255.0
    if not video.is_floating_point():
        raise InputError(f"video must be float in [0, 1] or uint8 in [0, 255] {_LAYOUT}; got dtype {video.dtype}")
    if not (torch.compiler.is_compiling() or torch.jit.is_tracing() or video.device.type == "meta"):
        lo, hi = torch.aminmax(video.detach())
        lo_v, hi_v = float(lo), float(hi)
        if not (lo_v >= -RANGE_TOLERANCE and hi_v <= 1 + RANGE_TOLERANCE):  # also catches NaN
            raise InputError(
                f"video values span [{lo_v:.4g}, {hi_v:.4g}]; expected floats in [0, 1] (divide 0..255 frames "
                f"by 255, do not mean/std-normalise) or uint8 frames, laid out {_LAYOUT}"
            )
    return video


# Packed rows are processed in up to this many groups of similar length (rows sorted by their
# number of valid tokens), each padded to its own longest row: random masks leave per-row counts
# that vary (temporal rows at ratio 0.65: 5.6 +- 1.9 of 16 frames), and one group would pad every
# row to the longest. Rows of one length (tube, whole-clip BEVT masks) stay one group.
PACK_GROUPS = 4


def _packed_rows(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, valid: torch.Tensor, groups: int | None = None
) -> torch.Tensor:
    """Apply the row-wise ``fn(packed [R', K, D], key_mask [R', K])`` to the valid elements of each row of
    ``x`` [R, L, D]; returns ``[R, L, D]`` with zeros where ``valid`` is False.

    Rows without a valid element are skipped; the others are sorted by length and split into at most
    ``groups`` (default :data:`PACK_GROUPS`) groups, each packed (valid positions first, in order) to its
    own longest row; rows whose lengths differ by at most 1/8 of the longest stay one group.
    """
    groups = groups or PACK_GROUPS
    counts = valid.sum(-1)
    live = torch.nonzero(counts > 0, as_tuple=True)[0]
    out = x.new_zeros(x.shape)
    if live.numel() == 0:
        return out
    live = live[torch.argsort(counts[live], stable=True)]
    lo, hi = int(counts[live[0]]), int(counts[live[-1]])
    parts = live.tensor_split(min(groups, live.numel())) if hi - lo > max(1, hi // 8) else (live,)
    for rows in parts:
        c = counts[rows]
        k = int(c[-1])  # rows are sorted: the last is the longest
        # Stable sort puts valid positions first, in their original order.
        order = torch.sort((~valid[rows]).to(torch.int8), dim=-1, stable=True).indices[:, :k]
        idx = order[..., None].expand(-1, -1, x.shape[-1])
        key_mask = torch.arange(k, device=x.device)[None, :] < c[:, None]
        y = fn(torch.gather(x[rows], 1, idx), key_mask) * key_mask[..., None].to(x.dtype)
        out.index_copy_(0, rows, x.new_zeros(len(rows), *x.shape[1:]).scatter(1, idx, y))
    return out


class FactorizedEncoder(nn.Module):
    """ViViT "model 2": a spatial ViT per frame, then a temporal ViT per patch position."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.patch_embed = nn.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.spatial_pos = nn.Parameter(torch.zeros(cfg.grid * cfg.grid, d))
        self.spatial = Transformer(cfg.spatial_layers, d, cfg.num_heads, cfg.mlp_dim, "gelu", cfg.logit_cap)
        self.spatial_norm = layer_norm(d)
        self.temporal_pos = nn.Parameter(torch.zeros(cfg.num_frames, d))
        self.temporal = Transformer(cfg.temporal_layers, d, cfg.num_heads, cfg.mlp_dim, "gelu", cfg.logit_cap)
        self.temporal_norm = layer_norm(d)
        # Length groups of the visible-token forward; FSDP2 sets 1 (see train.distributed.apply_fsdp).
        self.pack_groups = PACK_GROUPS
        self.init_weights()

    def init_weights(self) -> None:
        init_dense(self.patch_embed)
        # lecun_normal over a [rows, D] table: fan-in = rows (official)
        trunc_normal_(self.spatial_pos, std=self.spatial_pos.shape[0] ** -0.5)
        trunc_normal_(self.temporal_pos, std=self.temporal_pos.shape[0] ** -0.5)
        init_norm(self.spatial_norm)
        init_norm(self.temporal_norm)

    def no_weight_decay(self) -> set[str]:
        return {"spatial_pos", "temporal_pos"}

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` -> ``[B, T, N, D]`` patch embeddings plus spatial positions."""
        b, t, c, h, w = video.shape
        p = self.cfg.patch_size
        if h != w or h % p or c != 3:
            raise InputError(
                f"video must be [B, T, 3, H, W] with H == W divisible by {p}; got {tuple(video.shape)}"
            )
        x = self.patch_embed(video.reshape(b * t, c, h, w)).flatten(2).transpose(1, 2)
        g = h // p
        pos = resize_spatial_table(self.spatial_pos, (self.cfg.grid, self.cfg.grid), (g, g))
        return (x + pos.to(x.dtype)).view(b, t, g * g, -1)

    def temporal_positions(self, t: int, dtype: torch.dtype, crop: bool = False) -> torch.Tensor:
        """The time table for ``t`` frames: resized (official inference), or its first ``t`` rows
        when ``crop`` (the paper's stage 1 feeds images as 1-frame videos with the table cropped)."""
        if crop:
            if t > self.temporal_pos.shape[0]:
                raise ValueError(f"cannot crop a {self.temporal_pos.shape[0]}-frame time table to {t} frames")
            return self.temporal_pos[:t].to(dtype)
        return resize_temporal_table(self.temporal_pos, t).to(dtype)

    def forward(
        self,
        video: torch.Tensor,
        frame_paddings: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
        crop_temporal_pos: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``video`` [B, T, 3, H, W]; returns ``(tokens, spatial_tokens)``.

        Args:
            frame_paddings: optional [B, T], 1 for padded frames (official semantics:
                masked as keys and zeroed in the MLPs).
            visible: optional [B, V] flat token indices (``t * N + n``) to encode;
                the outputs are then ``[B, V, D]`` in the order given.
            crop_temporal_pos: take the first T rows of the time table instead of
                resizing it (see :meth:`temporal_positions`).
        """
        x = self.patchify(video)
        b, t, n, d = x.shape
        tpos = self.temporal_positions(t, x.dtype, crop_temporal_pos)
        if visible is not None:
            if frame_paddings is not None:
                raise ValueError("frame_paddings and visible cannot be combined")
            return self._forward_visible(x, visible, tpos)
        keep = None if frame_paddings is None else frame_paddings.to(torch.bool).logical_not()
        spatial_mask = None if keep is None else keep.reshape(b * t, 1).expand(-1, n)
        x = self.spatial(x.reshape(b * t, n, d), spatial_mask)
        x = self.spatial_norm(x)
        spatial_tokens = x.reshape(b, t * n, d)
        x = x.reshape(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
        x = x + tpos
        temporal_mask = None if keep is None else keep[:, None, :].expand(-1, n, -1).reshape(b * n, t)
        x = self.temporal_norm(self.temporal(x, temporal_mask))
        tokens = x.reshape(b, n, t, d).transpose(1, 2).reshape(b, t * n, d)
        return tokens, spatial_tokens

    def _forward_visible(
        self, x: torch.Tensor, visible: torch.Tensor, tpos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, n, d = x.shape
        if visible.dim() != 2 or visible.shape[0] != b:
            raise ValueError(f"visible must be [B, V] token indices; got {tuple(visible.shape)}")
        visible = visible.to(device=x.device, dtype=torch.long)
        valid = torch.zeros(b, t * n, dtype=torch.bool, device=x.device)
        valid.scatter_(1, visible, True)
        # Spatial stage: one sequence per frame.
        xs = _packed_rows(lambda p, m: self.spatial_norm(self.spatial(p, m)), x.reshape(b * t, n, d), valid.view(b * t, n),
                         self.pack_groups)
        spatial_flat = xs.view(b, t * n, d)
        # Temporal stage: one sequence per patch position.
        xt = xs.view(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
        xt = xt + tpos
        valid_t = valid.view(b, t, n).transpose(1, 2).reshape(b * n, t)
        xt = _packed_rows(lambda p, m: self.temporal_norm(self.temporal(p, m)), xt, valid_t, self.pack_groups)
        tokens_flat = xt.view(b, n, t, d).transpose(1, 2).reshape(b, t * n, d)
        idx = visible[..., None].expand(-1, -1, d)
        return torch.gather(tokens_flat, 1, idx), torch.gather(spatial_flat, 1, idx)


class TextEncoder(nn.Module):
    """CoCa-style unimodal text encoder.

    ``token_emb * sqrt(D) + sinusoid``; a learned class token (``* sqrt(D)``, no
    position) appended after the last position; causal attention with key
    padding; final LayerNorm; the class token is the text embedding.
    """

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.token_embed = nn.Embedding(cfg.vocab_size, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.transformer = Transformer(
            cfg.num_layers, d, cfg.num_heads, cfg.mlp_dim, "relu", cfg.logit_cap, cast(NormPolicy, cfg.norm_policy), causal=True
        )
        self.norm = layer_norm(d)
        self.init_weights()

    def init_weights(self) -> None:
        """Token and class embeddings at std ``D ** -0.5``, not 0.02: the forward scales them by
        ``sqrt(D)``, which makes them unit-scale against the unit-scale sinusoid (Lingvo / T5)."""
        d = self.cfg.width
        init_dense(self.token_embed, std=d**-0.5)
        trunc_normal_(self.cls, std=d**-0.5)
        init_norm(self.norm)

    def no_weight_decay(self) -> set[str]:
        return {"cls"}

    def forward(self, token_ids: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """``token_ids`` [B, L] int, ``paddings`` [B, L] (1 = pad) -> ``[B, D]`` (not normalised)."""
        b, length = token_ids.shape
        d = self.cfg.width
        scale = math.sqrt(d)
        x = self.token_embed(token_ids) * scale
        x = x + sinusoidal_table(length, d).to(device=x.device, dtype=x.dtype)
        x = torch.cat([x, (self.cls * scale).to(x.dtype).expand(b, -1, -1)], dim=1)
        keep = torch.cat(
            [paddings.to(x.device) == 0, torch.ones(b, 1, dtype=torch.bool, device=x.device)], dim=1
        )
        x = self.norm(self.transformer(x, keep))
        return x[:, -1]


class VideoPrism(nn.Module):
    """The VideoPrism model: video encoder, and (for video-text models) the
    auxiliary layers, the attention-pooling head and the text encoder.

    Inputs are float videos ``[B, T, 3, H, W]`` in [0, 1] (no mean/std
    normalisation) or uint8 frames (scaled by 1/255), H == W divisible by the
    patch size; anything else raises :class:`~open_videoprism.errors.InputError`.
    """

    def __init__(self, cfg: VideoPrismConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # The SentencePiece vocabulary of the text tower, when the checkpoint came with one (hub repos).
        self.tokenizer: Tokenizer | None = None
        v = cfg.vision
        self.encoder = FactorizedEncoder(v)
        self.auxiliary = (
            Transformer(cfg.auxiliary_layers, v.width, v.num_heads, v.mlp_dim, "gelu", v.logit_cap)
            if cfg.auxiliary_layers > 0
            else None
        )
        self.pooler = AttentionPool(v.width, v.num_heads, cfg.pooler_dim) if cfg.has_pooler else None
        self.text = TextEncoder(cfg.text) if cfg.text is not None else None

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.patch_embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.patch_embed.weight.device

    def set_attn_impl(self, impl: str) -> None:
        """The attention implementation of every layer: ``"fast"`` (default), ``"reference"`` (the official
        op order, the parity reference) or ``"flex"`` (compiled FlexAttention, fixed-shape inference);
        see :class:`~open_videoprism.models.layers.Attention`."""
        if impl not in ATTN_IMPLS:
            raise ValueError(f"unknown attention implementation {impl!r}; use one of {', '.join(ATTN_IMPLS)}")
        for m in self.modules():
            if isinstance(m, Attention):
                m.impl = impl  # type: ignore[assignment]  # checked above

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer block in the backward pass to save memory."""
        for m in self.modules():
            if isinstance(m, Transformer):
                m.grad_checkpointing = enable

    def pool(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """Auxiliary layers + MAP head on ``tokens`` [B, L, D] -> ``[B, D]``."""
        if self.pooler is None:
            raise RuntimeError("this model has no attention-pooling head (an encoder-only config)")
        if self.auxiliary is not None:
            tokens = self.auxiliary(tokens, key_mask)
        emb = self.pooler(tokens, key_mask).squeeze(1)
        return l2_normalize(emb) if normalize else emb

    def encode_video(
        self,
        video: torch.Tensor,
        frame_paddings: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
        normalize: bool = True,
        frame_embeddings: bool = True,
        crop_temporal_pos: bool = False,
    ) -> VideoOutput:
        """Encode a batch of videos ``[B, T, 3, H, W]`` in [0, 1].

        Input contract (:func:`check_video`): float values in [0, 1], or uint8
        frames, which are scaled by 1/255; a float video outside [0, 1] (e.g.
        0..255 floats), an empty batch or zero frames raise :class:`InputError`
        instead of giving a different embedding silently.

        ``visible`` [B, V] restricts the encoder to those flat token indices
        (see the module docstring). ``frame_embeddings=False`` skips the
        per-frame pooling. ``crop_temporal_pos=True`` takes the first T rows of
        the time table instead of resizing it (the paper's stage 1 does this for
        images fed as 1-frame videos; the official inference code resizes).
        """
        video = check_video(video)
        video = video.to(device=self.device, dtype=self.dtype)
        tokens, spatial = self.encoder(
            video, frame_paddings=frame_paddings, visible=visible, crop_temporal_pos=crop_temporal_pos
        )
        out = VideoOutput(tokens=tokens, spatial_tokens=spatial)
        if self.pooler is None:
            return out
        aux = self.auxiliary(tokens) if self.auxiliary is not None else tokens
        emb = self.pooler(aux).squeeze(1)
        out.embedding = l2_normalize(emb) if normalize else emb
        if frame_embeddings and visible is None:
            b, t = video.shape[:2]
            per_frame = aux.reshape(b * t, -1, aux.shape[-1])
            fe = self.pooler(per_frame).squeeze(1).reshape(b, t, -1)
            out.frame_embeddings = l2_normalize(fe) if normalize else fe
        return out

    def encode_text(
        self,
        token_ids: torch.Tensor | list[str] | str,
        paddings: torch.Tensor | None = None,
        tokenizer: Tokenizer | str | os.PathLike | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Text embeddings ``[B, D]`` (L2-normalised by default).

        Pass token ids ``[B, L]`` with paddings ``[B, L]`` (1 = pad), or strings
        with ``tokenizer`` (a :class:`~open_videoprism.tokenizer.Tokenizer` or a
        path to a SentencePiece ``.model`` file; default ``self.tokenizer``, set
        when the model was loaded by hub name).
        """
        if self.text is None:
            raise RuntimeError("this model has no text encoder (a video-only config)")
        if isinstance(token_ids, (str, list, tuple)):
            from open_videoprism.tokenizer import Tokenizer

            tokenizer = tokenizer if tokenizer is not None else self.tokenizer
            if tokenizer is None:
                raise ValueError("encode_text with strings needs tokenizer= (a Tokenizer or a .model path)")
            tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer(tokenizer)
            texts = [token_ids] if isinstance(token_ids, str) else list(token_ids)
            token_ids, paddings = tok(texts, max_length=self.text.cfg.max_length)
        if paddings is None:
            raise InputError("encode_text with token ids needs paddings [B, L] (1 = pad)")
        if token_ids.dim() != 2 or token_ids.shape[0] == 0 or tuple(paddings.shape) != tuple(token_ids.shape):
            raise InputError(
                f"token_ids and paddings must both be [B, L] with B >= 1; got {tuple(token_ids.shape)} and {tuple(paddings.shape)}"
            )
        vocab = self.text.cfg.vocab_size
        if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= vocab):
            raise InputError(
                f"token ids span [{int(token_ids.min())}, {int(token_ids.max())}] but the text vocabulary has {vocab} "
                "entries; use the tokenizer the model was trained with"
            )
        emb = self.text(token_ids.to(self.device, torch.long), paddings.to(self.device))
        return l2_normalize(emb) if normalize else emb

    def forward(
        self,
        video: torch.Tensor | None = None,
        token_ids: torch.Tensor | None = None,
        paddings: torch.Tensor | None = None,
    ) -> tuple[VideoOutput | None, torch.Tensor | None]:
        """``(encode_video(video), encode_text(token_ids, paddings))``; either may be None."""
        v = self.encode_video(video, frame_embeddings=False) if video is not None else None
        t = self.encode_text(token_ids, paddings) if token_ids is not None else None
        return v, t
