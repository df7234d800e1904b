"""Clip geometry: the model's input scale, the official pad/crop, and the window grid.

Pure tensor arithmetic shared by the indexer, queries, evaluation and training, so a clip is cut
and scaled the same way everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["INT16_SCALE", "MODEL_SAMPLE_RATE", "fit_length", "to_model_scale", "window_starts"]

MODEL_SAMPLE_RATE = 44100
INT16_SCALE = 32768.0


def to_model_scale(waveform: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float audio -> the model's input scale (int16 range), as float32.

    The official AudioCLIP feeds librosa's float audio times 32768; this is the only place the
    product does that conversion, so training, indexing and querying cannot disagree.
    """
    import torch

    return waveform.to(torch.float32) * INT16_SCALE


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Pad or crop ``(..., T)`` audio to exactly ``length`` samples, deterministically.

    Exactly the official evaluation transforms (``RandomPadding(train=False)`` then
    ``RandomCrop(train=False)``), so embeddings match the published model's:

    * shorter: centred, the left pad filled with the mean over channels of the first sample and
      the right pad with that of the last sample (no click from a jump to zero);
    * longer: the centre crop, unless it is much quieter than the clip (std below half the
      clip's), then the first ``length`` samples, or the last ones if those are quieter still
      than half the clip but louder than the centre. The result may be a view of the input.
    """
    import torch

    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    n = waveform.shape[-1]
    if n == 0:
        raise ValueError("cannot fit an empty waveform")
    if n == length:
        return waveform
    if n < length:
        left = int(round(0.5 * (length - n)))
        right = length - (left + n)
        lead = waveform.shape[:-1]
        left_value = waveform[..., 0].float().mean().to(waveform.dtype)
        right_value = waveform[..., -1].float().mean().to(waveform.dtype)
        left_pad = torch.empty(lead + (left,), dtype=waveform.dtype, device=waveform.device).fill_(left_value)
        right_pad = torch.empty(lead + (right,), dtype=waveform.dtype, device=waveform.device).fill_(right_value)
        return torch.cat((left_pad, waveform, right_pad), dim=-1)
    left = int(round(0.5 * (n - length)))
    centre = waveform[..., left : left + length]
    if length == 1:
        # The std of one sample is NaN and every comparison below is False: the centre stays.
        return centre
    orig_std = waveform.float().std() * 0.5
    centre_std = centre.float().std()
    output = centre
    if centre_std < orig_std:
        output = waveform[..., :length]
    new_std = output.float().std()
    if orig_std > new_std > centre_std:
        output = waveform[..., -length:]
    return output


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of ``window``-sample windows every ``hop`` samples covering the whole signal.

    The regular grid 0, hop, 2*hop, ... is kept while windows fit; if it does not reach the end,
    one last window ends exactly at the end. A signal no longer than ``window`` gives ``[0]``
    (to be padded by ``fit_length``).
    """
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts
