"""The engine with any objective: schedules, param groups, accumulation, AGD streams, precision, hooks, outputs."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import open_videoprism as ovp
from open_videoprism.objectives.contrastive import ContrastiveObjective, ContrastiveOptions
from open_videoprism.optim import lr_factor, param_groups
from open_videoprism.train.config import load_config
from open_videoprism.train.data import AlternatingStream, RandomPairStream, interleave
from open_videoprism.train.engine import Trainer, TrainingDiverged, build_objective
from open_videoprism.train.logging import read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_schedules() -> None:
    assert [lr_factor(s, 12, 4, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(8, 12, 4, "linear") == pytest.approx(0.5) and lr_factor(12, 12, 4, "linear") == 0.0
    assert lr_factor(0, 10, 0, "cosine", 0.1) == 1.0 and lr_factor(10, 10, 0, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(5, 10, 0, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(7, 10, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown decay"):
        lr_factor(7, 10, 0, "step")


def test_param_groups_exclude_norms_biases_tables_queries_temperature() -> None:
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"))
    groups = {g["name"]: g for g in param_groups(obj, 0.1)}
    ids = {id(p): n for n, p in obj.named_parameters()}
    no_decay = {ids[id(p)] for p in groups["no_decay"]["params"]}
    decay = {ids[id(p)] for p in groups["decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    for name in ("logit_scale", "model.encoder.spatial_pos", "model.encoder.temporal_pos", "model.pooler.query", "model.text.cls"):
        assert name in no_decay, name
    assert all(not n.endswith(".bias") for n in decay)
    assert any(n.endswith("q.weight") for n in decay) and "model.encoder.patch_embed.weight" in decay
    assert "model.text.token_embed.weight" in decay
    assert not any("norm" in n for n in decay)
    assert len(no_decay) + len(decay) == sum(1 for _ in obj.parameters())


def test_interleave_and_alternating_stream_resume() -> None:
    assert list(itertools.islice(interleave([2, 1]), 6)) == [0, 1, 0, 0, 1, 0]
    assert list(itertools.islice(interleave([1, 1, 2]), 4)).count(2) == 2
    factories = [lambda s, seed=seed: RandomPairStream(2, num_frames=1, image_size=18, num_samples=4, seed=seed, state=s) for seed in (1, 2)]
    stream = AlternatingStream(factories, [2, 1], group=2)
    it = iter(stream)
    first = [next(it) for _ in range(5)]
    # Two micro-batches per step, all from one dataset: steps use datasets 0, 1, 0.
    assert [b["dataset"] for b in first] == [0, 0, 1, 1, 0]
    state = stream.state()
    expect = [next(it) for _ in range(4)]
    again = iter(AlternatingStream(factories, [2, 1], group=2, state=state))
    for a, b in zip(expect, (next(again) for _ in range(4))):
        assert a["dataset"] == b["dataset"] and torch.equal(a["video"], b["video"])


def _cfg(*extra: str):
    return load_config(CONFIGS / "stage1-tiny.yaml", ["batch_size=4", "log_every=1", "ckpt_every=100", "objective.token_drop_ratio=0.0", *extra])


def _stream(state, batch=4, samples=8):
    return RandomPairStream(batch, num_samples=samples, seed=2, state=state)


def test_run_folder_holds_config_metrics_checkpoints_and_final_model(tmp_path: Path) -> None:
    cfg = _cfg("steps=4", "log_every=2", "ckpt_every=2", "keep_last=1", "objective.token_drop_ratio=0.5")
    res = Trainer(cfg, build_objective(cfg), _stream, tmp_path, progress=False).fit()
    assert all(math.isfinite(v) for v in res.losses.values())
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 4]
    assert [r["loss"] for r in records] == [res.losses[1], res.losses[2], res.losses[4]]
    assert all({"loss", "lr", "grad_norm", "temperature", "samples_per_s"} <= set(r) for r in records)
    assert load_config(tmp_path / "config.yaml") == cfg
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000004"]  # keep_last=1
    model = ovp.load(tmp_path)  # final/model.safetensors
    assert model.cfg == ovp.get_config("videoprism_lvt_test_tiny")
    assert not torch.equal(model.encoder.spatial_pos, build_objective(cfg).model.encoder.spatial_pos)  # it trained


def test_accumulation_equals_the_mean_of_micro_batch_gradients() -> None:
    # Plain accumulation (the feature cache, on by default for contrastive, is tests/test_distributed.py's).
    cfg = _cfg("steps=1", "accum_steps=2", "accum_features=false", "optim.grad_clip=0", "optim.weight_decay=0", "schedule.warmup_steps=0", "schedule.decay=constant")
    torch.manual_seed(0)
    obj = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=0.0))
    ref = ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=0.0))
    ref.load_state_dict(obj.state_dict())
    trainer = Trainer(cfg, obj, _stream, None, progress=False)
    res = trainer.fit()
    # By hand: two micro-batches, mean loss and gradient, one AdamW step.
    src = _stream(None)
    losses = []
    for k in range(2):
        loss = ref.train()(src.batch(k))["loss"]
        (loss / 2).backward()
        losses.append(float(loss.detach()))
    opt = torch.optim.AdamW(ref.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps, weight_decay=0.0)
    opt.step()
    assert res.losses[1] == pytest.approx(sum(losses) / 2, rel=1e-6)
    for (n, a), b in zip(obj.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("extra", [["precision=bf16"], ["optim.name=adafactor", "optim.betas=null", "optim.eps=null", "optim.lr=1e-2"], ["model.grad_checkpointing=true"]])
def test_precision_optimiser_and_checkpointing_variants_train(extra: list[str]) -> None:
    cfg = _cfg("steps=2", *extra)
    obj = build_objective(cfg)
    res = Trainer(cfg, obj, _stream, None, progress=False).fit()
    assert all(math.isfinite(v) for v in res.losses.values()) and len(res.losses) == 2
    if "model.grad_checkpointing=true" in extra:
        assert obj.model.encoder.spatial.grad_checkpointing
        # Recomputing activations changes nothing numerically.
        base = _cfg("steps=2")
        plain = Trainer(base, build_objective(base), _stream, None, progress=False).fit()
        assert res.losses[1] == plain.losses[1]
        assert abs(res.losses[2] - plain.losses[2]) < 1e-5


class _Toy(nn.Module):
    """A minimal objective: the engine needs nothing stage-specific."""

    def __init__(self, poison_at: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.poison_at = poison_at
        self.calls = 0
        self.after: list[int] = []

    def forward(self, batch):
        self.calls += 1
        loss = ((self.w - batch["target"]) ** 2).mean()
        if self.poison_at is not None and self.calls >= self.poison_at:
            loss = loss * float("nan")
        return {"loss": loss, "w0": self.w[0].detach()}

    def after_step(self, step: int) -> None:
        self.after.append(step)

    def param_groups(self, weight_decay: float):
        return [{"name": "all", "params": [self.w], "weight_decay": 0.0}]


class _Targets:
    def __init__(self, state=None) -> None:
        self.n = state["n"] if state else 0

    def __iter__(self):
        while True:
            self.n += 1
            yield {"target": torch.zeros(3)}

    def state(self):
        return {"n": self.n}


def test_engine_is_objective_agnostic_hooks_and_divergence() -> None:
    cfg = load_config(None, ["steps=4", "optim.lr=0.1", "optim.weight_decay=0", "log_every=1"])
    toy = _Toy()
    res = Trainer(cfg, toy, _Targets, None, progress=False).fit()
    assert toy.after == [1, 2, 3, 4] and res.losses[4] < res.losses[1]
    with pytest.raises(TrainingDiverged, match="loss is nan at step 3"):
        Trainer(cfg, _Toy(poison_at=3), _Targets, None, progress=False).fit()


def test_host_reads_scalars_at_log_steps_only_and_a_nan_step_never_reaches_the_weights(monkeypatch) -> None:
    """With the fused AdamW the device skips a non-finite step (`found_inf`); the host reads the
    scalars of the steps in between in one sync at the next log or checkpoint step and stops there,
    naming the first bad step. Every step's loss still lands in the result."""
    cfg = load_config(None, ["steps=10", "optim.lr=0.1", "optim.weight_decay=0", "log_every=5", "ckpt_every=100"])
    flushed: list[list[int]] = []
    original = Trainer._flush

    def spy(self, pending):
        flushed.append([step for step, _, _ in pending])
        return original(self, pending)

    monkeypatch.setattr(Trainer, "_flush", spy)
    res = Trainer(cfg, _Toy(), _Targets, None, progress=False).fit()
    assert flushed == [[1], [2, 3, 4, 5], [6, 7, 8, 9, 10]] and sorted(res.losses) == list(range(1, 11))

    two = load_config(None, ["steps=10", "optim.lr=0.1", "optim.weight_decay=0", "log_every=5", "ckpt_every=100"])
    clean = _Toy()
    Trainer(two, clean, _Targets, None, progress=False).fit(stop_after=2)
    poisoned = _Toy(poison_at=3)
    flushed.clear()
    with pytest.raises(TrainingDiverged, match="loss is nan at step 3"):
        Trainer(cfg, poisoned, _Targets, None, progress=False).fit()
    assert flushed[-1] == [2, 3, 4, 5]  # found at the log step, not before
    assert torch.equal(poisoned.w.detach(), clean.w.detach())  # steps 3-5 were skipped on the device


def test_towers_initialise_separately_from_checkpoints(tmp_path: Path) -> None:
    from open_videoprism.errors import CheckpointError
    from open_videoprism.objectives import build_model
    from open_videoprism.train.config import ModelConfig

    torch.manual_seed(7)
    donor = ovp.create_model("videoprism_lvt_test_tiny")
    path = ovp.save_checkpoint(tmp_path / "donor.safetensors", donor.state_dict(), donor.cfg)
    video = build_model(ModelConfig(video_init=str(path)), seed=0)
    text = build_model(ModelConfig(text_init=str(path)), seed=0)
    scratch = build_model(ModelConfig(), seed=0)
    d, v, t, s = (m.state_dict() for m in (donor, video, text, scratch))
    for k in ("encoder.spatial_pos", "pooler.query"):
        assert torch.equal(v[k], d[k]) and torch.equal(t[k], s[k]), k
    assert torch.equal(t["text.token_embed.weight"], d["text.token_embed.weight"])
    assert torch.equal(v["text.token_embed.weight"], s["text.token_embed.weight"])
    whole = build_model(ModelConfig(name="", init=str(path)), seed=0)  # architecture from the checkpoint
    assert all(torch.equal(whole.state_dict()[k], d[k]) for k in d)
    # An image-only (encoder-only) checkpoint into the video side: the pooler keeps its init.
    enc = ovp.create_model("videoprism_test_tiny")
    enc_path = ovp.save_checkpoint(tmp_path / "enc.safetensors", enc.state_dict(), enc.cfg)
    part = build_model(ModelConfig(video_init=str(enc_path)), seed=0)
    assert torch.equal(part.state_dict()["encoder.spatial_pos"], enc.state_dict()["encoder.spatial_pos"])
    assert torch.equal(part.state_dict()["pooler.query"], s["pooler.query"])
    cfg = ovp.get_config("videoprism_lvt_test_tiny")
    big = ovp.create_model(dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, width=32, mlp_dim=64)))
    big_path = ovp.save_checkpoint(tmp_path / "w32.safetensors", big.state_dict(), big.cfg)
    with pytest.raises(CheckpointError, match="shape"):
        build_model(ModelConfig(video_init=str(big_path)), seed=0)
