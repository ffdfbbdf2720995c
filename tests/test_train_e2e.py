"""End to end on a small synthetic set: synth -> pretrain (CLI) -> stop + resume equals the
uninterrupted run exactly with the real loader and a data worker -> ovp.load -> retrieval.

The CLI runs in this process (``main(argv)``), so the pipeline pays for one torch import,
and bit-exact resume holds because both runs share this process's thread count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import open_videoprism as ovp
from open_videoprism.cli.main import main
from open_videoprism.tokenizer import Tokenizer
from open_videoprism.train.config import load_config
from open_videoprism.train.data import build_stream_factory
from open_videoprism.train.engine import Trainer, build_objective
from open_videoprism.train.logging import read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OVERRIDES = ["steps=4", "batch_size=4", "log_every=1", "ckpt_every=2", "data.num_workers=1"]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``videoprism ARGS`` here; returns what it printed."""
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_stage1_on_synthetic_clips_resumes_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synth = tmp_path / "synth"
    _cli(capsys, "synth", str(synth), "--clips", "24", "--workers", "1")
    data = str(synth / "pretrain.jsonl")
    config = str(CONFIGS / "stage1-tiny.yaml")

    full = tmp_path / "full"
    _cli(capsys, "pretrain", "--config", config, "--data", data, "--out", str(full), "--no-progress", *OVERRIDES)
    expected = [r["loss"] for r in read_metrics(full / "metrics.jsonl")]
    assert len(expected) == 4

    # The same run stopped after 2 steps (as a crash would leave it), then resumed by the CLI.
    split = tmp_path / "split"
    cfg = load_config(config, OVERRIDES)
    make_stream = build_stream_factory(cfg, data, tokenizer=Tokenizer(synth / "tokenizer.model"))
    Trainer(cfg, build_objective(cfg), make_stream, split, progress=False).fit(stop_after=2)
    out = _cli(capsys, "pretrain", "--config", config, "--data", data, "--out", str(split), "--resume", "--no-progress",
             "--eval-data", str(synth / "test.jsonl"), *OVERRIDES)
    assert "trained to step 4" in out and "zero-shot retrieval on 6 held-out clips (18 captions)" in out
    records = read_metrics(split / "metrics.jsonl")
    assert [x["step"] for x in records] == [1, 2, 3, 4]
    assert [x["loss"] for x in records] == expected  # bit for bit, data position included

    # The `videoprism eval retrieval` protocol: every caption of each held-out clip is a query.
    report = json.loads((split / "final" / "retrieval" / "metrics.json").read_text())
    assert report["task"] == "retrieval" and report["metrics"]["num_videos"] == 6 and report["metrics"]["num_captions"] == 18
    assert 0.0 <= report["metrics"]["t2v_R@1"] <= 100.0 and report["chance"]["t2v_R@1"] == pytest.approx(100 / 6)
    a, b = ovp.load(full), ovp.load(split)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
