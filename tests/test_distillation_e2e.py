"""End to end: `videoprism pretrain` with the stage-2 recipe lowers both losses.

A CI-sized run: the tiny LvT model as the teacher checkpoint, the engine's
``random`` data (fixed blocky clips), 40 steps. The full-size demonstration on
the synthetic benchmark from a trained stage-1 run is in docs/stage2.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.cli.main import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "stage2-tiny.yaml"


def _teacher(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    teacher = ovp.create_model("videoprism_lvt_test_tiny")
    return ovp.save_checkpoint(tmp_path / "teacher" / "model.safetensors", teacher.state_dict(), teacher.cfg)


@pytest.mark.slow
def test_pretrain_stage2_lowers_both_losses_and_exports_the_student(tmp_path: Path, capsys) -> None:
    teacher = _teacher(tmp_path)
    out = tmp_path / "run"
    rc = main([
        "pretrain", "--config", str(CONFIG), "--teacher", str(teacher), "--data", "random",
        "--out", str(out), "--no-progress",
        "steps=40", "batch_size=8", "log_every=5", "ckpt_every=40", "schedule.warmup_steps=5",
        "objective.decoder.depth=1",
    ])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_local" in r]
    first, last = rows[0], rows[-1]
    assert last["step"] == 40
    for key in ("loss_local", "loss_global"):
        assert last[key] < 0.6 * first[key], (key, first[key], last[key])
    # The exported model is the student as an encoder-only checkpoint ovp.load reads.
    student = ovp.load(out)
    assert student.pooler is None and student.text is None
    teacher_model = ovp.load(teacher)
    assert not torch.equal(student.encoder.patch_embed.weight, teacher_model.encoder.patch_embed.weight)
    video = torch.rand(1, 4, 3, 72, 72)
    assert student.encode_video(video).tokens.shape == (1, 64, 64)


def test_pretrain_stage2_without_teacher_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    rc = main(["pretrain", "--config", str(CONFIG), "--data", "random", "--out", str(tmp_path / "run"), "steps=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "--teacher" in err
    assert len(err.strip().splitlines()) == 1


def test_pretrain_stage2_bad_mask_option_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    teacher = _teacher(tmp_path)
    rc = main(["pretrain", "--config", str(CONFIG), "--teacher", str(teacher), "--data", "random",
               "--out", str(tmp_path / "run"), "steps=1", "objective.mask.ratio=1.0"])
    err = capsys.readouterr().err
    assert rc == 2 and "objective.mask.ratio: the masked fraction must be in [0, 1)" in err, err


@pytest.mark.slow
def test_stage2_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    teacher = _teacher(tmp_path)
    common = ["--config", str(CONFIG), "--teacher", str(teacher), "--data", "random", "--no-progress"]
    # The student's hold is a fraction of `steps`, which this test changes between the runs: no hold.
    keys = ["batch_size=4", "log_every=1", "ckpt_every=3", "objective.decoder.depth=1", "objective.student_hold=0"]
    assert main(["pretrain", *common, "--out", str(tmp_path / "a"), *keys, "steps=6"]) == 0
    assert main(["pretrain", *common, "--out", str(tmp_path / "b"), *keys, "steps=3"]) == 0
    assert main(["pretrain", *common, "--out", str(tmp_path / "b"), "--resume", *keys, "steps=6"]) == 0

    def last(run: str) -> dict:
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        row = [r for r in rows if "loss_local" in r][-1]
        return {k: row[k] for k in ("step", "loss", "loss_local", "loss_global")}

    # Masks (seeded by sample index), the shuffles (the engine restores the RNG) and
    # the decoder init (seeded by the builder) all replay exactly.
    assert last("a") == last("b")
