"""``videoprism reproduce`` in its smoke form: every step runs, the report is complete, reruns resume."""

from __future__ import annotations

import json

import pytest

from open_videoprism.cli.main import main


@pytest.mark.slow
def test_reproduce_smoke_runs_every_step_and_resumes(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--ablations", "no-shuffle"]) == 0
    report = (out / "report.md").read_text()
    for row in ("`random`", "`stage1`", "`stage2`", "`stage2-no-shuffle`", "| chance |"):
        assert row in report
    assert "`stage2-no-global`" not in report
    assert (out / "probes.png").stat().st_size > 0 and (out / "loss_curves.png").stat().st_size > 0
    # Every evaluation left its metrics; stage-2 students are encoders (no retrieval for them).
    for model in ("random", "stage1", "stage2", "stage2-no-shuffle"):
        for task in ("probe-appearance", "probe-motion"):
            m = json.loads((out / "eval" / model / task / "metrics.json").read_text())
            assert 0.0 <= m["metrics"]["top1"] <= 100.0
    assert (out / "eval" / "stage1" / "retrieval" / "metrics.json").exists()
    assert not (out / "eval" / "stage2" / "retrieval").exists()
    # Stage 2 trained from the stage-1 teacher and its losses moved.
    rows = [json.loads(line) for line in (out / "runs" / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss_local"] < rows[0]["loss_local"]
    # A second run skips every finished step and only rewrites the report.
    marker = out / "runs" / "stage1" / ".done.json"
    before = marker.stat().st_mtime_ns
    ckpt = (out / "runs" / "stage1" / "final" / "model.safetensors").stat().st_mtime_ns
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--ablations", "no-shuffle"]) == 0
    assert marker.stat().st_mtime_ns == before
    assert (out / "runs" / "stage1" / "final" / "model.safetensors").stat().st_mtime_ns == ckpt
    # Other settings redo the steps in cleared folders: no stale runs or feature caches survive.
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--ablations", "none", "--steps2", "6"]) == 0
    rows = [json.loads(line) for line in (out / "runs" / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6
    assert json.loads(marker.read_text())["settings"]["stage-2 steps"] == 6
    assert not (out / "runs" / "stage2-no-shuffle").exists()
    assert "`stage2-no-shuffle`" not in (out / "report.md").read_text()


def test_unknown_ablation_is_one_clear_error(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path / "x"), "--ablations", "no-shuffle,bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "unknown bogus" in err[0]
    assert not (tmp_path / "x").exists()


def test_overrides_after_options_reach_the_command(tmp_path):
    from open_videoprism.cli.main import build_parser
    from open_videoprism.cli.main import main as cli

    # argparse alone would reject `steps=3` after an option; main() hands it to the overrides.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--out", "x", "a=1", "--data", "random", "steps=3"])
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", "stage1-tiny", "--data", "random", "--out", str(out), "--no-progress",
                "batch_size=4", "steps=2", "ckpt_every=2", "log_every=1"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]


def test_unknown_option_still_fails(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", "x", "--bogus-flag"])
    assert "unrecognized arguments: --bogus-flag" in capsys.readouterr().err
