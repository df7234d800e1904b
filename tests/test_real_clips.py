"""The official embeddings of 50 real ESC-50 clips, a quarter of them with long digital silence.

In silent frames the filterbank outputs are float32 rounding noise, so these clips pass only if the
front end sums in the official order (see model/fbsp.py). Both ways of embedding are checked: the
module (`AudioCLIP.encode_audio`, the training path) and the `Encoder` (cached filterbank, folded
BatchNorm, channels-last), with the fixture's own `check_real_clips.py`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from audioclip_search.encoder import Encoder

from .conftest import REFERENCE, SHARED_DATA

OFFICIAL = REFERENCE / "esc50_mini_official.npz"
AUDIO = SHARED_DATA / "esc50-mini" / "audio"


@pytest.fixture(scope="module")
def clips() -> tuple[list[str], torch.Tensor]:
    """The 50 clips as int16 PCM in float32 (int16 scale), (50, 1, 220500), in the official file order."""
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
    return names, torch.cat(waves)


def _check(tmp_path, names: list[str], embeddings: np.ndarray) -> str:
    produced = tmp_path / "produced.npz"
    np.savez(produced, names=np.array(names), audio_embedding=embeddings.astype(np.float32))
    proc = subprocess.run([sys.executable, str(REFERENCE / "check_real_clips.py"), "--actual", str(produced)],
                          capture_output=True, text=True, check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    return report


def test_silence_is_present_in_the_data(clips):
    """Guards the test's own premise: some clips hold >= 0.1 s of exact digital silence."""
    _, waves = clips
    zero_runs = 0
    for wave in waves[:, 0]:
        zero = (wave == 0).numpy().astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], zero, [0]))))
        longest = int((edges[1::2] - edges[::2]).max()) if len(edges) else 0
        zero_runs += longest >= 4410
    assert zero_runs >= 10


def test_module_path_matches_official_on_real_clips(reference_model, clips, tmp_path):
    names, waves = clips
    with torch.inference_mode():
        emb = torch.cat([reference_model.encode_audio(waves[i : i + 8]) for i in range(0, len(waves), 8)])
    assert "50/50" in _check(tmp_path, names, emb.numpy())


def test_encoder_path_matches_official_on_real_clips(reference_model, clips, tmp_path):
    names, waves = clips
    encoder = Encoder(reference_model, device="cpu", precision="fp32")
    emb = encoder.encode_audio(waves / 32768.0, normalize=False)
    assert "50/50" in _check(tmp_path, names, emb)
