"""Why token shuffling exists: a small, real training experiment.

The token-wise decoder is asked to reproduce, at every slot, the token that
belongs to that slot. On visible slots the answer is *in its input*. Without
the shuffle (tokens in canonical order, positions added) the decoder learns to
copy its input and drives the visible-token loss to ~0 -- a shortcut that
teaches the student nothing. With the paper's shuffle (each sample permuted,
positions added after the shuffle) slot ``i`` holds some other token, so the
only way to reproduce token ``i`` is to find it among the inputs by its
content; with contents that carry no position (random vectors here) that is
impossible and the loss stays near that of the best constant guess.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from open_videoprism.masks import RandomMaskGenerator, TokenGrid
from open_videoprism.models.decoders import DecoderConfig, TokenDecoder
from open_videoprism.objectives.distillation import cosine_distance

GRID = TokenGrid(2, 4, 4)  # 32 tokens
DIM = 32


def _train_copy_decoder(shuffle: bool, steps: int = 200, seed: int = 0) -> tuple[float, float]:
    """Train a small decoder on the visible-token loss; return the first step's and the final loss."""
    torch.manual_seed(seed)
    decoder = TokenDecoder(DIM, DIM, DecoderConfig(width=64, depth=2, num_heads=4, mlp_dim=128),
                           (GRID.frames, GRID.height, GRID.width), shuffle=shuffle)
    opt = torch.optim.AdamW(decoder.parameters(), lr=3e-3)
    masks = RandomMaskGenerator(0.5)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(steps):
        tokens = F.normalize(torch.randn(32, GRID.num_tokens, DIM, generator=gen), dim=-1)  # fresh every step
        idx = masks(32, GRID, gen)
        visible = torch.gather(tokens, 1, idx.visible[..., None].expand(-1, -1, DIM))
        pred, _ = decoder(visible, idx.visible, (GRID.frames, GRID.height, GRID.width), gen)
        pred_v = torch.gather(pred, 1, idx.visible[..., None].expand(-1, -1, DIM))
        loss = cosine_distance(pred_v, visible).mean()  # the target of slot i is token i
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history[0], sum(history[-20:]) / 20


def test_without_shuffle_the_decoder_copies_with_shuffle_it_cannot() -> None:
    first_plain, final_plain = _train_copy_decoder(shuffle=False)
    first_shuf, final_shuf = _train_copy_decoder(shuffle=True)
    # Both start near chance (random directions: cosine distance ~1).
    assert first_plain > 0.7 and first_shuf > 0.7
    # Canonical order: the identity shortcut is learned, the loss collapses.
    assert final_plain < 0.1, final_plain
    # Shuffled: no slot holds its own token; at best the mean of the visible
    # tokens (cosine ~ 1/sqrt(16) = 0.25 with each), so the loss stays high.
    assert final_shuf > 0.7, final_shuf
