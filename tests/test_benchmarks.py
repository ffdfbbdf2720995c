"""The GPU check script runs end to end in its CPU dry-run form (tiny models, fp32)."""

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
