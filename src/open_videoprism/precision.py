"""Which floating-point dtype to run a model in: ``"auto"`` picks bf16 only where it is native.

bf16 halves memory and, where the hardware has bf16 matrix units, runs matmuls 2-4x
faster than fp32. Where it does not, PyTorch emulates it: on a Zen 3 CPU (AVX2, no
AVX512-BF16) a bf16 matmul ran at ~0.9 GFLOP/s against ~100 GFLOP/s in fp32, and a
VideoPrism-B forward took 123 s instead of 11 s. So:

* ``"auto"``: bf16 on CUDA devices that support it and on CPUs with AMX or
  AVX512-BF16 (x86) or the BF16 extension (Arm), fp32 everywhere else;
* an explicit ``"bf16"`` is honoured, but on a CPU without native bf16 it warns once,
  with the slowdown measured on a small matmul.

The CPU flags come from ``/proc/cpuinfo`` (Linux); :func:`resolve_dtype` takes a
``cpu_flags`` argument so the rule can be tested with any flags. This module sits
below every layer (it imports only torch).
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

DtypeName = Literal["auto", "fp32", "bf16"]
DTYPE_NAMES: tuple[str, ...] = ("auto", "fp32", "bf16")
_BY_NAME = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
# x86: AMX tiles or AVX512-BF16 dot products; Arm (Linux "Features"): the BF16 extension.
NATIVE_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype and the reason, for logs and benchmark reports."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32" if self.dtype == torch.float32 else str(self.dtype)


@functools.lru_cache(maxsize=1)
def read_cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor (x86 ``flags``, Arm ``Features``); empty if unknown."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def _device_type(device: torch.device | str | None) -> str:
    return "cpu" if device is None else torch.device(device).type


def native_bf16(device: torch.device | str | None = None, cpu_flags: Iterable[str] | None = None) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and why (a short phrase)."""
    kind = _device_type(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device available"
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"CUDA device {torch.cuda.get_device_name(device)} supports bf16"
        return False, "this CUDA device has no native bf16 (pre-Ampere)"
    if kind != "cpu":
        return False, f"bf16 speed on {kind} devices is not known to this library"
    flags = frozenset(read_cpu_flags() if cpu_flags is None else cpu_flags)
    found = sorted(flags & NATIVE_BF16_CPU_FLAGS)
    if found:
        return True, f"CPU has native bf16 ({', '.join(found)})"
    if not flags:
        return False, "CPU flags unknown (no /proc/cpuinfo), bf16 assumed emulated"
    return False, "CPU has no AMX / AVX512-BF16, bf16 would be emulated"


def resolve_dtype(
    dtype: str | torch.dtype | None,
    device: torch.device | str | None = None,
    cpu_flags: Iterable[str] | None = None,
    warn: bool = True,
) -> DtypeChoice:
    """Turn ``"auto"`` / ``"fp32"`` / ``"bf16"`` / a torch dtype (None = fp32) into a :class:`DtypeChoice`.

    ``"auto"``: bf16 where :func:`native_bf16`, else fp32. An explicit bf16 on a
    CPU without native bf16 warns once (``warn=False`` skips it).
    """
    if dtype is None:
        return DtypeChoice(torch.float32, "fp32 by default")
    if isinstance(dtype, str):
        if dtype == "auto":
            native, why = native_bf16(device, cpu_flags)
            return DtypeChoice(torch.bfloat16 if native else torch.float32, f"auto: {why}")
        if dtype not in _BY_NAME:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}")
        dtype = _BY_NAME[dtype]
    if dtype == torch.bfloat16 and _device_type(device) == "cpu":
        native, why = native_bf16(device, cpu_flags)
        if not native and warn:
            warn_emulated_bf16(why)
        return DtypeChoice(dtype, "bf16 as asked" + ("" if native else f" ({why})"))
    return DtypeChoice(dtype, f"{str(dtype).removeprefix('torch.')} as asked")


def matmul_seconds(dtype: torch.dtype, n: int = 256, repeats: int = 3) -> float:
    """Best time of an ``n``-cubed matmul in ``dtype`` on the CPU."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


_warned = False


def warn_emulated_bf16(why: str, timer: Callable[[torch.dtype], float] | None = None) -> bool:
    """Warn (once per process) that bf16 is emulated here, with the slowdown of a small matmul.

    Returns whether it warned (False after the first time)."""
    global _warned
    if _warned:
        return False
    _warned = True
    timer = timer or matmul_seconds
    ratio = timer(torch.bfloat16) / max(timer(torch.float32), 1e-9)
    warnings.warn(
        f"bf16 on this CPU is slow: {why}; a bf16 matmul takes {ratio:.1f}x as long as fp32 here "
        "(VideoPrism-B: 123 s instead of 11 s per clip on a Zen 3 CPU). Use dtype 'auto' or 'fp32'.",
        RuntimeWarning,
        stacklevel=3,
    )
    return True


__all__ = ["DTYPE_NAMES", "DtypeChoice", "DtypeName", "native_bf16", "read_cpu_flags", "resolve_dtype"]
