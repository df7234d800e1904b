"""The official embeddings of 50 real ESC-50 clips, a quarter of them with long digital silence.

In silent frames the filterbank outputs are float32 rounding noise, so those clips match the
official embeddings only where the front end sums in the official order (see model/fbsp.py) *and*
the CPU's float32 kernels round as the fixture's machine did. The second condition does not hold
everywhere: on an AVX-512 Xeon (torch 2.15, MKL), the authors' own code, run untouched on the
fixture's weights, reaches 38/50 (worst cosine 0.99812, the 12 silent clips), and our module path
is bit-for-bit equal to it there. So the checks are split by what each can prove on any machine:

- clips without digital silence: cosine >= 1 - 1e-5 (the fixture's tolerance), both paths;
- clips with digital silence: a floor that a real front-end change breaks (removing the DC
  offset of the asymmetric int16 map drops them to ~0.92) but another CPU's rounding does not;
- the order of the sums itself, bit for bit, against the recipe of shared/reference/README.md
  ("Behaviour of the official code"), computed here independently of model/fbsp.py.

Both ways of embedding are checked: the module (`AudioCLIP.encode_audio`, the training path) and
the `Encoder` (cached filterbank, folded BatchNorm, channels-last).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from audioclip_search.encoder import Encoder

from .conftest import REFERENCE, SHARED_DATA

OFFICIAL = REFERENCE / "esc50_mini_official.npz"
AUDIO = SHARED_DATA / "esc50-mini" / "audio"
#: A clip "holds digital silence" with a run of int16 zeros this long (0.1 s at 44.1 kHz).
SILENT_RUN = 4410
#: Silent clips' cosine floor on any CPU: measured worst 0.99812 for the official code on an AVX-512
#: machine; 0.922 with the front end's DC offset removed.
SILENT_FLOOR = 0.995


def _fixture_tolerance() -> float:
    """The fixture's own tolerance (check_real_clips.COS_TOL), read from its script."""
    spec = importlib.util.spec_from_file_location("check_real_clips", REFERENCE / "check_real_clips.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.COS_TOL


def _longest_zero_run(wave: np.ndarray) -> int:
    zero = (wave == 0).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], zero, [0]))))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


@pytest.fixture(scope="module")
def clips() -> tuple[list[str], torch.Tensor, np.ndarray]:
    """The 50 clips as int16 PCM in float32 (int16 scale), (50, 1, 220500), in the official file
    order, and which of them hold digital silence."""
    if not OFFICIAL.is_file():
        pytest.fail(f"official real-clip embeddings missing at {OFFICIAL}")
    official = np.load(OFFICIAL)
    names = [str(n) for n in official["names"]]
    waves = []
    for name, digest in zip(names, official["file_sha256"], strict=True):
        path = AUDIO / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == str(digest), f"{path} differs from the official run's"
        pcm, rate = sf.read(path, dtype="int16")
        assert rate == 44100 and pcm.ndim == 1
        waves.append(torch.from_numpy(pcm.astype(np.float32)).reshape(1, 1, -1))
    waves = torch.cat(waves)
    silent = np.array([_longest_zero_run(w.numpy()) >= SILENT_RUN for w in waves[:, 0]])
    return names, waves, silent


def _assert_matches_official(names: list[str], embeddings: np.ndarray, silent: np.ndarray) -> None:
    official = np.load(OFFICIAL)
    assert [str(n) for n in official["names"]] == names
    ours, theirs = embeddings.astype(np.float64), official["audio_embedding"].astype(np.float64)
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    tolerance = _fixture_tolerance()
    loud = [f"{n}: cos {c:.7f}" for n, c, s in zip(names, cos, silent, strict=True) if not s and c < 1 - tolerance]
    quiet = [f"{n}: cos {c:.7f}" for n, c, s in zip(names, cos, silent, strict=True) if s and c < SILENT_FLOOR]
    assert not loud, f"clips without digital silence off the official embeddings (tolerance {tolerance:g}): {loud}"
    assert not quiet, f"clips with digital silence below cos {SILENT_FLOOR}: {quiet}"


def test_silence_is_present_in_the_data(clips):
    """Guards the test's own premise: some clips hold >= 0.1 s of exact digital silence."""
    _, _, silent = clips
    assert silent.sum() >= 10 and (~silent).sum() >= 10


def _official_recipe_db(pcm: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor) -> torch.Tensor:
    """dB power of one int16-scaled clip (T,), written from the README's account of the official
    code: map 0 to +1.526e-5, 1 + ceil((T - 1654) / 561) frames with the padding split pad//2 left,
    each frame windowed then zero-padded to n_fft, real and imaginary filters as two ``F.linear``
    calls on views of the (out, n_fft, 2) filterbank, power floored at 1e-18, 10 log10; the top
    bins that do not fill 3 bands dropped."""
    win, hop, n_fft = window.shape[0], 561, filterbank.shape[1]
    x = (pcm + 32768.0) * 2.0 / 65535.0 - 1.0
    n = 1 + math.ceil((x.shape[0] - win) / hop)
    pad = (n - 1) * hop + win - x.shape[0]
    x = torch.cat([torch.zeros(pad // 2), x, torch.zeros(pad - pad // 2)])
    frames = torch.stack([x[i * hop : i * hop + win] * window for i in range(n)])
    side = (n_fft - win) // 2
    frames = torch.cat([torch.zeros(n, side), frames, torch.zeros(n, n_fft - win - side)], dim=1)
    real = torch.nn.functional.linear(frames, filterbank[..., 0])
    imag = torch.nn.functional.linear(frames, filterbank[..., 1])
    power = real**2 + imag**2
    power = torch.where(power > 0, power, torch.tensor(1e-18))
    keep = 3 * (filterbank.shape[0] // 3)
    return (10.0 * torch.log10(power[:, :keep])).T.reshape(3, keep // 3, n)


def test_front_end_sums_in_the_official_order_bit_for_bit(reference_model, clips):
    """On any CPU: the product's dB spectrogram equals the README's recipe exactly, on clips with
    and without digital silence (summing in another order changes the silent frames' bits)."""
    _, waves, silent = clips
    audio = reference_model.audio
    picks = [*np.flatnonzero(silent)[:2], np.flatnonzero(~silent)[0]]
    with torch.inference_mode():
        ours = audio.spectrogram(waves[picks])
        filterbank = audio.fbsp.filterbank(audio.n_fft, torch.float32, torch.device("cpu"))
        for row, i in enumerate(picks):
            expected = _official_recipe_db(waves[i, 0], audio.window.float(), filterbank)
            assert torch.equal(ours[row, 0], expected), f"clip {i}: front end differs from the official recipe"


def test_module_path_matches_official_on_real_clips(reference_model, clips):
    names, waves, silent = clips
    with torch.inference_mode():
        emb = torch.cat([reference_model.encode_audio(waves[i : i + 8]) for i in range(0, len(waves), 8)])
    _assert_matches_official(names, emb.numpy(), silent)


def test_encoder_path_matches_official_on_real_clips(reference_model, clips):
    names, waves, silent = clips
    encoder = Encoder(reference_model, device="cpu", precision="fp32")
    emb = encoder.encode_audio(waves / 32768.0, normalize=False)
    _assert_matches_official(names, emb, silent)
