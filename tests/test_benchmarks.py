"""The benchmark scripts run end to end in small forms: the GPU check as its CPU dry run (tiny models,
fp32), the training-step benchmark on the tiny model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_dry_run(capsys):
    gpu_check = _module("gpu_check")
    assert gpu_check.main(["--dry-run", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("videoprism_v1_base", "videoprism_v1_large", "videoprism_v1_giant", "stage-2 step (B)", "MFU"):
        assert name in out
    assert "% of measured" in out


def test_gpu_check_refuses_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        _module("gpu_check").main([])


def test_train_step_benchmark_measures_both_objectives_with_and_without_checkpointing(capsys):
    """Tiny model, one repeat: a row per objective and checkpointing setting, each with its time,
    FLOPs, fraction of the matmul peak and peak memory; recomputation adds FLOPs, never removes them."""
    import re

    train_step = _module("train_step")
    assert train_step.main(["--models", "tiny", "--repeats", "1", "--threads", "1"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| stage")]
    assert [r.split(" | ")[0:4:3] for r in rows] == [["| stage2", "off"], ["| stage2", "on"],
                                                      ["| stage1", "off"], ["| stage1", "on"]]
    gflop = [float(r.split(" | ")[5]) for r in rows]
    assert all(g > 0 for g in gflop) and gflop[1] >= gflop[0] and gflop[3] >= gflop[2]
    assert all(re.search(r"\| \d+% \(peak \d+ GFLOP/s\) \| -?\d+ \| \d+ \|$", r) for r in rows)
