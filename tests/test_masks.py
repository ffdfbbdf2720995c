"""Mask generators: exact ratios, documented structure, seeding, index tensors, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from open_videoprism.config import build
from open_videoprism.errors import ConfigError
from open_videoprism.masks import (
    BEVTMaskGenerator,
    MaskCollator,
    MaskConfig,
    RandomMaskGenerator,
    TokenGrid,
    TubeMaskGenerator,
    build_mask_generator,
    mask_to_indices,
)

GRIDS = [TokenGrid(4, 4, 4), TokenGrid(8, 16, 16), TokenGrid(16, 6, 10), TokenGrid(3, 5, 7)]
RATIOS = [0.0, 0.3, 0.65, 0.75, 0.9]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _all_generators(ratio: float) -> list:
    return [
        BEVTMaskGenerator(ratio),
        BEVTMaskGenerator(ratio, span_range=(0.5, 1.0)),
        TubeMaskGenerator(ratio),
        RandomMaskGenerator(ratio),
    ]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("ratio", RATIOS)
def test_every_generator_hits_its_exact_count(grid: TokenGrid, ratio: float) -> None:
    for gen in _all_generators(ratio):
        mask = gen.sample_mask(16, grid, _gen(1))
        assert mask.shape == (16, grid.frames, grid.height, grid.width) and mask.dtype == torch.bool
        counts = mask.flatten(1).sum(-1)
        expected = gen.num_masked(grid)
        assert (counts == expected).all(), (gen, counts.tolist(), expected)
        if isinstance(gen, TubeMaskGenerator):
            assert expected == grid.frames * round(ratio * grid.tokens_per_frame) or ratio * grid.tokens_per_frame > grid.tokens_per_frame - 1
        else:
            assert expected == min(round(ratio * grid.num_tokens), grid.num_tokens - 1)


def test_paper_ratio_is_exact_on_the_paper_grid() -> None:
    # 8 frames at 288 px, patch 18: 2048 tokens; 0.65 -> 1331 masked (1331/2048 = 0.6499).
    grid = TokenGrid(8, 16, 16)
    for gen in (BEVTMaskGenerator(0.65), BEVTMaskGenerator(0.65, (0.5, 1.0)), RandomMaskGenerator(0.65)):
        idx = gen(4, grid, _gen(0))
        assert idx.masked.shape == (4, 1331) and idx.visible.shape == (4, 717)
        assert abs(1331 / 2048 - 0.65) < 1 / 2048
    idx = TubeMaskGenerator(0.65)(4, grid, _gen(0))
    assert idx.masked.shape == (4, 8 * 166)  # round(0.65 * 256) = 166 per frame


def test_indices_are_sorted_disjoint_and_cover_every_token() -> None:
    grid = TokenGrid(4, 6, 6)
    for gen in _all_generators(0.65):
        idx = gen(8, grid, _gen(3))
        assert idx.visible.dtype == torch.long and idx.masked.dtype == torch.long
        both = torch.cat([idx.visible, idx.masked], dim=1).sort(dim=1).values
        assert torch.equal(both, torch.arange(grid.num_tokens).expand(8, -1))
        assert (idx.visible.diff(dim=1) > 0).all() and (idx.masked.diff(dim=1) > 0).all()
        # The boolean form agrees with the indices.
        m = idx.to_mask(grid.num_tokens)
        assert m.gather(1, idx.masked).all() and not m.gather(1, idx.visible).any()


def test_tube_masks_are_identical_in_every_frame() -> None:
    grid = TokenGrid(8, 6, 6)
    mask = TubeMaskGenerator(0.65).sample_mask(16, grid, _gen(0))
    assert torch.equal(mask, mask[:, :1].expand_as(mask))
    # ... and differ between samples.
    assert not torch.equal(mask[0], mask[1])


def _span_of(frame_has_mask: torch.Tensor) -> tuple[int, int]:
    """(start, length) of the cyclic run of True frames; asserts it is one contiguous run."""
    t = frame_has_mask.numel()
    length = int(frame_has_mask.sum())
    if length in (0, t):
        return 0, length
    starts = [i for i in range(t) if frame_has_mask[i] and not frame_has_mask[(i - 1) % t]]
    assert len(starts) == 1, f"masked frames are not one contiguous (cyclic) span: {frame_has_mask.tolist()}"
    return starts[0], length


@pytest.mark.parametrize("span_range", [(0.5, 1.0), (1.0, 1.0), (0.25, 0.5)])
def test_bevt_is_one_block_repeated_over_a_contiguous_span(span_range: tuple[float, float]) -> None:
    grid = TokenGrid(8, 12, 12)
    gen = BEVTMaskGenerator(0.4, span_range=span_range)
    masks = gen.sample_mask(32, grid, _gen(5))
    m_total = gen.num_masked(grid)
    need = math.ceil(m_total / grid.tokens_per_frame)
    lengths = set()
    for mask in masks:
        start, length = _span_of(mask.flatten(1).any(-1))
        lengths.add(length)
        lo = max(math.ceil(span_range[0] * grid.frames), need)
        assert lo <= length <= max(lo, math.floor(span_range[1] * grid.frames))
        span = [(start + j) % grid.frames for j in range(length)]
        block = mask[span].all(0)  # the block shared by every span frame
        assert int(block.sum()) == m_total // length
        extras = [mask[f] & ~block for f in span]
        # At most one extra cell, the same cell in each frame that has it, in the first frames.
        has = [bool(e.any()) for e in extras]
        assert all(int(e.sum()) <= 1 for e in extras)
        if length < grid.frames:
            assert has == sorted(has, reverse=True)  # the first frames of the span
        else:
            _span_of(torch.tensor(has))  # a full-clip span has no start: one cyclic run
        if any(has):
            first = extras[has.index(True)]
            assert all(torch.equal(e, first) for e, h in zip(extras, has) if h)
        outside = [f for f in range(grid.frames) if f not in span]
        assert not mask[outside].any()
    if span_range == (0.5, 1.0):
        assert len(lengths) > 1  # the span length really is random


def test_bevt_rectangles_are_rectangles() -> None:
    # One proposal whose area equals the target, square aspect: exactly one 4x4 square.
    grid = TokenGrid(1, 8, 8)
    gen = BEVTMaskGenerator(0.25, min_block=16 / 64, aspect_range=(1.0, 1.0))
    blocks = gen.sample_blocks(torch.full((20,), 16), grid, _gen(2))
    for b in blocks:
        rows = b.any(1).nonzero().flatten()
        cols = b.any(0).nonzero().flatten()
        assert int(b.sum()) == 16
        assert rows.numel() == 4 and cols.numel() == 4
        assert b[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    # Positions vary between samples.
    assert len({tuple(b.flatten().tolist()) for b in blocks}) > 1


def _boundary_per_masked_cell(mask: torch.Tensor) -> float:
    """Masked/visible 4-neighbour edges per masked cell, within frames (low = blocky)."""
    m = mask.float()
    edges = (m[..., 1:, :] != m[..., :-1, :]).sum() + (m[..., :, 1:] != m[..., :, :-1]).sum()
    return float(edges / m.sum())


def test_bevt_masks_are_blocky_and_random_masks_are_not() -> None:
    grid = TokenGrid(8, 16, 16)
    bevt = BEVTMaskGenerator(0.65).sample_mask(16, grid, _gen(0))
    rand = RandomMaskGenerator(0.65).sample_mask(16, grid, _gen(0))
    assert _boundary_per_masked_cell(bevt) < 0.5 * _boundary_per_masked_cell(rand)


def test_random_mask_is_uniform_over_positions() -> None:
    grid = TokenGrid(2, 4, 4)
    mask = RandomMaskGenerator(0.5).sample_mask(4000, grid, _gen(0)).float()
    freq = mask.mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 0.5), atol=0.04)
    # Frames are not tied together (unlike tube).
    assert not torch.equal(mask[:, 0], mask[:, 1])


@pytest.mark.parametrize("kind", ["bevt", "tube", "random"])
def test_masks_are_seeded_and_leave_global_rng_alone(kind: str) -> None:
    gen = build_mask_generator(MaskConfig(type=kind, ratio=0.65))
    grid = TokenGrid(4, 8, 8)
    state = torch.random.get_rng_state()
    a = gen(4, grid, _gen(7))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = gen(4, grid, _gen(7))
    c = gen(4, grid, _gen(8))
    assert torch.equal(a.visible, b.visible) and torch.equal(a.masked, b.masked)
    assert not torch.equal(a.masked, c.masked)


def test_collator_masks_depend_only_on_seed_and_sample_indices() -> None:
    gen = build_mask_generator(MaskConfig(type="bevt", ratio=0.65, span_range=(0.5, 1.0)))
    video = torch.zeros(3, 4, 3, 72, 72)

    def collate(seed: int, index: list[int], calls_before: int = 0) -> dict:
        c = MaskCollator(gen, patch_size=18, seed=seed)
        for _ in range(calls_before):  # e.g. another worker that has seen other batches
            c({"video": video, "index": torch.tensor([9, 9, 9])})
        return c({"video": video, "index": torch.tensor(index)})

    a = collate(0, [1, 2, 3])
    assert a["visible_idx"].shape == (3, 22) and a["masked_idx"].shape == (3, 42)
    b = collate(0, [1, 2, 3], calls_before=5)
    assert torch.equal(a["visible_idx"], b["visible_idx"])
    assert not torch.equal(a["masked_idx"], collate(1, [1, 2, 3])["masked_idx"])
    assert not torch.equal(a["masked_idx"], collate(0, [4, 2, 3])["masked_idx"])
    # Without indices, successive calls still differ.
    c = MaskCollator(gen, patch_size=18)
    x1 = c({"video": video})["masked_idx"]
    x2 = c({"video": video})["masked_idx"]
    assert not torch.equal(x1, x2)


def test_bad_inputs_fail_with_clear_errors() -> None:
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="ratio"):
            RandomMaskGenerator(ratio)
    with pytest.raises(ConfigError, match="type: unknown mask 'blocky'"):
        MaskConfig(type="blocky")
    with pytest.raises(ConfigError, match=r"mask: ratio: the masked fraction must be in \[0, 1\) .*got 1.0"):
        build(MaskConfig, [("mask", {"ratio": 1.0})], source="mask")
    with pytest.raises(ConfigError, match="mask: raito: unknown key"):
        build(MaskConfig, [("mask", {"ratio": 0.5, "raito": 0.5})])
    with pytest.raises(ConfigError, match="span_range"):
        BEVTMaskGenerator(0.5, span_range=(0.8, 0.4))
    with pytest.raises(ValueError, match="not divisible"):
        MaskCollator(TubeMaskGenerator(0.5), patch_size=18)({"video": torch.zeros(1, 4, 3, 70, 70)})
    with pytest.raises(KeyError, match="video"):
        MaskCollator(TubeMaskGenerator(0.5))({"index": torch.tensor([0])})
    with pytest.raises(ValueError, match="different masked counts"):
        mask_to_indices(torch.tensor([[True, False], [True, True]]))


def test_high_ratio_keeps_one_visible_token() -> None:
    grid = TokenGrid(1, 2, 2)
    for gen in _all_generators(0.99):
        idx = gen(4, grid, _gen(0))
        assert idx.visible.shape[1] >= 1
