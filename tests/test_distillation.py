"""Stage-2 objective: teacher/student contract, shuffle, losses, ablation switches, export."""

from __future__ import annotations

import math

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.errors import ConfigError
from open_videoprism.masks import MaskConfig
from open_videoprism.models.decoders import DecoderConfig, TokenDecoder, shuffle_tokens
from open_videoprism.objectives import get_objective
from open_videoprism.objectives.distillation import (
    DistillationObjective,
    DistillationOptions,
    build_distillation,
    cosine_distance,
    instance_norm,
)

SMALL_DECODER = DecoderConfig(width=32, depth=1, num_heads=4, mlp_dim=64)


def _teacher(seed: int = 0) -> ovp.VideoPrism:
    torch.manual_seed(seed)
    return ovp.create_model("videoprism_lvt_test_tiny")


def _objective(**kw) -> DistillationObjective:
    kw.setdefault("decoder", SMALL_DECODER)
    return DistillationObjective(_teacher(), DistillationOptions(**kw))


def _batch(b: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.rand(b, 4, 3, 72, 72, generator=g), "index": torch.arange(b) + seed * b}


def test_cosine_distance_known_answers() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 1.0], [-2.0, 0.0], [1.0, 0.0], [6.0, 8.0]])
    expected = torch.tensor([1.0, 2.0, 1.0 - 1.0 / math.sqrt(2.0), 0.0])
    assert torch.allclose(cosine_distance(a, b), expected, atol=1e-6)
    # Scale-invariant and computed in float32 even for bf16 inputs.
    out = cosine_distance(a.bfloat16() * 7, b.bfloat16())
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-2)


def test_zero_ratio_without_shuffle_student_equals_teacher() -> None:
    obj = _objective(mask=MaskConfig(ratio=0.0), shuffle=False)
    batch = obj.collate_fn(_batch())
    assert batch["masked_idx"].shape == (2, 0) and batch["visible_idx"].shape == (2, 64)
    t_tokens, t_emb = obj.teacher_targets(batch["video"])
    s_tokens = obj.student_tokens(batch["video"], batch["visible_idx"])
    assert torch.allclose(s_tokens, t_tokens, atol=1e-5)
    assert t_emb is not None and t_emb.shape == (2, 64)
    # The decoder then sees the teacher's tokens in canonical order with no MASK token.
    full = obj.token_decoder.fill(s_tokens, batch["visible_idx"], 64)
    assert torch.allclose(full, t_tokens, atol=1e-5)


def test_shuffle_is_a_per_sample_permutation() -> None:
    x = torch.arange(3 * 50, dtype=torch.float32).view(3, 50, 1).expand(-1, -1, 4)
    y, perm = shuffle_tokens(x, torch.Generator().manual_seed(0))
    for b in range(3):
        assert torch.equal(perm[b].sort().values, torch.arange(50))
        assert torch.equal(y[b], x[b, perm[b]])
    assert not torch.equal(perm[0], perm[1]) and not torch.equal(perm[0], torch.arange(50))


def test_token_decoder_adds_positions_after_the_shuffle_and_predicts_canonical_order() -> None:
    torch.manual_seed(0)
    dec = TokenDecoder(16, 24, SMALL_DECODER, grid=(2, 3, 3), shuffle=True)
    tokens = torch.randn(2, 7, 16)
    visible = torch.stack([torch.randperm(18)[:7].sort().values for _ in range(2)])
    pred, perm = dec(tokens, visible, (2, 3, 3), torch.Generator().manual_seed(1))
    assert pred.shape == (2, 18, 24) and perm is not None
    # Reference: fill in canonical order, permute, add canonical positions, decode.
    full = dec.fill(tokens, visible, 18)
    shuffled = torch.gather(full, 1, perm[..., None].expand(-1, -1, 16))
    ref = dec.proj_out(dec.norm(dec.blocks(dec.proj_in(shuffled + dec.positions(2, 3, 3)))))
    assert torch.allclose(pred, ref, atol=1e-6)
    # Without the shuffle the same call keeps every token in its own slot.
    dec.shuffle = False
    pred0, perm0 = dec(tokens, visible, (2, 3, 3))
    ref0 = dec.proj_out(dec.norm(dec.blocks(dec.proj_in(full + dec.positions(2, 3, 3)))))
    assert perm0 is None and torch.allclose(pred0, ref0, atol=1e-6)


def test_local_loss_compares_against_teacher_tokens_in_canonical_order() -> None:
    obj = _objective()
    batch = obj.collate_fn(_batch())
    out = obj(batch, generator=torch.Generator().manual_seed(3))
    t_tokens, t_emb = obj.teacher_targets(batch["video"])
    s_tokens = obj.student_tokens(batch["video"], batch["visible_idx"])
    pred, perm = obj.token_decoder(s_tokens, batch["visible_idx"], (4, 4, 4), torch.Generator().manual_seed(3))
    assert perm is not None and not torch.equal(perm[0], torch.arange(64))
    assert torch.allclose(out["loss_local"], cosine_distance(pred, t_tokens).mean(), atol=1e-6)
    g = obj.global_decoder(s_tokens)
    assert torch.allclose(out["loss_global"], cosine_distance(g, t_emb).mean(), atol=1e-6)
    assert torch.allclose(out["loss"], out["loss_local"] + out["loss_global"])
    # The visible/masked split of the local loss averages back to it (22 visible, 42 masked).
    mix = (22 * out["loss_local_visible"] + 42 * out["loss_local_masked"]) / 64
    assert torch.allclose(mix, out["loss_local"], atol=1e-5)


def test_instance_normalised_targets() -> None:
    # Each clip's token targets have zero mean and unit variance per channel over the clip's tokens.
    x = torch.randn(2, 64, 8) * torch.linspace(0.5, 3.0, 8) + torch.randn(2, 1, 8) * 10
    y = instance_norm(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 8), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 8), atol=1e-3)
    # A part all of a clip's tokens share is not a target any more.
    assert torch.allclose(instance_norm(x + torch.randn(2, 1, 8) * 100), y, atol=1e-3)
    # The objective's local loss compares against those targets; the global target is untouched.
    obj = _objective(target_norm="instance")
    batch = obj.collate_fn(_batch())
    out = obj(batch, generator=torch.Generator().manual_seed(3))
    t_tokens, t_emb = obj.teacher_targets(batch["video"])
    s_tokens = obj.student_tokens(batch["video"], batch["visible_idx"])
    pred, _ = obj.token_decoder(s_tokens, batch["visible_idx"], (4, 4, 4), torch.Generator().manual_seed(3))
    assert torch.allclose(out["loss_local"], cosine_distance(pred, instance_norm(t_tokens)).mean(), atol=1e-6)
    assert not torch.allclose(out["loss_local"], cosine_distance(pred, t_tokens).mean(), atol=1e-3)
    assert torch.allclose(out["loss_global"], cosine_distance(obj.global_decoder(s_tokens), t_emb).mean(), atol=1e-6)
    with pytest.raises(ConfigError, match="target_norm"):
        DistillationOptions(target_norm="layer")


def test_teacher_is_frozen_and_never_changes() -> None:
    obj = _objective()
    before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    student_before = obj.student.encoder.patch_embed.weight.clone()
    params = [p for p in obj.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in obj.teacher.parameters())
    assert {id(p) for p in params}.isdisjoint({id(p) for p in obj.teacher.parameters()})
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    obj.train()
    assert not obj.teacher.training and obj.student.training
    for step in range(3):
        out = obj(obj.collate_fn(_batch(seed=step)))
        opt.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in obj.teacher.parameters())
        opt.step()
    for k, v in obj.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(obj.student.encoder.patch_embed.weight, student_before)


def test_ablation_switches() -> None:
    obj = _objective(global_distillation=False, shuffle=False, mask=MaskConfig(type="tube", ratio=0.5))
    assert obj.global_decoder is None and not obj.token_decoder.shuffle
    out = obj(obj.collate_fn(_batch()))
    assert "loss_global" not in out and torch.equal(out["loss"], out["loss_local"])
    assert obj.collate_fn(_batch())["masked_idx"].shape == (2, 4 * 8)
    weighted = _objective(local_weight=0.5, global_weight=2.0)
    out = weighted(weighted.collate_fn(_batch()), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out["loss"], 0.5 * out["loss_local"] + 2.0 * out["loss_global"])


def test_global_head_starts_from_the_teacher_map_head() -> None:
    obj = _objective()
    for k, v in obj.teacher.pooler.state_dict().items():
        assert torch.equal(obj.global_decoder.pool.state_dict()[k], v)


def test_encoder_only_teacher_needs_global_off() -> None:
    torch.manual_seed(0)
    teacher = ovp.create_model("videoprism_test_tiny")
    with pytest.raises(ConfigError, match="MAP head"):
        DistillationObjective(teacher, DistillationOptions(decoder=SMALL_DECODER))
    obj = DistillationObjective(teacher, DistillationOptions(decoder=SMALL_DECODER, global_distillation=False))
    assert "loss_global" not in obj(_batch())  # masks drawn in forward when the batch has none


def test_bf16_teacher() -> None:
    obj = _objective(teacher_dtype="bf16")
    assert obj.teacher.dtype == torch.bfloat16 and obj.student.dtype == torch.float32
    out = obj(obj.collate_fn(_batch()))
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
    out["loss"].backward()


def test_student_compute_follows_the_visible_tokens() -> None:
    """The factorized student packs visible tokens: at 0.65 with the default
    (full-span BEVT) mask both stages process ~35% of the full token count."""
    obj = _objective()
    seen: dict[str, int] = {}

    def hook(name):
        def fn(module, args):
            seen[name] = args[0].shape[0] * args[0].shape[1]  # rows x padded length
        return fn

    enc = obj.student.encoder
    enc.spatial.register_forward_pre_hook(hook("spatial"))
    enc.temporal.register_forward_pre_hook(hook("temporal"))
    batch = obj.collate_fn(_batch(b=4))
    obj.student_tokens(batch["video"], batch["visible_idx"])
    full = 4 * 64
    assert seen["spatial"] <= 0.45 * full and seen["temporal"] <= 0.45 * full, seen


def test_export_is_an_encoder_checkpoint_ovp_load_reads(tmp_path) -> None:
    obj = _objective()
    model = obj.export_model()
    assert model.pooler is None and model.text is None
    path = ovp.save_checkpoint(tmp_path / "model.safetensors", model.state_dict(), model.cfg)
    loaded = ovp.load(path)
    video = _batch()["video"]
    assert torch.allclose(loaded.encode_video(video).tokens, model.eval().encode_video(video).tokens, atol=1e-6)


def test_registry_options_and_builder(tmp_path) -> None:
    entry = get_objective("distillation")
    assert entry.options is DistillationOptions
    from open_videoprism.train.config import TrainConfig, objective_options

    def parse(section: dict):
        return objective_options(TrainConfig(objective={"name": "distillation", **section}))

    opts = parse({"shuffle": False, "mask": {"type": "tube", "ratio": 0.75},
                  "decoder": {"width": 32, "depth": 1, "num_heads": 4, "mlp_dim": 64}})
    assert opts.shuffle is False and opts.mask.type == "tube" and opts.mask.ratio == 0.75
    with pytest.raises(ConfigError, match="shufle"):
        parse({"shufle": False})
    teacher = _teacher()
    ckpt = ovp.save_checkpoint(tmp_path / "teacher.safetensors", teacher.state_dict(), teacher.cfg)
    with pytest.raises(ConfigError, match="--teacher"):
        build_distillation(opts, train_config=None, teacher=None)
    cfg = TrainConfig()
    cfg.data.num_frames, cfg.data.image_size = 2, 36
    obj = build_distillation(opts, train_config=cfg, teacher=str(ckpt))
    assert obj.token_decoder.grid == (2, 2, 2)  # decoder positions sized for the training clips
    assert obj.collate_fn.generator.name == "tube" and not obj.token_decoder.shuffle
    for k, v in teacher.encoder.state_dict().items():
        assert torch.equal(obj.student.encoder.state_dict()[k], v), k


def test_student_hold_keeps_the_student_bit_identical_while_the_decoders_learn() -> None:
    """``student_hold_steps``: the engine's per-group schedule gives the student lr 0 until the hold
    ends (AdamW then changes nothing, weight decay included), the decoders train from step 0."""
    from open_videoprism.optim import set_group_lrs

    obj = DistillationObjective(_teacher(), DistillationOptions(decoder=SMALL_DECODER), student_hold_steps=2)
    groups = obj.param_groups(0.1)
    assert [g["start_step"] for g in groups if g["name"].startswith("student_")] == [2, 2]
    student_ids = {id(p) for p in obj.student.parameters()}
    assert student_ids == {id(p) for g in groups if g["name"].startswith("student_") for p in g["params"]}
    assert all(g.get("start_step", 0) == 0 for g in groups if not g["name"].startswith("student_"))
    opt = torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1)
    student0 = {k: v.clone() for k, v in obj.student.state_dict().items()}
    decoder0 = {k: v.clone() for k, v in obj.token_decoder.state_dict().items()}
    obj.train()
    for step in range(3):
        base = set_group_lrs(opt, step, total_steps=6, warmup_steps=2, decay="cosine")
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        assert lrs["decay"] == pytest.approx(1e-2 * base)
        # held at 0, then the student's own warmup starts at step 2 (1/2 of its peak)
        assert lrs["student_decay"] == (0.0 if step < 2 else pytest.approx(1e-2 * 0.5))
        out = obj(obj.collate_fn(_batch(seed=step)))
        opt.zero_grad()
        out["loss"].backward()
        assert obj.student.encoder.patch_embed.weight.grad is not None  # moments still follow it
        opt.step()
        same = all(torch.equal(v, student0[k]) for k, v in obj.student.state_dict().items())
        assert same == (step < 2), f"step {step}: student {'changed' if not same else 'unchanged'}"
        assert any(not torch.equal(v, decoder0[k]) for k, v in obj.token_decoder.state_dict().items())


def test_student_hold_is_a_checked_fraction_of_the_steps(tmp_path) -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="student_hold"):
            DistillationOptions(student_hold=bad)
    from open_videoprism.train.config import TrainConfig

    teacher = _teacher()
    ckpt = ovp.save_checkpoint(tmp_path / "teacher.safetensors", teacher.state_dict(), teacher.cfg)
    opts = DistillationOptions(decoder=SMALL_DECODER, student_hold=1 / 3)
    for steps, hold in ((1500, 500), (9, 3), (2, 1), (1, 0)):  # scales with steps=; the student trains >= 1 step
        obj = build_distillation(opts, train_config=TrainConfig(steps=steps), teacher=str(ckpt))
        assert obj.student_hold_steps == hold, steps
    # without a hold the groups are the plain two (earlier runs' optimiser states still resume)
    assert [g["name"] for g in _objective().param_groups(0.1)] == ["decay", "no_decay"]
