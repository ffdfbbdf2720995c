"""LiT on a frozen encoder: the encoder is locked (bit-identical after training), text and heads train."""

from __future__ import annotations

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.checkpoints import save_checkpoint
from open_videoprism.cli.main import main
from open_videoprism.errors import ConfigError
from open_videoprism.objectives import get_objective
from open_videoprism.objectives.lit import LitOptions


def _train(out, *args: str) -> None:
    assert main(["pretrain", "--data", "random", "--out", str(out), "--no-progress", "batch_size=4",
                 "ckpt_every=100", "log_every=1", *args]) == 0


def test_lit_locks_the_encoder_and_trains_text_and_heads(tmp_path) -> None:
    _train(tmp_path / "s1", "--config", "stage1-tiny", "steps=2")
    # The encoder to lock: another model's, so we also see it is really taken from locked_encoder.
    torch.manual_seed(123)
    other = ovp.create_model("videoprism_lvt_test_tiny")
    locked = tmp_path / "locked.safetensors"
    save_checkpoint(locked, other.state_dict(), other.cfg)
    _train(tmp_path / "lit", "--config", "lit-tiny", "steps=4", "optim.lr=1e-2", "schedule.warmup_steps=1",
           f"model.init={tmp_path / 's1'}", f"objective.locked_encoder={locked}")
    stage1 = ovp.load(tmp_path / "s1")
    lit = ovp.load(tmp_path / "lit")
    for k, v in other.encoder.state_dict().items():
        assert torch.equal(lit.encoder.state_dict()[k], v), f"locked encoder changed: {k}"
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert changed(lit.text, stage1.text) and changed(lit.pooler, stage1.pooler) and changed(lit.auxiliary, stage1.auxiliary)


def test_lit_needs_the_encoder_to_lock(tmp_path) -> None:
    entry = get_objective("lit")
    with pytest.raises(ConfigError, match="locked_encoder"):
        entry.builder(LitOptions(), train_config=None, teacher=None)
    with pytest.raises(ConfigError, match="not --teacher"):
        entry.builder(LitOptions(locked_encoder="x"), train_config=None, teacher="runs/s2")
