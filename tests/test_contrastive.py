"""Stage-1 objective: InfoNCE against a direct reference, tube dropping, temperature, images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import open_videoprism as ovp
from open_videoprism.errors import ConfigError
from open_videoprism.objectives.contrastive import ContrastiveObjective, ContrastiveOptions
from open_videoprism.objectives.loss import info_nce
from open_videoprism.train.config import load_config


def reference_info_nce(v: torch.Tensor, t: torch.Tensor, scale: float) -> torch.Tensor:
    """The CLIP loss written out term by term, in float64."""
    v, t = v.double(), t.double()
    n = v.shape[0]
    total = 0.0
    for i in range(n):
        row = torch.stack([scale * (v[i] * t[j]).sum() for j in range(n)])
        col = torch.stack([scale * (t[i] * v[j]).sum() for j in range(n)])
        total = total + (-row[i] + torch.logsumexp(row, 0)) + (-col[i] + torch.logsumexp(col, 0))
    return total / (2 * n)


def test_info_nce_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(7, 16, generator=g), dim=-1)
    t = F.normalize(torch.randn(7, 16, generator=g), dim=-1)
    for scale in (1.0, 14.2857, 100.0):
        loss, logits = info_nce(v, t, scale)
        assert logits.shape == (7, 7)
        torch.testing.assert_close(loss.double(), reference_info_nce(v, t, scale), rtol=1e-5, atol=1e-5)


def test_info_nce_perfect_pairs_and_shape_errors() -> None:
    e = torch.eye(5)
    loss, _ = info_nce(e, e, 100.0)
    assert float(loss) < 1e-6  # positives at cos 1, negatives at 0, scale 100
    with pytest.raises(ValueError, match="both be"):
        info_nce(torch.randn(4, 8), torch.randn(5, 8), 1.0)


@pytest.mark.parametrize("ratio,keep", [(0.5, 8), (0.75, 4), (0.9, 2)])
def test_tube_dropping_keeps_exact_ratio_same_positions_every_frame(ratio: float, keep: int) -> None:
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=ratio))
    b, t, patches = 3, 4, 16  # 72 px frames, 18 px patches
    torch.manual_seed(1)
    vis = obj.train().visible_tokens(torch.zeros(b, t, 3, 72, 72))
    assert vis is not None and vis.shape == (b, t * keep) and vis.dtype == torch.long
    frames, pos = vis // patches, vis % patches
    for i in range(b):
        per_frame = pos[i].view(t, keep)
        assert (per_frame == per_frame[0]).all(), "a tube keeps the same positions in every frame"
        assert (frames[i].view(t, keep) == torch.arange(t)[:, None]).all(), "time-major layout"
        assert len(set(per_frame[0].tolist())) == keep, "no duplicates"
        assert torch.equal(per_frame[0], per_frame[0].sort().values)
    torch.manual_seed(1)  # drawn from the global RNG, which training checkpoints capture
    assert torch.equal(obj.visible_tokens(torch.zeros(b, t, 3, 72, 72)), vis)
    assert obj.eval().visible_tokens(torch.zeros(b, t, 3, 72, 72)) is None


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_tube_dropping_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(ConfigError):
        ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=ratio))


def _batch(b: int = 4, t: int = 4, size: int = 72, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1000, (b, 12), generator=g)
    pads = torch.zeros(b, 12)
    pads[:, 9:] = 1
    return {"video": torch.rand(b, t, 3, size, size, generator=g), "text_ids": ids * (1 - pads.long()), "text_paddings": pads}


def test_objective_drops_tokens_in_training_only(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=0.5))
    seen: list[torch.Tensor | None] = []
    orig = obj.model.encode_video

    def spy(video, **kw):
        seen.append(kw.get("visible"))
        return orig(video, **kw)

    monkeypatch.setattr(obj.model, "encode_video", spy)
    batch = _batch()
    obj.train()
    out = obj(batch)
    assert seen[-1] is not None and seen[-1].shape == (4, 4 * 8)  # 16 patches -> 8 kept, 4 frames
    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    obj.eval()
    obj(batch)
    assert seen[-1] is None
    # The objective's loss is InfoNCE of the model's own embeddings.
    with torch.no_grad():
        v = orig(batch["video"], frame_embeddings=False).embedding
        t = obj.model.encode_text(batch["text_ids"], batch["text_paddings"])
        ref = reference_info_nce(v, t, 1 / 0.07)
        torch.testing.assert_close(obj(batch)["loss"].double(), ref, rtol=1e-5, atol=1e-5)


def test_temperature_init_clamp_and_gradient() -> None:
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=0.0))
    assert math.isclose(float(obj.logit_scale.detach()), math.log(1 / 0.07), rel_tol=1e-6)
    out = obj.train()(_batch())
    out["loss"].backward()
    assert obj.logit_scale.grad is not None and float(obj.logit_scale.grad.abs()) > 0
    with torch.no_grad():
        obj.logit_scale.fill_(math.log(1000.0))
    assert float(obj.scale().detach()) == pytest.approx(100.0)
    assert float(obj(_batch())["temperature"]) == pytest.approx(0.01)


def test_images_as_one_frame_videos() -> None:
    torch.manual_seed(0)
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=0.5)).train()
    out = obj(_batch(b=3, t=1))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    # As the paper: the time table is cropped to its first row, so only that row gets a gradient.
    grad = obj.model.encoder.temporal_pos.grad
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0


def test_images_can_resize_the_time_table_like_official_inference() -> None:
    torch.manual_seed(0)
    opts = ContrastiveOptions(token_drop_ratio=0.0, crop_image_temporal_pos=False)
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), opts).train()
    obj(_batch(b=3, t=1))["loss"].backward()
    assert (obj.model.encoder.temporal_pos.grad.abs().sum(-1) > 0).all()  # a resize mixes every row


def test_crop_and_resize_agree_on_the_native_frame_count() -> None:
    model = ovp.create_model("videoprism_lvt_test_tiny")
    video = torch.rand(1, 4, 3, 72, 72)
    with torch.no_grad():
        a = model.encode_video(video).tokens
        b = model.encode_video(video, crop_temporal_pos=True).tokens
        c = model.encode_video(video[:, :1], crop_temporal_pos=True).tokens
        d = model.encode_video(video[:, :1]).tokens
    assert torch.equal(a, b)
    assert not torch.allclose(c, d)  # one frame: the first row vs the table's (antialiased) mean


def test_objective_needs_video_text_model_and_captions() -> None:
    with pytest.raises(ConfigError, match="video-text model"):
        ContrastiveObjective(ovp.create_model("videoprism_test_tiny"))
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"))
    with pytest.raises(KeyError, match="text_ids"):
        obj({"video": torch.rand(2, 4, 3, 72, 72)})


def test_bad_objective_option_fails_with_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["objective.token_drop=0.5"])
    msg = str(e.value)
    assert "\n" not in msg and "objective.token_drop" in msg and "token_drop_ratio" in msg
    with pytest.raises(ConfigError, match="objective.token_drop_ratio: Value .half. of type .str. could not be converted to Float"):
        load_config(None, ["objective.token_drop_ratio=half"])
    with pytest.raises(ConfigError, match="unknown objective 'clip'"):
        load_config(None, ["objective.name=clip"])
