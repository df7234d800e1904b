"""Audio in: every part of the product (indexer, evaluator, trainer, web server) reads sound here.

* :mod:`.decode` turns files into float PCM (libsndfile, PyAV), whole or streamed in blocks;
* :mod:`.resample` converts rates with soxr;
* :mod:`.limits` refuses files before decoding (size, duration, type) and names the reason;
* :mod:`.clip` holds clip geometry: the model's scale, the official pad/crop, the window grid.

Importing this package is cheap: torch, soundfile, soxr and av load on first use.
"""

from .clip import INT16_SCALE, MODEL_SAMPLE_RATE, fit_length, to_model_scale, window_starts
from .decode import AUDIO_EXTENSIONS, AudioStream, load_audio, probe_audio, stream_audio
from .limits import AudioInfo, AudioLimits, format_bytes
from .resample import RESAMPLE_QUALITY, StreamResampler, resample, resampled_length

__all__ = [
    "AUDIO_EXTENSIONS",
    "INT16_SCALE",
    "MODEL_SAMPLE_RATE",
    "RESAMPLE_QUALITY",
    "AudioInfo",
    "AudioLimits",
    "AudioStream",
    "StreamResampler",
    "fit_length",
    "format_bytes",
    "load_audio",
    "probe_audio",
    "resample",
    "resampled_length",
    "stream_audio",
    "to_model_scale",
    "window_starts",
]
