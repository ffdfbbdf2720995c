"""Spatial transforms of video clips (the same transform for every frame of a clip).

Functions work on float ``[T, C, H, W]`` tensors (values in [0, 1]); the
:class:`VideoTransform` pipeline takes decoded uint8 ``[T, H, W, 3]`` frames,
crops *before* converting to float (less work) and resizes once with
antialiased bilinear interpolation. Randomness comes from an explicit
:class:`numpy.random.Generator`, so the result is a pure function of the frames
and the generator's seed.

Evaluation follows the official preprocessing for square videos (resize to
``size x size``); for other aspect ratios it resizes the short side and
centre-crops, like the official classification colab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _resize(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if video.shape[-2:] == (height, width):
        return video
    # antialias matters when shrinking (e.g. 512 -> 288): without it thin
    # edges alias, and the official pipeline (PIL Lanczos) is antialiased.
    out = F.interpolate(video, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that ``min(H, W) == size``, keeping the aspect ratio."""
    h, w = video.shape[-2:]
    if h <= w:
        nh, nw = size, max(1, int(round(w * size / h)))
    else:
        nh, nw = max(1, int(round(h * size / w))), size
    return _resize(video, nh, nw)


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window (the video must be at least that large)."""
    h, w = video.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot center-crop {size}x{size} from {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return video[..., top : top + size, left : left + size]


def hflip(video: torch.Tensor) -> torch.Tensor:
    """Mirror left-right."""
    return video.flip(-1)


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop covering ``scale`` of the area with aspect in ``ratio``.

    Same algorithm as torchvision's ``RandomResizedCrop.get_params`` (10
    tries, then the largest centred crop in the ratio range), with a numpy
    generator.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` in [0, 1]."""
    t = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    return t.permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class VideoTransform:
    """Decoded uint8 frames -> float ``[T, 3, size, size]`` in [0, 1].

    Training (``training=True``): random resized crop (``crop_scale`` of the
    area, aspect 3/4..4/3) when ``random_resized_crop``, else resize-short-side
    + random crop; optional horizontal flip with probability 0.5. Evaluation:
    resize short side + centre crop.
    """

    size: int
    training: bool = False
    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = False

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames [T, H, W, 3], got shape {tuple(frames.shape)}")
        h, w = int(frames.shape[1]), int(frames.shape[2])
        if self.training and rng is None:
            raise ValueError("a training transform needs a numpy Generator for its randomness")
        if self.training and self.random_resized_crop:
            assert rng is not None
            top, left, ch, cw = random_resized_crop_params(h, w, self.crop_scale, self.crop_ratio, rng)
            video = _resize(to_float(frames[:, top : top + ch, left : left + cw]), self.size, self.size)
        elif self.training:
            assert rng is not None
            side = min(h, w)
            top = int(rng.integers(0, h - side + 1))
            left = int(rng.integers(0, w - side + 1))
            video = _resize(to_float(frames[:, top : top + side, left : left + side]), self.size, self.size)
        else:
            # Crop the central square first, then one resize: equal to
            # resize-short-side + centre crop up to rounding, and cheaper.
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            video = _resize(to_float(frames[:, top : top + side, left : left + side]), self.size, self.size)
        if self.training and self.hflip:
            assert rng is not None
            if rng.random() < 0.5:
                video = hflip(video)
        return video.contiguous()
