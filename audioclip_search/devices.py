"""Device and precision choice: the same code path on CPU and CUDA, switched by availability."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a clear error, not a silent fallback."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    return dev


def resolve_precision(precision: Precision | str, device: torch.device) -> str:
    """'auto' means bf16 autocast on CUDA (fp16 where bf16 is missing) and faithful fp32 on CPU."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("fp16 is not supported on CPU; use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
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
