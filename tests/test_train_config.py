"""Config loading: YAML + base chain + key=value overrides, strict keys and values, clear one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from open_videoprism.data import VideoDataConfig
from open_videoprism.errors import ConfigError
from open_videoprism.train.config import TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_recipes_load_and_stage1_tiny_inherits_base() -> None:
    tiny = load_config(CONFIGS / "stage1-tiny.yaml")
    base = load_config(CONFIGS / "tiny-synthetic.yaml")
    assert tiny.model.name == base.model.name == "videoprism_lvt_test_tiny"
    assert tiny.steps == 1000 and tiny.schedule.warmup_steps == 100 and base.schedule.warmup_steps == 20  # the recipe overrides its base
    assert tiny.optim.lr == pytest.approx(5e-4) and isinstance(tiny.optim.lr, float)
    # The saved objective section is resolved: every option of the registered dataclass, defaults included.
    assert tiny.objective["name"] == "contrastive" and tiny.objective["token_drop_ratio"] == 0.5
    assert tiny.objective["learn_temperature"] is True
    b16 = load_config(CONFIGS / "b16-stage1.yaml")
    # Paper Table 10 / App. C.1: Adafactor, 2e5 steps, 2e4 warmup, linear decay, wd 1e-4, 8 frames at 288.
    assert (b16.optim.name, b16.steps, b16.schedule.warmup_steps, b16.schedule.decay) == ("adafactor", 200000, 20000, "linear")
    assert (b16.optim.weight_decay, b16.data.num_frames, b16.data.image_size) == (1e-4, 8, 288)
    assert b16.objective["token_drop_ratio"] == 0.5 and b16.model.name == "videoprism_lvt_v1_base"
    assert load_config("stage1-tiny") == tiny  # a shipped recipe by name


def test_overrides_types_and_roundtrip(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "stage1-tiny.yaml", ["optim.lr=3e-4", "steps=7", "data.crop_scale=[0.3, 1]", "model.init=null", "precision=bf16"])
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.steps == 7 and cfg.data.crop_scale == (0.3, 1.0)
    assert cfg.precision == "bf16" and cfg.model.init is None
    # The resolved YAML reloads to the same config.
    f = tmp_path / "config.yaml"
    f.write_text(cfg.to_yaml())
    assert load_config(f) == cfg


def test_data_section_is_the_loader_config_so_every_field_is_settable() -> None:
    cfg = load_config("stage1-tiny", ["data.shuffle_buffer=17", "data.decode_threads=2", "data.label_field=motion_label"])
    assert isinstance(cfg.data, VideoDataConfig)  # what build_loader gets, not a copy
    assert (cfg.data.shuffle_buffer, cfg.data.decode_threads, cfg.data.label_field) == (17, 2, "motion_label")


def test_eval_section_configures_the_heads() -> None:
    cfg = load_config("stage1-tiny", ["eval.probe.epochs=3", "eval.probe.kind=linear", "eval.caption.lr=1e-4",
                                      "eval.features.batch_size=2"])
    assert (cfg.eval.probe.epochs, cfg.eval.probe.kind, cfg.eval.caption.lr, cfg.eval.features.batch_size) == (3, "linear", 1e-4, 2)


def test_base_chain_names_a_shipped_recipe_and_later_layers_win(tmp_path: Path) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("base: stage2-tiny\nobjective: {mask: {type: tube}}\n")
    cfg = load_config(own, ["objective.mask.ratio=0.8"])
    assert cfg.objective["name"] == "distillation" and cfg.objective["shuffle"] is True
    assert cfg.objective["mask"]["type"] == "tube" and cfg.objective["mask"]["ratio"] == 0.8


@pytest.mark.parametrize(
    "override,needle",
    [
        ("optim.lrr=1", "optim.lrr: unknown key (OptimConfig has no 'lrr'). Did you mean: 'lr'?"),
        ("stepz=3", "stepz: unknown key"),
        ("steps=many", "steps: Value 'many' of type 'str' could not be converted to Integer"),
        ("steps=0", "steps: must be >= 1"),
        ("optim.name=sgd", "optim.name: Invalid value 'sgd', expected one of ['adamw', 'adafactor']"),
        ("precision=fp16", "precision: Invalid value 'fp16'"),
        ("model.grad_checkpointing=maybe", "model.grad_checkpointing: Value 'maybe' is not a valid bool"),
        ("data.datasets=[{source: a.jsonl, weight: 0}]", "data.datasets[0].weight: must be > 0"),
        ("data.datasets=[{sauce: a.jsonl}]", "data.datasets[0].sauce: unknown key"),
        ("data.crop_scale=[0.5]", "data.crop_scale: expected a list of 2 values"),
        ("noequals", "expected key=value"),
        # Values are checked at load time, naming the key (issue 11).
        ("optim.lr=.nan", "optim.lr: must be a finite number, got nan"),
        ("optim.lr=inf", "optim.lr: must be a finite number, got inf"),
        ("optim.grad_clip=.nan", "optim.grad_clip: must be a finite number"),
        ("eval.probe.lr=-.inf", "eval.probe.lr: must be a finite number"),
        ("optim.betas=[0.9, 1.0]", "optim.betas: each must be in [0, 1)"),
        ("optim.eps=0", "optim.eps: must be > 0"),
        ("data.image_size=70", "data.image_size: 70 is not divisible by the patch size 18"),
        ("objective.token_drop_ratio=1.0", "objective.token_drop_ratio: must be in [0, 1)"),
        ("objective.token_drop=0.5", "objective.token_drop: unknown key"),
        ("data.num_workers=-1", "data.num_workers: must be >= 0"),
        ("device=cuda:x", "device: 'cuda:x' is not a device"),
        ("model.name=vit_b", "model.name: unknown model 'vit_b'; known models: "),
        # Adafactor has no betas/eps: refusing them beats ignoring them.
        ("optim.name=adafactor", "optim.betas/eps: AdamW settings, which Adafactor does not have"),
    ],
)
def test_bad_key_or_value_fails_with_one_line_naming_it(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "stage1-tiny.yaml", [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda_fails_at_load() -> None:
    with pytest.raises(ConfigError, match="device: 'cuda' but this machine has no usable CUDA device"):
        load_config(None, ["device=cuda"])


def test_distillation_options_are_validated_in_the_tree() -> None:
    with pytest.raises(ConfigError, match=r"objective.mask.ratio: the masked fraction must be in \[0, 1\) .*got 1.0"):
        load_config("stage2-tiny", ["objective.mask.ratio=1.0"])
    with pytest.raises(ConfigError, match="objective.mask.raito: unknown key"):
        load_config("stage2-tiny", ["objective.mask.raito=0.5"])


def test_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny.yaml\n")
    with pytest.raises(ConfigError, match="tiny.yaml: no such config file or shipped recipe"):
        load_config(bad)
    bad.write_text("optim: {lr: 1e-3, momentum: 0.9}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.momentum: unknown key"):
        load_config(bad)
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("base: bad.yaml\n")
    with pytest.raises(ConfigError, match="circular 'base:' chain"):
        load_config(bad)
    assert isinstance(load_config({}), TrainConfig)
    bad.write_text("steps: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="bad.yaml: YAML nested more than 64 levels deep"):
        load_config(bad)
    bad.write_text("".join(" " * i + "k:\n" for i in range(1000)))  # block nesting
    with pytest.raises(ConfigError, match="bad.yaml: YAML nested too deeply"):
        load_config(bad)


def test_alias_bomb_fails_fast(tmp_path: Path) -> None:
    # 9 levels of 10 aliases each: 10^9 nodes once expanded, 90 aliases on disk.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="bomb.yaml: YAML expands to more than 100000 nodes"):
        load_config(bomb)
    big = tmp_path / "big.yaml"
    big.write_text("steps: 1\n" + "#" * (1 << 20))
    with pytest.raises(ConfigError, match="big.yaml: .* bytes; a config is at most"):
        load_config(big)


def test_cli_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "open_videoprism.cli.main", "pretrain", "--config", str(CONFIGS / "stage1-tiny.yaml"),
           "--data", "random", "--out", str(tmp_path / "run"), "optim.betaz=[0.9, 0.9]"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "optim.betaz" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a config error
