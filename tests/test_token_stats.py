"""Token diagnostics of the reproduce report: within-clip similarity and frame-to-frame change."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from open_videoprism.eval.token_stats import token_stats


def test_identical_tokens_are_fully_similar_and_static() -> None:
    x = torch.randn(3, 1, 1, 8).expand(3, 1, 12, 8)
    s = token_stats(x, frames=3)
    assert s["within_clip_cos"] == pytest.approx(1.0, abs=1e-6) and s["frame_change"] == pytest.approx(0.0, abs=1e-6)


def test_orthogonal_tokens_and_a_changing_frame() -> None:
    # 4 one-hot tokens in 2 frames of 2 patches: pair cosines are 1 on the diagonal, 0 elsewhere -> 4/16.
    x = torch.eye(4)[None]
    s = token_stats(x, frames=2)
    assert s["within_clip_cos"] == pytest.approx(0.25) and s["frame_change"] == pytest.approx(1.0)
    # The pairwise definition, computed the long way on random tokens.
    y = torch.randn(5, 2, 6, 7)
    u = F.normalize(y.reshape(10, 6, 7), dim=-1)
    assert token_stats(y, 3)["within_clip_cos"] == pytest.approx((u @ u.transpose(1, 2)).mean().item(), abs=1e-6)
    frames = u.reshape(10, 3, 2, 7)
    expected = (1 - F.cosine_similarity(frames[:, 1:], frames[:, :-1], dim=-1)).mean().item()
    assert token_stats(y, 3)["frame_change"] == pytest.approx(expected, abs=1e-6)


def test_one_frame_has_no_change_and_bad_frames_raise() -> None:
    assert math.isnan(token_stats(torch.randn(2, 4, 3), 1)["frame_change"])
    with pytest.raises(ValueError, match="do not split into 3 frames"):
        token_stats(torch.randn(2, 4, 3), 3)
