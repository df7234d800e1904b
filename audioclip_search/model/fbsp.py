"""The trainable complex frequency-B-spline (FBSP) filterbank that replaces the STFT in ESResNeXt-fbsp.

The filterbank is built in float32 with the official order of operations: its kernel cos(fc*t)
has arguments up to ~3200 rad, so any other order (or float64) moves the quiet bins of real audio by
tens of dB. In inference the filterbank depends only on the parameters, so it is built once per
parameter version and reused; in training it is rebuilt on every call so gradients flow.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

_EPS = 1e-8


def _complex_power(base: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """base**exponent for complex numbers stored as (..., 2) real pairs, via magnitude and phase."""
    magnitudes = (base[..., 0] ** 2 + base[..., 1] ** 2) ** 0.5
    phases = base[..., 1].atan2(base[..., 0])
    power_real = exponent[..., 0]
    power_imag = exponent[..., 1]
    mag_out = (magnitudes**2) ** (0.5 * power_real) * torch.exp(-power_imag * phases)
    angle = power_real * phases + 0.5 * power_imag * (magnitudes**2).log()
    return mag_out.unsqueeze(-1) * torch.stack((angle.cos(), angle.sin()), dim=-1)


def _sinc(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)


def _inf_norm_rescale(grad: torch.Tensor) -> torch.Tensor:
    """The official gradient hook: each FBSP parameter's gradient is scaled by its inf-norm."""
    return grad / (torch.norm(grad, p=float("inf")) + _EPS)


class LinearFBSP(nn.Module):
    """out_features complex filters over in_features samples: (..., in) -> (..., out, 2)."""

    def __init__(self, out_features: int, normalized: bool = True):
        super().__init__()
        self.out_features = out_features
        self.normalized = normalized
        self.m = nn.Parameter(torch.zeros(out_features))
        self.fb = nn.Parameter(torch.ones(out_features))
        self.fc = nn.Parameter(torch.arange(out_features, dtype=torch.get_default_dtype()))
        # The official layer is built with bias=False as Parameter(None), which still appears in the
        # state_dict as an empty tensor; keep it so official checkpoints load with strict=True.
        self.bias = nn.Parameter(torch.empty(0))
        self._hook_parameters()
        self._cache_key: tuple | None = None
        self._cache: torch.Tensor | None = None

    def _hook_parameters(self) -> None:
        """Put the official gradient hook on m, fb and fc, once per parameter object."""
        for p in (self.m, self.fb, self.fc):
            if not getattr(p, "_fbsp_hooked", False):
                p.register_hook(_inf_norm_rescale)
                p._fbsp_hooked = True  # type: ignore[attr-defined]

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - torch signature
        # load_state_dict(assign=True) (how checkpoints are loaded) replaces the parameter objects,
        # and with them the hooks; the new ones need theirs for training to match the official.
        super()._load_from_state_dict(*args, **kwargs)
        self._hook_parameters()

    def materialize(self, in_features: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The filterbank W of shape (out, in, 2); last axis is (real, imag)."""
        t = np.pi * torch.linspace(-1.0, 1.0, in_features, dtype=dtype, device=device).reshape(1, -1, 1) + _EPS
        m = self.m.reshape(-1, 1, 1)
        fb = self.fb.reshape(-1, 1, 1)
        fc = self.fc.reshape(-1, 1, 1)
        kernel = torch.cat((torch.cos(fc * t), -torch.sin(fc * t)), dim=-1)
        scale = fb.sqrt()
        win = _sinc(fb * t / (m + _EPS))
        win = _complex_power(
            torch.cat((win, torch.zeros_like(win)), dim=-1), torch.cat((m, torch.zeros_like(m)), dim=-1)
        )
        weights = scale * torch.cat(
            (
                win[..., :1] * kernel[..., :1] - win[..., 1:] * kernel[..., 1:],
                win[..., :1] * kernel[..., 1:] + win[..., 1:] * kernel[..., :1],
            ),
            dim=-1,
        )
        if self.normalized:
            weights = weights / (in_features**0.5)
        return weights

    def filterbank(self, in_features: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """W, cached while the parameters are unchanged and no gradient is wanted."""
        wants_grad = torch.is_grad_enabled() and any(p.requires_grad for p in (self.m, self.fb, self.fc))
        if wants_grad:
            self._cache_key, self._cache = None, None
            return self.materialize(in_features, dtype, device)
        key = (
            in_features,
            dtype,
            device,
            *((p._version, p.data_ptr()) for p in (self.m, self.fb, self.fc)),
        )
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self.materialize(in_features, dtype, device)
            self._cache_key = key
        return self._cache

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - torch signature
        self._cache_key, self._cache = None, None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, normalized={self.normalized}"


def periodic_blackman_harris(length: int) -> torch.Tensor:
    """scipy.signal.get_window('blackmanharris', length, fftbins=True), in float64 then float32."""
    phi = np.linspace(-math.pi, math.pi, length + 1)
    w = 0.35875 + 0.48829 * np.cos(phi) + 0.14128 * np.cos(2 * phi) + 0.01168 * np.cos(3 * phi)
    return torch.from_numpy(w[:-1]).to(torch.get_default_dtype())


def num_frames(num_samples: int, win_length: int, hop_length: int) -> int:
    if num_samples <= win_length:
        return 1
    return 1 + math.ceil((num_samples - win_length) / hop_length)


def frame_signal(x: torch.Tensor, window: torch.Tensor, hop_length: int) -> torch.Tensor:
    """(N, T) -> windowed frames (N, frames, win): zero-padded as the official framing, via a view."""
    win_length = window.shape[0]
    n = num_frames(x.shape[-1], win_length, hop_length)
    pad = (n - 1) * hop_length + win_length - x.shape[-1]
    if pad > 0:
        x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2))
    return x.unfold(-1, win_length, hop_length) * window


def int16_scale_to_unit(x: torch.Tensor) -> torch.Tensor:
    """The official asymmetric map of [-32768, 32767] onto [-1, 1] (0 becomes +1.526e-5)."""
    return ((x - -32768.0) * 2.0) / 65535.0 + -1.0


def power_spectrogram_db(
    audio: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor, hop_length: int, bands: int
) -> torch.Tensor:
    """int16-scaled waveform (B, C, T) -> dB power (B, C, bands, bins_per_band, frames).

    Follows the official order of operations, because on real audio that order decides the
    output: ESC-50 and many other recordings hold runs of exact digital silence, which the
    asymmetric int16 map turns into a tiny constant, and most filter outputs of such a frame are
    float32 rounding noise whose dB value (and through it the embedding) depends on how the
    products are summed. So each windowed frame is zero-padded from win_length to n_fft (the GEMM
    then blocks the sum over the same columns) and the real and imaginary filters are applied as
    two `F.linear` calls on views of the (out, n_fft, 2) filterbank, as `LinearFBSP.forward` does.
    Multiplying only the columns facing real samples, or one stacked matrix for both filters, sums
    in another order and moves silent frames by up to ~10 dB. Bins are then split into `bands`
    contiguous bands and the leftover top bins dropped, as the official split.
    """
    batch, channels = audio.shape[:2]
    x = int16_scale_to_unit(audio.to(torch.get_default_dtype()))
    frames = frame_signal(x.reshape(-1, x.shape[-1]), window, hop_length)
    pad = filterbank.shape[1] - window.shape[0]
    if pad > 0:
        frames = torch.nn.functional.pad(frames, (pad // 2, pad - pad // 2))
    real = torch.nn.functional.linear(frames, filterbank[..., 0])  # (N, frames, out)
    imag = torch.nn.functional.linear(frames, filterbank[..., 1])
    keep = bands * (filterbank.shape[0] // bands)
    power = real[..., :keep] ** 2 + imag[..., :keep] ** 2
    power = torch.where(power > 0.0, power, torch.full_like(power, 1e-18))
    power = power.transpose(-1, -2).reshape(batch, channels, bands, keep // bands, -1)
    return torch.log10(power).mul(10.0)


def filterbank_norm_loss(filterbank: torch.Tensor, normalized: bool) -> torch.Tensor:
    """MSE between each filter's Frobenius norm and its target (1 when normalized, else sqrt(n_fft))."""
    norms = torch.norm(filterbank, p=2, dim=[-1, -2])
    target = 1.0 if normalized else filterbank.shape[1] ** 0.5
    return torch.nn.functional.mse_loss(norms, torch.full_like(norms, target))
