"""Transforms: shapes, exactness, determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from open_videoprism.data import VideoTransform, center_crop, hflip, random_resized_crop_params, resize_short_side


def _frames(t=4, h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_resize_short_side_and_center_crop():
    v = torch.rand(2, 3, 40, 80)
    r = resize_short_side(v, 20)
    assert r.shape == (2, 3, 20, 40)
    c = center_crop(torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).reshape(2, 3, 6, 8), 4)
    assert c.shape == (2, 3, 4, 4) and c[0, 0, 0, 0].item() == 1 * 8 + 2
    with pytest.raises(ValueError):
        center_crop(v, 50)


def test_hflip_mirrors():
    v = torch.arange(6, dtype=torch.float32).reshape(1, 1, 1, 6)
    assert hflip(v).flatten().tolist() == [5, 4, 3, 2, 1, 0]


def test_eval_transform_is_official_resize_for_square_input():
    f = _frames(h=64, w=64)
    out = VideoTransform(size=32)(f)
    ref = torch.nn.functional.interpolate(torch.as_tensor(f).permute(0, 3, 1, 2).float() / 255, size=(32, 32),
                                          mode="bilinear", align_corners=False, antialias=True)
    assert out.shape == (4, 3, 32, 32)
    torch.testing.assert_close(out, ref.clamp(0, 1))
    # Identity when already the right size: exactly the pixels /255.
    same = VideoTransform(size=64)(f)
    torch.testing.assert_close(same, torch.as_tensor(f).permute(0, 3, 1, 2).float() / 255)


def test_training_transform_deterministic_under_seed():
    f = _frames()
    tr = VideoTransform(size=32, training=True, hflip=True)
    a = tr(f, np.random.default_rng(123))
    b = tr(f, np.random.default_rng(123))
    c = tr(f, np.random.default_rng(124))
    assert a.shape == (4, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError):
        tr(f)  # training randomness must be explicit


def test_random_resized_crop_params_respect_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(60, 80, (0.5, 1.0), (3 / 4, 4 / 3), rng)
        assert top >= 0 and top + h <= 60 and left >= 0 and left + w <= 80
        assert 0.45 * 4800 <= h * w <= 4800 * 1.0 + 80


def test_same_crop_for_all_frames():
    f = np.repeat(_frames(t=1), 3, axis=0)
    out = VideoTransform(size=16, training=True)(f, np.random.default_rng(5))
    torch.testing.assert_close(out[0], out[2])
