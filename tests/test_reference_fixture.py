"""Our AudioCLIP against the official implementation's numerical fixture (both tiers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioclip_search.model import AudioCLIP
from audioclip_search.reference_check import produce_fixture_arrays, run_check

from .conftest import REFERENCE


@pytest.fixture(scope="module")
def produced(tmp_path_factory, reference_model):
    if not (REFERENCE / "check.py").is_file():
        pytest.fail(f"reference fixture missing at {REFERENCE}")
    model = reference_model
    arrays = produce_fixture_arrays(model, REFERENCE)
    path = tmp_path_factory.mktemp("fixture") / "produced.npz"
    np.savez(path, **arrays)
    return model, arrays, path


def test_state_dict_layout_matches_manifest():
    import json

    manifest = json.loads((REFERENCE / "manifest.json").read_text())
    ours = AudioCLIP().state_dict()
    expected = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in manifest["entries"]]
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in ours.items()]
    assert got == expected  # same keys, same order, same shapes and dtypes


def test_fixture_check_passes_both_tiers(produced):
    _, _, path = produced
    status, report = run_check(path, REFERENCE)
    assert status == 0, report
    assert "0 fail" in report and "0 missing" in report


def test_stereo_embedding_is_sum_of_channels(produced):
    """emb(stereo) = emb(L) + emb(R) - fc.bias: channels pooled by sum, fc applied once."""
    model, arrays, _ = produced
    left_right = arrays["synth_mono_embedding"]
    bias = model.audio.fc.bias.detach().numpy()
    np.testing.assert_allclose(arrays["audio_stereo_embedding"][0], left_right.sum(0) - bias, rtol=0, atol=2e-4)


def test_filterbank_is_cached_in_inference_and_rebuilt_after_update(produced):
    model, _, _ = produced
    fbsp = model.audio.fbsp
    with torch.inference_mode():
        first = fbsp.filterbank(2048, torch.float32, torch.device("cpu"))
        assert fbsp.filterbank(2048, torch.float32, torch.device("cpu")) is first
    with torch.no_grad():
        fbsp.fb.add_(0.0)  # an in-place update bumps the parameter version
    with torch.inference_mode():
        assert fbsp.filterbank(2048, torch.float32, torch.device("cpu")) is not first


def test_filterbank_gets_gradients_in_training():
    model = AudioCLIP("audioclip-tiny").train()
    audio = torch.randn(2, 1, 44100) * 3000
    (_, _), loss = model(audio=audio, text=torch.randint(1, 49000, (2, 77)))
    loss.backward()
    for p in (model.audio.fbsp.m, model.audio.fbsp.fb, model.audio.fbsp.fc):
        assert p.grad is not None and torch.isfinite(p.grad).all()
        # the official hook rescales each FBSP gradient by its inf-norm
        assert float(p.grad.abs().max()) <= 1.0 + 1e-6
