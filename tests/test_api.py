"""The library API (`ovp.pretrain`, `ovp.evaluate`, `ovp.extract_features`) without the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

import open_videoprism as ovp
from open_videoprism.errors import ConfigError, UserError
from open_videoprism.eval.config import load_eval_config
from open_videoprism.train.config import load_config

TINY = ["steps=2", "batch_size=2", "log_every=1", "ckpt_every=1", "data.num_workers=0"]


def test_pretrain_returns_the_final_checkpoint_and_resumes_from_the_folder_alone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = ovp.pretrain(load_config("stage1-tiny", TINY), data="random", out=run_dir, overrides=["optim.lr=1e-4"],
                       progress=False)
    assert run.step == 2 and run.final_path == run_dir / "final" / "model.safetensors" and run.final_path.is_file()
    saved = load_config(run_dir / "config.yaml")
    assert saved.optim.lr == 1e-4 and saved.steps == 2
    assert saved.objective["learn_temperature"] is True  # the objective section is saved resolved
    more = ovp.pretrain(out=run_dir, resume=True, overrides=["steps=3"], progress=False)  # config + data from the run
    assert more.step == 3 and more.resumed_from == 2
    with pytest.raises(ConfigError, match="a config is required"):
        ovp.pretrain(out=tmp_path / "empty", data="random")


def test_evaluate_checks_its_settings_before_loading_anything(tmp_path: Path) -> None:
    missing = tmp_path / "none.safetensors"
    with pytest.raises(ConfigError, match="epochs: task 'zeroshot' trains no head"):
        ovp.evaluate("zeroshot", missing, out=tmp_path / "z", epochs=3)
    with pytest.raises(ConfigError, match=r"eval.caption.dimm: unknown key .*Did you mean: 'dim'"):
        ovp.evaluate("caption", missing, out=tmp_path / "c", overrides=["caption.dimm=4"])
    with pytest.raises(UserError, match="unknown task 'knn'"):
        ovp.evaluate("knn", missing, out=tmp_path / "k")
    with pytest.raises(UserError, match="checkpoint not found"):
        ovp.evaluate("probe", missing, out=tmp_path / "p", epochs=3)


def test_eval_shorthands_land_in_the_heads_they_name() -> None:
    from open_videoprism.api import _shorthands

    cfg = load_eval_config("stage1-tiny", _shorthands("localize", "motion_label", 7, 3, 0.01))
    assert (cfg.localize.epochs, cfg.localize.lr, cfg.features.label_field) == (3, 0.01, "motion_label")
    assert cfg.probe.seed == cfg.localize.seed == cfg.caption.seed == 7
    assert cfg.probe.epochs == load_eval_config().probe.epochs  # other heads keep their settings


def test_extract_features_validates_feature_overrides(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    with pytest.raises(ConfigError, match="num_clips: must be >= 1, got 0"):
        ovp.extract_features(tmp_path / "none.safetensors", manifest, tmp_path / "f", overrides=["num_clips=0"])
    with pytest.raises(ConfigError, match="token_dtype: Invalid value 'int8'"):
        ovp.extract_features(tmp_path / "none.safetensors", manifest, tmp_path / "f", overrides=["token_dtype=int8"])
