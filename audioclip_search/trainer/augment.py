"""Batched audio augmentations of the paper (section 4.2), on (B, C, T) tensors on any device.

The order and arithmetic are the official transforms' (``utils/transforms.py`` of the AudioCLIP
repository): time inversion (p=0.5), time scaling by ``max_scale ** U(-1, 1)`` with linear
interpolation, random padding / cropping to the clip length (with the official "quiet crop"
fallback to the head or tail of the clip), and additive white Gaussian noise with an SNR drawn
uniformly from [10, 120] dB with p=0.25. In evaluation every random operation is replaced by the
centre one, which is exactly ``audio.fit_length`` applied to each clip.

Clips of different lengths travel as one zero-padded batch plus a ``lengths`` tensor; nothing
loops over the batch in Python. All randomness comes from the ``torch.Generator`` passed in (on
the batch's device), so a seeded generator reproduces a batch exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import AugmentConfig

__all__ = ["AugmentParams", "Augmenter", "add_noise", "crop_or_pad", "draw_params", "time_flip", "time_scale"]


@dataclass
class AugmentParams:
    """The random draws of one batch, all (B,) on the batch's device."""

    flip: torch.Tensor  # bool
    scale: torch.Tensor  # float64 factors
    crop: torch.Tensor  # uniform [0, 1) position of the random crop / pad
    noise: torch.Tensor  # bool
    snr_db: torch.Tensor  # float64


def draw_params(batch: int, config: AugmentConfig, generator: torch.Generator | None,
                device: torch.device) -> AugmentParams:
    """One fixed-layout draw of every per-sample random number (5 x B uniforms)."""
    u = torch.rand(5, batch, generator=generator, device=device, dtype=torch.float64)
    flip = u[0] < config.flip_p
    scale = torch.pow(torch.full_like(u[1], float(config.time_scale)), u[1] * 2.0 - 1.0)
    noise = u[3] < config.noise_p
    snr = config.snr_min_db + u[4] * (config.snr_max_db - config.snr_min_db)
    return AugmentParams(flip=flip, scale=scale, crop=u[2], noise=noise, snr_db=snr)


def _lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)
    lengths = lengths.to(device=x.device, dtype=torch.long)
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"lengths must be ({x.shape[0]},), got {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > x.shape[-1]).any()):
        raise ValueError("every length must be in [1, T]")
    return lengths


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, C, T) at per-sample time indices (B, N) -> (B, C, N)."""
    return x.gather(2, index.unsqueeze(1).expand(x.shape[0], x.shape[1], index.shape[-1]))


def time_flip(x: torch.Tensor, lengths: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """Reverse the valid part (the first ``lengths[b]`` samples) of the samples where ``mask``."""
    lengths = _lengths(x, lengths)
    t = torch.arange(x.shape[-1], device=x.device).unsqueeze(0)
    reversed_index = (lengths.unsqueeze(1) - 1 - t).clamp(min=0)
    index = torch.where(mask.unsqueeze(1) & (t < lengths.unsqueeze(1)), reversed_index, t.expand_as(reversed_index))
    return _gather_time(x, index)


def time_scale(x: torch.Tensor, lengths: torch.Tensor | None, factors: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stretch each clip by its factor (duration and pitch together) with linear interpolation.

    Output length ``int(length * factor)``, sample ``j`` read at position ``j / factor`` between
    its two neighbours, as the official ``RandomScale``. Returns the zero-padded batch and the new
    lengths.
    """
    lengths = _lengths(x, lengths)
    factors = factors.to(device=x.device, dtype=torch.float64)
    new_lengths = torch.floor(lengths.double() * factors).long().clamp(min=1)
    out_len = int(new_lengths.max())
    ref = torch.arange(out_len, device=x.device, dtype=torch.float64).unsqueeze(0) / factors.unsqueeze(1)
    last = (lengths - 1).unsqueeze(1)
    ref1 = torch.minimum(ref.long(), last)
    ref2 = torch.minimum(ref1 + 1, last)
    weight = (ref - ref1.double()).clamp(0.0, 1.0).to(x.dtype).unsqueeze(1)
    y = _gather_time(x, ref1) * (1 - weight) + _gather_time(x, ref2) * weight
    valid = torch.arange(out_len, device=x.device).unsqueeze(0) < new_lengths.unsqueeze(1)
    return y * valid.unsqueeze(1).to(y.dtype), new_lengths


def _window_std(sums: torch.Tensor, squares: torch.Tensor, start: torch.Tensor, size: torch.Tensor,
                channels: int) -> torch.Tensor:
    """Unbiased std over channels x [start, start + size) from (B, T + 1) prefix sums (float64)."""
    s = sums.gather(1, (start + size).unsqueeze(1)) - sums.gather(1, start.unsqueeze(1))
    s2 = squares.gather(1, (start + size).unsqueeze(1)) - squares.gather(1, start.unsqueeze(1))
    n = (size * channels).double().unsqueeze(1)
    var = (s2 - s * s / n) / (n - 1).clamp(min=1)
    return var.clamp(min=0).sqrt().squeeze(1)


def _offset(span: torch.Tensor, position: torch.Tensor | None) -> torch.Tensor:
    """Where in ``span`` free samples a clip's window (or a short clip) starts: ``floor(position *
    span)``, or the rounded middle when ``position`` is None; never past ``span``."""
    if position is None:
        offset = torch.round(0.5 * span.double()).long()
    else:
        offset = torch.floor(position.to(span.device, torch.float64) * span.double()).long()
    return torch.minimum(offset, span)


def crop_or_pad(x: torch.Tensor, lengths: torch.Tensor | None, out_len: int,
                position: torch.Tensor | None = None) -> torch.Tensor:
    """Fit every clip to ``out_len`` samples: random where ``position`` (U[0, 1) per sample) is
    given, centred where it is ``None`` (then each row equals ``audio.fit_length`` of its clip).

    Longer clips: the window at ``floor(position * (length - out_len))`` (centre: the rounded
    middle); if it is much quieter than the clip (std below half the clip's), the first
    ``out_len`` samples, or the last ones when those are quieter still than half the clip but
    louder than the window. Shorter clips: placed at ``floor(position * (out_len - length))``
    (centre: the rounded middle), the left gap filled with the channel mean of the first sample
    and the right gap with that of the last.
    """
    if out_len < 1:
        raise ValueError(f"out_len must be >= 1, got {out_len}")
    lengths = _lengths(x, lengths)
    batch, channels, total = x.shape
    device = x.device
    longer = lengths > out_len
    shorter = lengths < out_len
    out = torch.full_like(lengths, out_len)

    span = (lengths - out_len).clamp(min=0)
    crop_start = _offset(span, position)
    start = torch.zeros_like(lengths)
    if bool(longer.any()):
        start = torch.where(longer, crop_start, start)
        if out_len > 1:
            t = torch.arange(total, device=device).unsqueeze(0)
            valid = (t < lengths.unsqueeze(1)).unsqueeze(1)
            xd = torch.where(valid, x.double(), torch.zeros((), dtype=torch.float64, device=device))
            zero = torch.zeros(batch, 1, dtype=torch.float64, device=device)
            sums = torch.cat((zero, xd.sum(1).cumsum(1)), dim=1)
            squares = torch.cat((zero, (xd * xd).sum(1).cumsum(1)), dim=1)
            half_std = _window_std(sums, squares, torch.zeros_like(lengths), lengths, channels) * 0.5
            crop_std = _window_std(sums, squares, crop_start, out, channels)
            head_std = _window_std(sums, squares, torch.zeros_like(lengths), out, channels)
            use_head = crop_std < half_std
            use_tail = use_head & (half_std > head_std) & (head_std > crop_std)
            chosen = torch.where(use_tail, span, torch.where(use_head, torch.zeros_like(span), crop_start))
            start = torch.where(longer, chosen, start)

    pad_span = (out_len - lengths).clamp(min=0)
    left = _offset(pad_span, position)
    start = torch.where(shorter, -left, start)

    index = start.unsqueeze(1) + torch.arange(out_len, device=device).unsqueeze(0)  # (B, out_len)
    clamped = torch.minimum(index.clamp(min=0), (lengths - 1).unsqueeze(1))
    y = _gather_time(x, clamped)
    if bool(shorter.any()):
        first = x[:, :, 0].float().mean(1).to(x.dtype)
        last_index = (lengths - 1).view(batch, 1, 1).expand(batch, channels, 1)
        last = x.gather(2, last_index).squeeze(2).float().mean(1).to(x.dtype)
        before = (index < 0).unsqueeze(1)
        after = (index >= lengths.unsqueeze(1)).unsqueeze(1)
        y = torch.where(before, first.view(batch, 1, 1), torch.where(after, last.view(batch, 1, 1), y))
    return y


def add_noise(x: torch.Tensor, mask: torch.Tensor, snr_db: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
    """Add white Gaussian noise at ``snr_db`` (per sample, relative to the clip's mean power)
    to the samples where ``mask``; silent clips get none."""
    if not bool(mask.any()):
        return x
    power = x.double().pow(2).mean(dim=(1, 2))
    noise_power = power / torch.pow(10.0, snr_db.to(power) / 10.0)
    std = (noise_power.sqrt() * mask.to(power)).to(x.dtype)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * std.view(-1, 1, 1)


class Augmenter:
    """``(audio, lengths) -> (B, C, clip_samples)``: the paper's training augmentations, or the
    deterministic centre fit in evaluation (``train=False``) or when augmentation is disabled."""

    def __init__(self, config: AugmentConfig, clip_samples: int):
        if clip_samples < 1:
            raise ValueError(f"clip_samples must be >= 1, got {clip_samples}")
        self.config = config
        self.clip_samples = clip_samples

    def __call__(self, audio: torch.Tensor, lengths: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, train: bool = True) -> torch.Tensor:
        if audio.dim() != 3:
            raise ValueError(f"audio must be (batch, channels, samples), got {tuple(audio.shape)}")
        lengths = _lengths(audio, lengths)
        cfg = self.config
        if not (train and cfg.enabled):
            return crop_or_pad(audio, lengths, self.clip_samples, None)
        params = draw_params(audio.shape[0], cfg, generator, audio.device)
        x = audio
        if cfg.flip_p > 0:
            x = time_flip(x, lengths, params.flip)
        if cfg.time_scale > 1:
            x, lengths = time_scale(x, lengths, params.scale)
        x = crop_or_pad(x, lengths, self.clip_samples, params.crop if cfg.random_crop else None)
        if cfg.noise_p > 0:
            x = add_noise(x, params.noise, params.snr_db, generator)
        return x
