"""dtype "auto": bf16 only where native, decided from (faked) CPU flags; the emulated-bf16 warning."""

from __future__ import annotations

import warnings

import pytest
import torch

import open_videoprism as ovp
from open_videoprism import precision
from open_videoprism.precision import read_cpu_flags, resolve_dtype

ZEN3 = {"fpu", "sse4_2", "avx", "avx2", "fma"}  # the machine: no AVX512-BF16, no AMX
ZEN4 = ZEN3 | {"avx512f", "avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN3 | {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
GRAVITON3 = {"fp", "asimd", "sve", "bf16"}  # Arm "Features"


@pytest.fixture(autouse=True)
def _fresh_warning(monkeypatch):
    monkeypatch.setattr(precision, "_warned", False)


@pytest.mark.parametrize(("flags", "expected"), [
    (ZEN3, torch.float32), (ZEN4, torch.bfloat16), (SAPPHIRE_RAPIDS, torch.bfloat16), (GRAVITON3, torch.bfloat16),
    (set(), torch.float32),
])
def test_auto_on_cpu_flags(flags, expected):
    choice = resolve_dtype("auto", "cpu", cpu_flags=flags)
    assert choice.dtype == expected
    assert choice.reason.startswith("auto: ")


def test_reason_names_the_flags():
    assert "amx_bf16" in resolve_dtype("auto", cpu_flags=SAPPHIRE_RAPIDS).reason
    assert "no AMX" in resolve_dtype("auto", cpu_flags=ZEN3).reason


def test_explicit_dtypes_pass_through():
    assert resolve_dtype("fp32", cpu_flags=ZEN4).dtype == torch.float32
    assert resolve_dtype(torch.float32).dtype == torch.float32
    assert resolve_dtype(None).dtype == torch.float32
    assert resolve_dtype("bfloat16", cpu_flags=ZEN4).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("fp8")


def test_explicit_bf16_on_emulating_cpu_warns_once_with_the_slowdown(monkeypatch):
    monkeypatch.setattr(precision, "matmul_seconds", lambda dtype, **_: 1.0 if dtype == torch.bfloat16 else 0.01)
    with pytest.warns(RuntimeWarning, match=r"100\.0x as long as fp32"):
        choice = resolve_dtype("bf16", "cpu", cpu_flags=ZEN3)
    assert choice.dtype == torch.bfloat16  # honoured, only warned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_dtype(torch.bfloat16, "cpu", cpu_flags=ZEN3)  # once per process


def test_explicit_bf16_on_native_cpu_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype("bf16", "cpu", cpu_flags=SAPPHIRE_RAPIDS).dtype == torch.bfloat16


def test_cuda_without_a_device_is_not_native():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert resolve_dtype("auto", "cuda").dtype == torch.float32


def test_read_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    read_cpu_flags.cache_clear()
    try:
        assert read_cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
        assert read_cpu_flags(str(tmp_path / "missing")) == frozenset()
    finally:
        read_cpu_flags.cache_clear()


def test_create_model_and_load_take_auto(monkeypatch, official_dir):
    monkeypatch.setattr(precision, "read_cpu_flags", lambda path="/proc/cpuinfo": frozenset(ZEN3))
    assert ovp.create_model("videoprism_test_tiny", dtype="auto").dtype == torch.float32
    monkeypatch.setattr(precision, "read_cpu_flags", lambda path="/proc/cpuinfo": frozenset(SAPPHIRE_RAPIDS))
    assert ovp.create_model("videoprism_test_tiny", dtype="auto").dtype == torch.bfloat16
    assert ovp.load(official_dir / "public_encoder.npz", dtype="auto").dtype == torch.bfloat16
