"""Batched training augmentations (paper 4.2): shapes, determinism, ranges, and the evaluation path."""

from __future__ import annotations

import math

import pytest
import torch

from audioclip_search.audio import fit_length, load_audio
from audioclip_search.trainer.augment import Augmenter, add_noise, crop_or_pad, draw_params, time_flip, time_scale
from audioclip_search.trainer.config import AugmentConfig
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def real_batch():
    """Real clips of different lengths (tuxpaint sounds and ESC-50), zero-padded, with lengths."""
    files = sorted((SHARED_DATA / "tuxpaint-triples" / "animals").rglob("*.ogg"))[:4]
    files += sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:2]
    waves = [load_audio(f)[0] for f in files]
    lengths = torch.tensor([w.shape[-1] for w in waves])
    batch = torch.zeros(len(waves), 1, int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, :, : w.shape[-1]] = w
    return waves, batch, lengths


def test_eval_mode_is_centre_fit_exactly(real_batch):
    waves, batch, lengths = real_batch
    for out_len in (11025, 44100, 220500):
        aug = Augmenter(AugmentConfig(), out_len)
        out = aug(batch, lengths, torch.Generator().manual_seed(0), train=False)
        assert out.shape == (len(waves), 1, out_len)
        for i, w in enumerate(waves):
            assert torch.equal(out[i], fit_length(w, out_len)), (out_len, i)
    # disabled augmentation in training is the same deterministic fit
    off = Augmenter(AugmentConfig(enabled=False), 44100)
    assert torch.equal(off(batch, lengths, None, train=True), Augmenter(AugmentConfig(), 44100)(batch, lengths,
                                                                                                  train=False))


def test_centre_fit_multichannel_matches_fit_length():
    g = torch.Generator().manual_seed(3)
    waves = [torch.randn(2, n, generator=g) * 0.1 for n in (1000, 3000, 2000)]
    waves[1][:, 1200:1800] *= 0.01  # a quiet centre triggers the official head/tail fallback
    lengths = torch.tensor([w.shape[-1] for w in waves])
    batch = torch.zeros(3, 2, 3000)
    for i, w in enumerate(waves):
        batch[i, :, : w.shape[-1]] = w
    out = crop_or_pad(batch, lengths, 2000)
    for i, w in enumerate(waves):
        assert torch.equal(out[i], fit_length(w, 2000))


def test_training_shapes_and_determinism(real_batch):
    _, batch, lengths = real_batch
    aug = Augmenter(AugmentConfig(), 22050)
    a = aug(batch, lengths, torch.Generator().manual_seed(7))
    b = aug(batch, lengths, torch.Generator().manual_seed(7))
    c = aug(batch, lengths, torch.Generator().manual_seed(8))
    assert a.shape == (batch.shape[0], 1, 22050)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_draw_params_ranges():
    cfg = AugmentConfig()
    p = draw_params(20000, cfg, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert 0.45 < p.flip.float().mean() < 0.55
    assert 0.22 < p.noise.float().mean() < 0.28
    assert p.scale.min() >= 1 / 1.5 and p.scale.max() <= 1.5
    assert p.scale.min() < 0.7 and p.scale.max() > 1.45  # the whole range is used
    assert p.snr_db.min() >= 10.0 and p.snr_db.max() <= 120.0
    assert ((p.crop >= 0) & (p.crop < 1)).all()


def test_time_flip_reverses_valid_part_only():
    x = torch.arange(10, dtype=torch.float32).view(1, 1, 10).repeat(2, 1, 1)
    out = time_flip(x, torch.tensor([6, 10]), torch.tensor([True, False]))
    assert out[0, 0].tolist() == [5, 4, 3, 2, 1, 0, 6, 7, 8, 9]
    assert torch.equal(out[1], x[1])


def test_time_scale_lengths_and_interpolation():
    x = torch.arange(100, dtype=torch.float32).view(1, 1, 100).repeat(2, 1, 1)
    y, lengths = time_scale(x, torch.tensor([100, 50]), torch.tensor([1.5, 0.5], dtype=torch.float64))
    assert lengths.tolist() == [150, 25]
    # a linear ramp stays a ramp: sample j reads position j / factor
    assert torch.allclose(y[0, 0, :149], torch.arange(149, dtype=torch.float32) / 1.5, atol=1e-4)
    assert torch.allclose(y[1, 0, :25], torch.arange(25, dtype=torch.float32) * 2.0)
    assert (y[1, 0, 25:] == 0).all()


def test_random_crop_and_pad_positions():
    x = torch.arange(1, 101, dtype=torch.float32).view(1, 1, 100).repeat(3, 1, 1)
    lengths = torch.tensor([100, 40, 60])
    out = crop_or_pad(x, lengths, 50, torch.tensor([0.0, 0.0, 0.999], dtype=torch.float64))
    assert out[0, 0].tolist() == list(range(1, 51))  # crop at the start
    assert out[1, 0, :40].tolist() == list(range(1, 41))  # padded on the right with the last value
    assert (out[1, 0, 40:] == 40).all()
    assert out[2, 0, -1].item() == 59.0  # floor(0.999 * 10) = 9: samples 10..59 (as randint(0, span))
    assert out[2, 0, 0].item() == 10.0


def test_noise_snr_within_range():
    g = torch.Generator().manual_seed(1)
    clean = torch.sin(torch.linspace(0, 2000 * math.pi, 44100)).view(1, 1, -1).repeat(64, 1, 1) * 0.3
    snr = torch.linspace(10.0, 120.0, 64, dtype=torch.float64)
    noisy = add_noise(clean, torch.ones(64, dtype=torch.bool), snr, g)
    noise = (noisy - clean).double()
    measured = 10 * torch.log10(clean.double().pow(2).mean(dim=(1, 2)) / noise.pow(2).mean(dim=(1, 2)))
    assert torch.allclose(measured, snr, atol=0.15)
    # samples without noise are untouched, and the training path keeps every SNR in [10, 120] dB
    mask = torch.zeros(64, dtype=torch.bool)
    assert torch.equal(add_noise(clean, mask, snr, g), clean)
    aug = Augmenter(AugmentConfig(flip_p=0, time_scale=1.0, random_crop=False, noise_p=1.0), 44100)
    out = aug(clean, None, torch.Generator().manual_seed(2))
    got = 10 * torch.log10(clean.double().pow(2).mean(dim=(1, 2)) / (out - clean).double().pow(2).mean(dim=(1, 2)))
    assert got.min() > 9.8 and got.max() < 120.5


def test_generator_on_batch_device_and_silent_clip():
    silent = torch.zeros(2, 1, 1000)
    out = Augmenter(AugmentConfig(noise_p=1.0), 800)(silent, None, torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.zeros(2, 1, 800))  # no noise on silence, no NaN


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_cuda_matches_shapes():
    x = torch.randn(4, 1, 30000, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    out = Augmenter(AugmentConfig(), 22050)(x, torch.tensor([30000, 20000, 10000, 25000]), g)
    assert out.shape == (4, 1, 22050) and out.device.type == "cuda"
