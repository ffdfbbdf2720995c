"""`videoprism features` / `videoprism eval TASK` end to end on the synthetic benchmark."""

from __future__ import annotations

import json

import pytest

import open_videoprism as ovp
from open_videoprism.cli.main import main
from open_videoprism.data import synthetic
from open_videoprism.eval.tasks import TASKS


@pytest.fixture(scope="module")
def bench(tmp_path_factory, official_dir):
    """A tiny synthetic benchmark and the converted random fixture checkpoints."""
    root = tmp_path_factory.mktemp("bench")
    synthetic.generate(root / "synth", clips=32, long_videos=4, cfg=synthetic.SynthConfig(num_frames=8), progress=False)
    lvt, _ = ovp.convert(official_dir / "public_lvt.npz", root / "lvt.safetensors")
    enc, _ = ovp.convert(official_dir / "public_encoder.npz", root / "enc.safetensors")
    return {"root": root, "synth": root / "synth", "lvt": lvt, "enc": enc}


def _eval(bench, task, out, *extra):
    epochs = [] if task in ("retrieval", "zeroshot") else ["--epochs", "4"]  # tasks without a head refuse --epochs
    return main(["eval", task, "--checkpoint", str(bench["lvt"]), "--data", str(bench["synth"]), "--out", str(out),
                 "--cache", str(bench["root"] / "cache"), "--threads", "1", *epochs, *extra])


@pytest.mark.slow
def test_every_task_runs_end_to_end_with_the_random_fixture(bench, tmp_path, capsys):
    n_test = len((bench["synth"] / "test.jsonl").read_text().splitlines())
    for task in TASKS:
        assert _eval(bench, task, tmp_path / task) == 0, task
        report = json.loads((tmp_path / task / "metrics.json").read_text())
        assert report["task"] == task and (tmp_path / task / "metrics.md").is_file()
        m, chance = report["metrics"], report["chance"]
        for key, value in m.items():
            if "rank" not in key and not key.startswith(("num_", "vocab")):
                upper = 1000.0 if key == "CIDEr" else 100.0  # CIDEr-D x100 is bounded by 1000
                assert 0.0 <= value <= upper, (task, key, value)
        if task in ("probe", "linear", "zeroshot"):
            assert chance["top1"] == pytest.approx(100 / 16) and m["num_test"] == n_test
            assert (tmp_path / task / "confusion_matrix.png").stat().st_size > 1000
        if task == "retrieval":
            assert m["num_captions"] == 3 * n_test
            assert chance["t2v_R@1"] == pytest.approx(100 / n_test)
            assert 1 <= m["t2v_median_rank"] <= n_test
            assert (tmp_path / task / "retrieval_examples.png").is_file()
        if task == "localize":
            assert {"mAP", "mAP@0.50", "mAP@0.95"} <= set(m) and m["num_test_videos"] >= 1
        if task in ("caption", "qa"):
            preds = [json.loads(line) for line in (tmp_path / task / "predictions.jsonl").read_text().splitlines()]
            assert preds and all(isinstance(p["output"], str) for p in preds)
    assert "wrote" in capsys.readouterr().out


def test_probe_is_deterministic_under_a_seed(bench, tmp_path):
    for name in ("a", "b"):
        assert _eval(bench, "linear", tmp_path / name, "--seed", "3", "--no-plots") == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    assert a["metrics"] == b["metrics"] and a["seed"] == 3
    assert not (tmp_path / "a" / "confusion_matrix.png").exists()


def test_head_settings_come_from_the_eval_config(bench, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base: stage1-tiny\neval: {probe: {epochs: 2, batch_size: 5, weight_decay: 0.5}}\n")
    assert _eval(bench, "probe", tmp_path / "p", "--config", str(recipe), "probe.kind=linear", "--no-plots") == 0
    cfg = json.loads((tmp_path / "p" / "metrics.json").read_text())["config"]
    # the recipe's eval section, the positional override and the --epochs flag (4) all reach the head
    assert (cfg["kind"], cfg["epochs"], cfg["batch_size"], cfg["weight_decay"]) == ("linear", 4, 5, 0.5)
    assert main(["eval", "retrieval", "--checkpoint", str(bench["lvt"]), "--data", str(bench["synth"]),
                 "--out", str(tmp_path / "r"), "--epochs", "3"]) == 2
    assert "epochs: task 'retrieval' trains no head" in capsys.readouterr().err
    assert _eval(bench, "probe", tmp_path / "q", "probe.epochz=1") == 2
    assert "eval.probe.epochz: unknown key" in capsys.readouterr().err


def test_zeroshot_with_an_encoder_only_checkpoint_is_a_clear_error(bench, tmp_path, capsys):
    for task in ("zeroshot", "retrieval"):
        rc = main(["eval", task, "--checkpoint", str(bench["enc"]), "--data", str(bench["synth"]), "--out", str(tmp_path / task)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error: ") and "\n" not in err
        assert "video-only encoder" in err and "videoprism eval probe" in err


def test_user_errors_are_one_line(bench, tmp_path, capsys):
    cases = [
        ["eval", "probe", "--checkpoint", str(tmp_path / "nope.safetensors"), "--data", str(bench["synth"]), "--out", str(tmp_path)],
        ["eval", "probe", "--checkpoint", str(bench["enc"]), "--data", str(tmp_path / "nodata"), "--out", str(tmp_path)],
        ["eval", "probe", "--checkpoint", str(bench["enc"]), "--out", str(tmp_path / "o")],
        ["eval", "zeroshot", "--checkpoint", str(bench["lvt"]), "--data", str(bench["synth"]), "--out", str(tmp_path / "z"),
         "--tokenizer", str(tmp_path / "missing.model")],
        ["features", str(tmp_path / "none.jsonl"), "--checkpoint", str(bench["enc"]), "--out", str(tmp_path / "f")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err


def test_features_command_writes_and_resumes(bench, tmp_path, capsys):
    argv = ["features", str(bench["synth"] / "test.jsonl"), "--checkpoint", str(bench["enc"]), "--out", str(tmp_path / "f"),
            "--num-clips", "2", "--stride", "1", "--threads", "1"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "embedding" not in first and "tokens [" in first  # encoder-only: no pooled embedding
    assert main(argv) == 0  # finished folder: returns at once with the same summary
    assert capsys.readouterr().out == first
