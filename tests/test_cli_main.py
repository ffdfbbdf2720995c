"""`videoprism` argument handling: overrides after options, unknown options."""

from __future__ import annotations

import json

import pytest

from open_videoprism.cli.main import main


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
