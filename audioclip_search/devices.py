"""Device and precision choice: the same code path on CPU and CUDA, switched by availability."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]

# Retrieval agreement of bf16 with fp32: the worst mean top-10 overlap over text->audio,
# audio->audio and audio->image on esc50-mini (50), us8k-mini (37) and tuxpaint-triples (first 50),
# measured by benchmarks/bf16_agreement.py (fixture weights, torch 2.15, 2026-12-03): 0.870 (us8k
# text->audio); zero-shot label agreement 0.84-1.0. 'auto' may pick bf16 on a CPU only when this
# reaches BF16_MIN_OVERLAP: a faster search that ranks differently is not the same product.
CPU_BF16_TOP10_OVERLAP = 0.870
BF16_MIN_OVERLAP = 0.95
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AMX or AVX-512-BF16); elsewhere it is emulated and slow."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a clear error, not a silent fallback."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    return dev


def resolve_precision(precision: Precision | str, device: torch.device) -> str:
    """'auto' means bf16 autocast on CUDA (fp16 where bf16 is missing); on CPU, faithful fp32, unless
    the CPU has native bf16 and bf16's measured retrieval agreement clears BF16_MIN_OVERLAP."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("fp16 is not supported on CPU; use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if cpu_has_native_bf16() and CPU_BF16_TOP10_OVERLAP >= BF16_MIN_OVERLAP:
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the model's forward; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
