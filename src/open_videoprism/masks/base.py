"""The token grid, the mask-generator interface and mask -> index conversion.

A mask generator draws, for a batch, which tokens of the ``T x H' x W'`` token
grid the student sees. Masks travel as two index tensors over the flat token
index ``t * N + n`` of docs/architecture.md:

* ``visible_idx`` ``[B, V]`` and ``masked_idx`` ``[B, M]``, both sorted
  ascending, disjoint, together a permutation of ``range(T * N)``.

Every generator masks *exactly* the same number of tokens in every sample (so
the index tensors are rectangular and the student's cost is fixed); the count
each one uses is given by :meth:`MaskGenerator.num_masked`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from open_videoprism.errors import ConfigError


@dataclass(frozen=True)
class TokenGrid:
    """The shape of a clip's token grid: ``frames x height x width`` patches."""

    frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if min(self.frames, self.height, self.width) < 1:
            raise ConfigError(f"token grid must be positive in every axis; got {self}")

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width

    @property
    def num_tokens(self) -> int:
        return self.frames * self.tokens_per_frame

    @classmethod
    def from_video(cls, video_shape: torch.Size | tuple[int, ...], patch_size: int) -> TokenGrid:
        """The grid of a ``[B, T, 3, H, W]`` video cut into ``patch_size`` patches."""
        if len(video_shape) != 5:
            raise ValueError(f"video must be [B, T, 3, H, W]; got shape {tuple(video_shape)}")
        t, h, w = video_shape[1], video_shape[3], video_shape[4]
        if h % patch_size or w % patch_size:
            raise ValueError(f"frame size {h}x{w} is not divisible by the patch size {patch_size}")
        return cls(t, h // patch_size, w // patch_size)


@dataclass
class MaskIndices:
    """One batch of masks as index tensors (see the module docstring)."""

    visible: torch.Tensor
    masked: torch.Tensor

    def to_mask(self, num_tokens: int) -> torch.Tensor:
        """Boolean ``[B, L]`` mask, True where the token is masked."""
        mask = torch.zeros(self.visible.shape[0], num_tokens, dtype=torch.bool, device=self.visible.device)
        return mask.scatter_(1, self.masked, True)


def mask_to_indices(mask: torch.Tensor) -> MaskIndices:
    """``[B, L]`` bool (True = masked, the same count in every row) -> sorted index tensors."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, L]; got shape {tuple(mask.shape)}")
    counts = mask.sum(-1)
    if counts.numel() and not bool((counts == counts[0]).all()):
        raise ValueError(f"masks have different masked counts per sample: {counts.tolist()}")
    m = int(counts[0]) if counts.numel() else 0
    # A stable sort of (masked as 1) puts the visible indices first, each group ascending.
    order = torch.sort(mask.to(torch.int8), dim=-1, stable=True).indices
    v = mask.shape[1] - m
    return MaskIndices(visible=order[:, :v].contiguous(), masked=order[:, v:].contiguous())


def check_ratio(ratio: float) -> float:
    """Validate a masking ratio: at least one token must stay visible."""
    ratio = float(ratio)
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio: the masked fraction must be in [0, 1) (one token stays visible), got {ratio}")
    return ratio


class MaskGenerator(ABC):
    """Draws exact-ratio masks for a whole batch at once (vectorised over the batch).

    Subclasses implement :meth:`sample_mask`. Randomness comes only from the
    ``torch.Generator`` passed in, so a seed fixes the masks.
    """

    #: the name used in configs (``mask.type``)
    name: str = ""

    def __init__(self, ratio: float) -> None:
        self.ratio = check_ratio(ratio)

    def num_masked(self, grid: TokenGrid) -> int:
        """Masked tokens per sample: ``round(ratio * T * N)``, always leaving one visible."""
        return min(round(self.ratio * grid.num_tokens), grid.num_tokens - 1)

    @abstractmethod
    def sample_mask(self, batch_size: int, grid: TokenGrid, generator: torch.Generator) -> torch.Tensor:
        """Boolean ``[B, T, H', W']``, True = masked, exactly :meth:`num_masked` per sample."""

    def __call__(
        self, batch_size: int, grid: TokenGrid, generator: torch.Generator | None = None
    ) -> MaskIndices:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        mask = self.sample_mask(batch_size, grid, generator)
        return mask_to_indices(mask.reshape(batch_size, grid.num_tokens))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def uniform_int(low: torch.Tensor | int, high: torch.Tensor | int, size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Integers uniform in ``[low, high]`` (inclusive, elementwise), as long."""
    low_t = torch.as_tensor(low, dtype=torch.float64)
    high_t = torch.as_tensor(high, dtype=torch.float64)
    u = torch.rand(size, generator=generator, dtype=torch.float64)
    return (low_t + torch.floor(u * (high_t - low_t + 1))).long().clamp(max=high_t.long())


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else 0


__all__ = [
    "MaskGenerator",
    "MaskIndices",
    "TokenGrid",
    "ceil_div",
    "check_ratio",
    "mask_to_indices",
    "uniform_int",
]

