"""Config loading: YAML + base chain + key=value overrides, strict keys and values, clear one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from open_videoprism.errors import ConfigError
from open_videoprism.train.config import TrainConfig, config_from_dict, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_recipes_load_and_stage1_tiny_inherits_base() -> None:
    tiny = load_config(CONFIGS / "stage1-tiny.yaml")
    base = load_config(CONFIGS / "tiny-synthetic.yaml")
    assert tiny.model.name == base.model.name == "videoprism_lvt_test_tiny"
    assert tiny.steps == 1000 and tiny.schedule.warmup_steps == 100 and base.schedule.warmup_steps == 20  # the recipe overrides its base
    assert tiny.optim.lr == pytest.approx(5e-4) and isinstance(tiny.optim.lr, float)
    assert tiny.objective == {"name": "contrastive", "token_drop_ratio": 0.5, "temperature_init": 0.07, "max_logit_scale": 100.0}
    b16 = load_config(CONFIGS / "b16-stage1.yaml")
    # Paper Table 10 / App. C.1: Adafactor, 2e5 steps, 2e4 warmup, linear decay, wd 1e-4, 8 frames at 288.
    assert (b16.optim.name, b16.steps, b16.schedule.warmup_steps, b16.schedule.decay) == ("adafactor", 200000, 20000, "linear")
    assert (b16.optim.weight_decay, b16.data.num_frames, b16.data.image_size) == (1e-4, 8, 288)
    assert b16.objective["token_drop_ratio"] == 0.5 and b16.model.name == "videoprism_lvt_v1_base"


def test_overrides_types_and_roundtrip(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "stage1-tiny.yaml", ["optim.lr=3e-4", "steps=7", "data.crop_scale=[0.3, 1]", "model.init=null", "precision=bf16"])
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.steps == 7 and cfg.data.crop_scale == (0.3, 1.0)
    assert cfg.precision == "bf16" and cfg.model.init is None
    # The resolved YAML reloads to the same config.
    f = tmp_path / "config.yaml"
    f.write_text(cfg.to_yaml())
    assert load_config(f) == cfg
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'"),
        ("stepz=3", "unknown key 'stepz'"),
        ("steps=many", "steps: expected an integer, got 'many'"),
        ("steps=0", "steps: must be >= 1"),
        ("optim.name=sgd", "optim.name: 'sgd' is not one of adamw, adafactor"),
        ("precision=fp16", "precision: 'fp16' is not one of fp32, bf16"),
        ("model.grad_checkpointing=maybe", "model.grad_checkpointing: expected true or false"),
        ("data.datasets=[{source: a.jsonl, weight: 0}]", "data.datasets[0].weight: must be > 0"),
        ("data.datasets=[{sauce: a.jsonl}]", "unknown key 'data.datasets[0].sauce'"),
        ("noequals", "expected key=value"),
    ],
)
def test_bad_key_or_value_fails_with_one_line_naming_it(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "stage1-tiny.yaml", [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny.yaml\n")
    with pytest.raises(ConfigError, match="tiny.yaml: config file not found"):
        load_config(bad)
    bad.write_text("optim: {lr: 1e-3, momentum: 0.9}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'optim.momentum'; known keys here: name, lr"):
        load_config(bad)
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    assert isinstance(config_from_dict({}), TrainConfig)


def test_cli_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "open_videoprism.cli.main", "pretrain", "--config", str(CONFIGS / "stage1-tiny.yaml"),
           "--data", "random", "--out", str(tmp_path / "run"), "optim.betaz=[0.9, 0.9]"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "optim.betaz" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a config error
