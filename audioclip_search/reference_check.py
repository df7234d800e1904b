"""Produce the arrays of the AudioCLIP numerical reference fixture with this implementation.

The fixture (shared/reference) was made by running the official code on deterministic weights;
`produce_fixture_arrays` runs ours on the same weights and inputs so `check.py` can compare them.
Used by the test-suite and by the speed benchmark (to report agreement under AMP/bf16).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .devices import autocast
from .image import image_transform, load_image
from .model import AudioCLIP
from .text import format_labels, tokenize


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def reference_model(reference_dir: Path) -> AudioCLIP:
    """The full-size model with the fixture's deterministic weights, loaded strictly."""
    with _on_path(reference_dir):
        import weights  # the fixture's own generator

        state = weights.deterministic_state_dict(weights.load_manifest())
    model = AudioCLIP("audioclip-rn50")
    model.load_state_dict(state, strict=True)
    return model.eval()


def produce_fixture_arrays(
    model: AudioCLIP, reference_dir: Path, device: torch.device | str = "cpu", precision: str = "fp32"
) -> dict[str, np.ndarray]:
    """Run every computation named in the fixture README; returns name -> array."""
    import soundfile as sf

    device = torch.device(device)
    model = model.to(device).eval()
    inputs = json.loads((reference_dir / "inputs" / "inputs.json").read_text())
    expected = np.load(reference_dir / "expected.npz")
    out: dict[str, np.ndarray] = {}

    out["token_ids"] = tokenize(inputs["texts"]).numpy()
    out["fwd_token_ids"] = tokenize(format_labels(inputs["forward_text"])).numpy()
    clips = [sf.read(reference_dir / "inputs" / f, dtype="float32")[0] for f in inputs["audio_files"]]
    out["audio_input"] = np.stack([c[None, :] for c in clips]) * np.float32(32768)
    stereo = np.load(reference_dir / "inputs" / inputs["stereo_clip"])["waveform"].astype(np.float32)
    out["audio_stereo_input"] = stereo[None] * np.float32(32768)
    out["synth_mono_input"] = stereo[:, None, :] * np.float32(32768)
    transform = image_transform()
    out["image_input"] = torch.stack(
        [transform(load_image(reference_dir / "inputs" / f)) for f in inputs["image_files"]]
    ).numpy()

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(expected[name]).to(device)

    with torch.inference_mode(), autocast(device, precision):
        audio = model.audio
        out["audio_spectrogram"] = audio.spectrogram(t("audio_input")).float().cpu().numpy()
        out["audio_stereo_spectrogram"] = audio.spectrogram(t("audio_stereo_input")).float().cpu().numpy()
        fb = audio.fbsp.filterbank(audio.n_fft, torch.float32, device)
        out["fbsp_weight_norms"] = torch.norm(fb, p=2, dim=[-1, -2]).float().cpu().numpy()
        out["fbsp_weight_rows"] = fb[expected["fbsp_rows_index"]].float().cpu().numpy()
        out["audio_embedding"] = model.encode_audio(t("audio_input")).float().cpu().numpy()
        out["audio_stereo_embedding"] = model.encode_audio(t("audio_stereo_input")).float().cpu().numpy()
        out["synth_mono_embedding"] = model.encode_audio(t("synth_mono_input")).float().cpu().numpy()
        out["image_embedding"] = model.encode_image(t("image_input")).float().cpu().numpy()
        out["text_embedding"] = model.encode_text(t("token_ids")).float().cpu().numpy()
        out["fwd_text_embedding"] = model.encode_text(t("fwd_token_ids")).float().cpu().numpy()
        for prefix, audio_name in (("", "audio_input"), ("synth_", "synth_mono_input")):
            (_, logits), loss = model(t(audio_name), t("image_input"), t("fwd_token_ids"))
            for name, value in zip(("audio_image", "audio_text", "image_text"), logits, strict=True):
                out[f"{prefix}logits_{name}"] = value.float().cpu().numpy()
            out[f"{prefix}loss"] = loss.float().cpu().numpy()
        out["loss_ttf"] = audio.loss_ttf().float().cpu().numpy()
    return out


def run_check(produced: Path, reference_dir: Path, core_only: bool = False) -> tuple[int, str]:
    """Run the fixture's check.py on a produced .npz; returns (exit status, report)."""
    import subprocess

    cmd = [sys.executable, str(reference_dir / "check.py"), "--actual", str(produced), "--skip-weights"]
    if core_only:
        cmd.append("--core-only")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr
