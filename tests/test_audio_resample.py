"""Resampling with soxr: frequency response of sines and white noise at every common and odd rate,
the output-length rule, and block-wise resampling equal to one call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from audioclip_search.audio import RESAMPLE_QUALITY, StreamResampler, resample, resampled_length

RATES = [8000, 16000, 22050, 44056, 48000, 96000, 192000]
TARGET = 44100


def _resample_np(x: np.ndarray, orig: int, new: int = TARGET) -> np.ndarray:
    return resample(torch.from_numpy(x.astype(np.float32))[None], orig, new)[0].double().numpy()


def test_quality_is_pinned():
    assert RESAMPLE_QUALITY == "VHQ"


@pytest.mark.parametrize("rate", RATES)
def test_sine_passband_keeps_amplitude_and_frequency(rate):
    """Tones up to 85 % of the lower Nyquist frequency come out at the same level and frequency."""
    nyquist = min(rate, TARGET) / 2
    seconds = 1.0
    t = np.arange(int(rate * seconds)) / rate
    for freq in (100.0, 0.25 * nyquist, 0.5 * nyquist, 0.85 * nyquist):
        y = _resample_np(0.5 * np.sin(2 * np.pi * freq * t), rate)
        assert len(y) == resampled_length(len(t), rate, TARGET)
        mid = y[len(y) // 8 : -len(y) // 8]  # away from the filter's edge transients
        tt = (np.arange(len(y)) / TARGET)[len(y) // 8 : -len(y) // 8]
        # least-squares fit of a sine at `freq`: amplitude within 0.01 dB, residual tiny
        basis = np.stack([np.sin(2 * np.pi * freq * tt), np.cos(2 * np.pi * freq * tt)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, mid, rcond=None)
        amplitude = float(np.hypot(*coef))
        assert 20 * np.log10(amplitude / 0.5) == pytest.approx(0.0, abs=0.01), (rate, freq)
        residual = mid - basis @ coef
        assert np.sqrt(np.mean(residual**2)) < 1e-4, (rate, freq)


@pytest.mark.parametrize("rate", [r for r in RATES if r > TARGET])
def test_tones_above_the_new_nyquist_are_removed(rate):
    """Downsampling must not fold what 44.1 kHz cannot carry back into the audible band."""
    t = np.arange(rate) / rate
    freq = 0.5 * (TARGET / 2 + rate / 2)  # between the two Nyquist frequencies
    y = _resample_np(0.5 * np.sin(2 * np.pi * freq * t), rate)
    mid = y[len(y) // 8 : -len(y) // 8]
    level_db = 20 * np.log10(np.sqrt(np.mean(mid**2)) / (0.5 / np.sqrt(2)) + 1e-20)
    assert level_db < -100, (rate, level_db)


@pytest.mark.parametrize("rate", RATES)
def test_white_noise_spectrum_is_flat_in_the_passband(rate):
    rng = np.random.default_rng(rate)
    x = 0.25 * rng.standard_normal(rate * 8)
    y = _resample_np(x, rate)
    f_in, p_in = signal.welch(x, fs=rate, nperseg=2048)
    f_out, p_out = signal.welch(y, fs=TARGET, nperseg=2048)
    top = 0.85 * min(rate, TARGET) / 2
    edges = np.linspace(100, top, 13)
    ratio_db = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):  # band averages: the estimate's scatter averages out
        d_in = p_in[(f_in >= lo) & (f_in < hi)].mean()
        d_out = p_out[(f_out >= lo) & (f_out < hi)].mean()
        ratio_db.append(10 * np.log10(d_out / d_in))
    ratio_db = np.array(ratio_db)
    # white noise keeps its density (V^2/Hz) across a rate change: 0 dB across the pass band
    assert np.max(np.abs(ratio_db)) < 0.25, (rate, ratio_db.round(3))
    assert abs(float(np.mean(ratio_db))) < 0.1, (rate, float(np.mean(ratio_db)))
    if rate > TARGET:  # and nothing of the band above 22.05 kHz folds back
        alias = p_out[(f_out > 0.95 * TARGET / 2)].mean()
        assert 10 * np.log10(alias / p_in[(f_in > 100) & (f_in < top)].mean()) < -3


def test_output_length_rule():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 6000))
        orig = int(rng.choice(RATES + [11025, 22254, 32000]))
        new = int(rng.choice([8000, 16000, 44100, 48000]))
        expected = (2 * n * new + orig) // (2 * orig)  # floor(n * new / orig + 1/2)
        assert resampled_length(n, orig, new) == expected
        if orig != new:
            out = resample(torch.zeros(1, n), orig, new)
            assert out.shape == (1, expected), (n, orig, new)
    assert resampled_length(5, 44100, 44100) == 5
    with pytest.raises(ValueError):
        resampled_length(5, 0, 44100)


@pytest.mark.parametrize(("orig", "channels"), [(48000, 2), (22254, 1), (192000, 6), (8000, 1)])
def test_blockwise_resampling_equals_one_call(orig, channels):
    rng = np.random.default_rng(orig)
    x = rng.uniform(-0.9, 0.9, (orig * 3 + 17, channels)).astype(np.float32)
    whole = resample(torch.from_numpy(x.T.copy()), orig, TARGET).numpy().T
    stream = StreamResampler(orig, TARGET, channels)
    sizes = rng.integers(1, orig // 2, 40)
    parts, at = [], 0
    for size in sizes:
        if at >= len(x):
            break
        parts.append(stream.push(x[at : at + int(size)]))
        at += int(size)
    parts.append(stream.push(x[at:]))
    parts.append(stream.flush())
    blocks = np.concatenate(parts)
    assert blocks.shape == whole.shape
    np.testing.assert_array_equal(blocks, whole)


def test_same_rate_is_identity_and_batch_shape_is_kept():
    x = torch.randn(3, 2, 1000)
    assert resample(x, 44100, 44100) is x
    y = resample(x, 48000, 44100)
    assert y.shape == (3, 2, resampled_length(1000, 48000, 44100)) and y.dtype == torch.float32
