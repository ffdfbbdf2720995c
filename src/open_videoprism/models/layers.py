"""Transformer building blocks with the arithmetic of the official VideoPrism code.

Conventions that matter for parity (see docs/architecture.md):

* LayerNorm eps is 1e-6. Our ``weight`` is gamma itself; the official checkpoints
  store gamma - 1, and the converter adds the 1.
* Self-attention logits are soft-capped, ``cap * tanh(logits / cap)``, before
  masking; the softmax runs in float32; masked logits become a large *finite*
  negative number, so a fully masked row attends uniformly instead of giving NaN.
* A ``key_mask`` (True = valid token) masks keys in attention and zeroes the MLP
  output of invalid tokens, as the official ``paddings`` do.
* The attention-pooling (MAP) head scales queries with a learned per-dim scale
  (softplus, 1.442695041 / sqrt(head_dim)) and has no logit cap.

Initialisation (the official code's, flax ``lecun_normal``): every module declares its
scheme in ``init_weights()``, called at the end of its constructor. Dense and convolution
weights are truncated normal with std ``1 / sqrt(fan_in)``; attention projections, kept by
the official code as ``[D, heads, head_dim]`` kernels whose flax fan-in is ``D * heads``,
use ``1 / sqrt(D * heads)``; position tables ``1 / sqrt(rows)``; biases zero, LayerNorms the
identity. A fixed std (timm's 0.02) suits width 768 but is 6x too small at the test models'
width 64, where it left stage 1 barely trained (docs/reproduce.md). Loading a checkpoint
overwrites all of it. Modules also declare the parameters that take no weight decay in
``no_weight_decay()`` (see :mod:`open_videoprism.optim`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LN_EPS = 1e-6
# Official: where(mask, logits, -0.7 * float32 max).
_MASK_VALUE = -0.7 * torch.finfo(torch.float32).max
# 1 / softplus(0): makes PerDimScale exactly 1/sqrt(head_dim) at init.
_R_SOFTPLUS_0 = 1.442695041

INIT_STD = 0.02  # fixed std for the few tensors with no fan-in (decoder MASK token)

NormPolicy = Literal["pre", "primer_hybrid"]


def layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm with the official epsilon."""
    return nn.LayerNorm(dim, eps=LN_EPS)


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD, bound: float = 2.0) -> torch.Tensor:
    """timm's ``trunc_normal_(std=std)``: a normal cut at the absolute ``bound`` of 2.

    At the stds used here the cut lies 50 or more stds out, so the distribution
    is the normal; drawing it directly and clamping is several times faster than
    the inverse-CDF sampling of ``nn.init.trunc_normal_`` (seconds on the giant models).
    """
    return tensor.normal_(0.0, std).clamp_(-bound, bound)


def fan_in_std(weight: torch.Tensor) -> float:
    """``1 / sqrt(fan_in)`` of a ``[out, in, *kernel]`` weight (flax's ``lecun_normal``)."""
    return float(weight[0].numel()) ** -0.5


def init_dense(layer: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Embedding, std: float | None = None) -> None:
    """Truncated-normal weight (std ``std``, default ``1 / sqrt(fan_in)``), zero bias."""
    trunc_normal_(layer.weight, std=fan_in_std(layer.weight) if std is None else std)
    bias = getattr(layer, "bias", None)
    if bias is not None:
        nn.init.zeros_(bias)


def init_norm(norm: nn.LayerNorm) -> None:
    """LayerNorm as the identity: scale one, shift zero."""
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="none")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": gelu_exact,
    "relu": F.relu,
}


# The fast path computes capped attention in query chunks of at most this many logits
# (2^25: 128 MB in float32), so memory grows linearly, not quadratically, with the sequence
# (the LvT auxiliary layers attend over all T x N tokens: 12.9 GB of logits at 64 frames).
LOGITS_BUDGET = 1 << 25

AttnImpl = Literal["fast", "reference", "flex"]
ATTN_IMPLS: tuple[str, ...] = ("fast", "reference", "flex")


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (all with bias).

    Three implementations of the same arithmetic, chosen by ``impl`` (set for a whole
    model with :meth:`VideoPrism.set_attn_impl`):

    * ``"reference"``: the official order of operations, one op at a time; the
      parity reference.
    * ``"fast"`` (default): one matmul for the q/k/v projections (their weights
      concatenated at call time, so the parameters and every checkpoint format stay
      as they are); with a logit cap, the ``1 / cap`` folded into the query scale
      and the cap applied in place (no extra ``L x L`` buffers); without a cap
      (the MAP pooler), PyTorch's fused ``scaled_dot_product_attention``. Equal to
      the reference within float32 rounding (tests: 1e-5). Long sequences are processed
      in query chunks of at most :data:`LOGITS_BUDGET` logits, so memory stays linear in
      the sequence length.
    * ``"flex"``: as ``"fast"``, but capped attention runs as one compiled FlexAttention
      kernel (:mod:`open_videoprism.models.flex`); pays a compilation per new shape,
      so it is for fixed-shape inference.

    Args:
        dim: input (and output) width.
        num_heads: number of heads.
        hidden_dim: total q/k/v width (``num_heads * head_dim``); ``dim`` by default.
        logit_cap: tanh soft-cap of the logits; 0 disables it.
        per_dim_scale: learn a per-dimension query scale (MAP head) instead of
            the fixed ``head_dim ** -0.5``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden_dim: int | None = None,
        logit_cap: float = 0.0,
        per_dim_scale: bool = False,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or dim
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.logit_cap = float(logit_cap)
        self.impl: AttnImpl = "fast"
        self.q = nn.Linear(dim, hidden_dim)
        self.k = nn.Linear(dim, hidden_dim)
        self.v = nn.Linear(dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, dim)
        if per_dim_scale:
            self.per_dim_scale = nn.Parameter(torch.zeros(self.head_dim))
        else:
            self.register_parameter("per_dim_scale", None)
        self.init_weights()

    def init_weights(self) -> None:
        # The official [D, heads, head_dim] kernels: flax's fan-in is D * heads.
        std = (self.q.in_features * self.num_heads) ** -0.5
        for layer in (self.q, self.k, self.v, self.out):
            init_dense(layer, std)
        if self.per_dim_scale is not None:
            nn.init.zeros_(self.per_dim_scale)  # softplus(0) * 1.442695041 = 1: the plain 1/sqrt(head_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _query_scale(self, dtype: torch.dtype) -> torch.Tensor | float:
        if self.per_dim_scale is not None:
            return ((_R_SOFTPLUS_0 / math.sqrt(self.head_dim)) * F.softplus(self.per_dim_scale)).to(dtype)
        return self.head_dim**-0.5

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attend from ``x`` [B, T, D] to ``context`` [B, S, D] (``x`` if None).

        ``key_mask`` [B, S] bool, True where the key is a valid token.
        """
        if self.impl == "reference":
            return self._forward_reference(x, context, key_mask, causal)
        return self._forward_fast(x, context, key_mask, causal)

    def _forward_reference(
        self, x: torch.Tensor, context: torch.Tensor | None, key_mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self._split(self.q(x)), self._split(self.k(context)), self._split(self.v(context))
        q = q * self._query_scale(q.dtype)
        logits = q @ k.transpose(-1, -2)
        if self.logit_cap > 0:
            logits = self.logit_cap * torch.tanh(logits / self.logit_cap)
        if key_mask is not None or causal:
            logits = logits.float()  # the official mask value needs the float32 range
            if key_mask is not None:
                logits = logits.masked_fill(~key_mask[:, None, None, :], _MASK_VALUE)
            if causal:
                t, s = logits.shape[-2:]
                future = torch.ones(t, s, dtype=torch.bool, device=logits.device).triu(1)
                logits = logits.masked_fill(future, _MASK_VALUE)
        # Softmax in float32 as the official code; the fused upcast avoids a copy.
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(v.dtype)
        out = (probs @ v).transpose(1, 2).flatten(2)
        return self.out(out)

    def _project(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as ``[B, H, L, Dh]`` views of one (self-attention) or two (cross) matmul outputs."""
        h, dh = self.num_heads, self.head_dim
        if context is None:
            w = torch.cat((self.q.weight, self.k.weight, self.v.weight))
            b = torch.cat((self.q.bias, self.k.bias, self.v.bias))
            q, k, v = F.linear(x, w, b).unflatten(-1, (3, h, dh)).permute(2, 0, 3, 1, 4).unbind(0)
            return q, k, v
        w = torch.cat((self.k.weight, self.v.weight))
        b = torch.cat((self.k.bias, self.v.bias))
        k, v = F.linear(context, w, b).unflatten(-1, (2, h, dh)).permute(2, 0, 3, 1, 4).unbind(0)
        return self._split(self.q(x)), k, v

    def _capped_rows(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, causal: bool, first: int
    ) -> torch.Tensor:
        """Capped attention of query rows ``first .. first + len(q)`` (``q`` already scaled by ``1 / cap``)."""
        logits = (q @ k.transpose(-1, -2)).tanh_()  # the matmul's backward does not need its output
        # tanh's backward needs its output: scale in place only when no gradient flows.
        logits = logits * self.logit_cap if logits.requires_grad else logits.mul_(self.logit_cap)
        if key_mask is not None or causal:
            if logits.dtype == torch.float16:
                logits = logits.float()  # the official mask value overflows float16 (bf16 has float32's range)
            if key_mask is not None:
                logits.masked_fill_(~key_mask[:, None, None, :], _MASK_VALUE)
            if causal:
                t, s = logits.shape[-2:]
                query = torch.arange(first, first + t, device=q.device)
                logits.masked_fill_(query[:, None] < torch.arange(s, device=q.device)[None, :], _MASK_VALUE)
        if logits.dtype == v.dtype:
            # Half-precision softmax kernels accumulate in float32 and round once: the probabilities of the
            # reference's float32 softmax cast back (bit-identical on the CPU), without its float32 [L, S] copy
            # (7x faster for B's spatial logits in bf16).
            probs = torch.softmax(logits, dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(v.dtype)
        return probs @ v

    def _forward_fast(
        self, x: torch.Tensor, context: torch.Tensor | None, key_mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        q, k, v = self._project(x, context)
        t, s = q.shape[-2], k.shape[-2]
        if self.logit_cap > 0 and self.impl == "flex":
            from open_videoprism.models.flex import capped_flex_attention

            out = capped_flex_attention(q, k, v, self.head_dim**-0.5, self.logit_cap, key_mask, causal)
        elif self.logit_cap > 0:
            # cap * tanh((q . k) * scale / cap): the 1/cap rides on the [L, Dh] query, not the [L, S] logits.
            q = q * (self._query_scale(q.dtype) / self.logit_cap)
            b, h = q.shape[:2]
            rows = max(1, LOGITS_BUDGET // (b * h * s))
            if rows >= t:
                out = self._capped_rows(q, k, v, key_mask, causal, 0)
            else:  # long sequences: query rows in chunks, so the logits never exceed the budget
                out = q.new_empty(b, h, t, v.shape[-1])
                for i in range(0, t, rows):
                    out[:, :, i : i + rows] = self._capped_rows(q[:, :, i : i + rows], k, v, key_mask, causal, i)
        else:
            # No cap: the fused kernel. An additive mask of the official finite value gives the same
            # probabilities as masked_fill (logit + 2.4e38 rounds to 2.4e38), fully masked rows included.
            bias = None
            if key_mask is not None or causal:
                bias = torch.zeros(key_mask.shape[0] if key_mask is not None else 1, 1, t, s, dtype=q.dtype, device=q.device)
                if key_mask is not None:
                    bias.masked_fill_(~key_mask[:, None, None, :], _MASK_VALUE)
                if causal:
                    bias.masked_fill_(torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1), _MASK_VALUE)
            scale = self._query_scale(q.dtype)
            if isinstance(scale, torch.Tensor):
                q, scale = q * scale, 1.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
        return self.out(out.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    """Dense -> activation -> Dense."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = ACTIVATIONS[activation]
        self.init_weights()

    def init_weights(self) -> None:
        init_dense(self.fc1)
        init_dense(self.fc2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.fc1(x))
        if keep is not None:  # official: zero padded tokens after each dense layer
            h = h * keep
        h = self.fc2(h)
        if keep is not None:
            h = h * keep
        return h


class Block(nn.Module):
    """One transformer layer: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``.

    ``norm_policy="primer_hybrid"`` (giant text tower) adds a LayerNorm after
    each sub-block too.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: str = "gelu",
        logit_cap: float = 0.0,
        norm_policy: NormPolicy = "pre",
    ) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads, logit_cap=logit_cap)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, mlp_dim, activation)
        self.hybrid = norm_policy == "primer_hybrid"
        if self.hybrid:
            self.post_norm1 = layer_norm(dim)
            self.post_norm2 = layer_norm(dim)
        self.init_weights()

    def init_weights(self) -> None:
        """Norms the identity (the sub-layers initialise themselves)."""
        for m in self.children():
            if isinstance(m, nn.LayerNorm):
                init_norm(m)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        h = self.attn(self.norm1(x), key_mask=key_mask, causal=causal)
        if self.hybrid:
            h = self.post_norm1(h)
        x = x + h
        keep = None if key_mask is None else key_mask[..., None].to(x.dtype)
        h = self.mlp(self.norm2(x), keep)
        if self.hybrid:
            h = self.post_norm2(h)
        return x + h


class Transformer(nn.Module):
    """A stack of :class:`Block` with optional activation checkpointing."""

    def __init__(
        self,
        depth: int,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: str = "gelu",
        logit_cap: float = 0.0,
        norm_policy: NormPolicy = "pre",
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_dim, activation, logit_cap, norm_policy) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, key_mask, self.causal, use_reentrant=False)
            else:
                x = block(x, key_mask, self.causal)
        return x


class AttentionPool(nn.Module):
    """Multi-head attention pooling (MAP): learned queries attend to the tokens.

    Returns ``[B, num_queries, dim]`` after a LayerNorm. The official pooler has
    no logit cap, no residual and no MLP; queries use a per-dim scale.
    """

    def __init__(
        self, dim: int, num_heads: int, hidden_dim: int | None = None, num_queries: int = 1
    ) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(num_queries, dim))
        self.attn = Attention(dim, num_heads, hidden_dim=hidden_dim, per_dim_scale=True)
        self.norm = layer_norm(dim)
        self.init_weights()

    def init_weights(self) -> None:
        trunc_normal_(self.query, std=self.query.shape[-1] ** -0.5)  # unit-norm queries, as timm's latent pool
        init_norm(self.norm)

    def no_weight_decay(self) -> set[str]:
        return {"query"}

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.query.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        return self.norm(self.attn(q, tokens, key_mask=key_mask))


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Official ``_l2_normalize``: ``x / sqrt(sum(x^2) + eps)`` computed in float32."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().sum(-1, keepdim=True) + eps)).to(x.dtype)
