"""Frame sampling and decoding: each strategy returns the right frames of a real video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import decoded_indices, index_frames, write_index_video
from open_videoprism.data import (
    DecodeError,
    VideoReader,
    multiclip_indices,
    random_clip_indices,
    read_video,
    sample_indices,
    time_range,
    uniform_indices,
)
from open_videoprism.data.decode import to_tensor

DEMO = Path(__file__).resolve().parent / "fixtures" / "water_bottle_drumming.mp4"


@pytest.fixture(scope="module")
def data_index_video(tmp_path_factory) -> Path:
    # 60 frames at 10 fps (6 s), a key frame every 8: wanted frames past 2 s are reached by seeking.
    return write_index_video(tmp_path_factory.mktemp("idx") / "index.mp4", n=60, fps=10.0, gop=8)


def test_index_video_roundtrip(data_index_video):
    with VideoReader(data_index_video) as r:
        assert r.num_frames == 60 and r.fps == pytest.approx(10.0)
        assert r.duration == pytest.approx(6.0)
        frames = r.get_frames(np.arange(60))
    assert frames.shape == (60, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(decoded_indices(frames), np.arange(60))


def test_get_frames_any_order_and_seek(data_index_video):
    want = [55, 3, 41, 41, 20, 59]
    with VideoReader(data_index_video) as r:
        np.testing.assert_array_equal(decoded_indices(r.get_frames(want)), want)
        # Far from the start: the reader seeks (time >= 2 s) and still lands exactly.
        np.testing.assert_array_equal(decoded_indices(r.get_frames([47, 48, 49])), [47, 48, 49])
        with pytest.raises(ValueError):
            r.get_frames([-1])


def test_uniform_matches_official_linspace(data_index_video):
    for n, t in [(60, 16), (60, 8), (7, 16), (100, 16)]:
        np.testing.assert_array_equal(uniform_indices(n, t), np.linspace(0, n, t, endpoint=False).astype(np.int32))
    frames = read_video(data_index_video, num_frames=16)
    np.testing.assert_array_equal(decoded_indices(frames), np.linspace(0, 60, 16, endpoint=False).astype(int))


def test_random_clip_stride_and_bounds(data_index_video):
    starts = set()
    for s in range(50):
        idx = random_clip_indices(60, 8, 3, np.random.default_rng(s))
        np.testing.assert_array_equal(np.diff(idx), 3)
        assert idx[0] >= 0 and idx[-1] <= 59
        starts.add(int(idx[0]))
    assert len(starts) > 10 and max(starts) <= 60 - 22  # span (8-1)*3+1 = 22
    # Same generator seed -> same clip; decoded frames are those indices.
    a = random_clip_indices(60, 8, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, random_clip_indices(60, 8, 3, np.random.default_rng(7)))
    np.testing.assert_array_equal(decoded_indices(read_video(data_index_video, a)), a)
    # Too short a video holds the last frame.
    np.testing.assert_array_equal(random_clip_indices(5, 4, 2, np.random.default_rng(0)), [0, 2, 4, 4])


def test_multiclip_covers_video(data_index_video):
    idx = multiclip_indices(60, 4, 2, 3)
    assert idx.shape == (3, 4)
    np.testing.assert_array_equal(idx[:, 0], [0, 26, 53])
    assert idx[-1, -1] == 59
    frames = read_video(data_index_video, idx.reshape(-1))
    np.testing.assert_array_equal(decoded_indices(frames).reshape(3, 4), idx)
    np.testing.assert_array_equal(sample_indices("multiclip", 60, 4, stride=2, num_clips=3), idx)


def test_time_range_clips(data_index_video):
    assert time_range(10.0, 60, 2.0, 3.5) == (20, 35)
    assert time_range(10.0, 60, None, None) == (0, 60)
    assert time_range(10.0, 60, 5.95, 9.0) == (59, 60)      # clamped, never empty
    first, stop = time_range(10.0, 60, 2.5, 4.5)
    idx = uniform_indices(stop - first, 8, offset=first)
    got = decoded_indices(read_video(data_index_video, idx))
    assert got.min() >= 25 and got.max() < 45
    np.testing.assert_array_equal(got, idx)


def test_images_are_one_frame_videos(tmp_path):
    from PIL import Image

    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :15] = (200, 10, 10)
    Image.fromarray(img).save(tmp_path / "a.png")
    with VideoReader(tmp_path / "a.png") as r:
        assert r.num_frames == 1 and r.is_image
    v = read_video(tmp_path / "a.png", num_frames=4)
    assert v.shape == (4, 20, 30, 3)
    np.testing.assert_array_equal(v[3], img)
    t = read_video(tmp_path / "a.png", num_frames=2, as_tensor=True)
    assert t.shape == (2, 3, 20, 30) and torch.allclose(t[0, 0, 0, 0], torch.tensor(200 / 255))


def test_to_tensor_layout():
    f = index_frames(3, 8)
    t = to_tensor(f)
    assert t.shape == (3, 3, 8, 8) and t.dtype == torch.float32
    assert t[2, 1, 0, 0].item() == pytest.approx(16 / 255)


def test_decode_errors_carry_reason(tmp_path):
    with pytest.raises(DecodeError) as e:
        VideoReader(tmp_path / "nope.mp4")
    assert e.value.reason == "missing" and "nope.mp4" in str(e.value)


def test_demo_clip_official_uniform_sampling():
    with VideoReader(DEMO) as r:
        assert (r.num_frames, r.width, r.height) == (100, 512, 512)
        assert r.fps == pytest.approx(12.0)
        all_frames = r.get_frames(np.arange(100))
    want = np.linspace(0, 100, 16, endpoint=False).astype(np.int32)
    np.testing.assert_array_equal(uniform_indices(100, 16), want)
    clip = read_video(DEMO, num_frames=16)
    # The frames sampled are exactly those frames of a full decode.
    np.testing.assert_array_equal(clip, all_frames[want])
    # And consecutive sampled frames differ (not one frame repeated).
    assert np.abs(clip[1:].astype(int) - clip[:-1].astype(int)).mean() > 1.0
