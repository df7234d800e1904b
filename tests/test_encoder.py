"""The Encoder starts only what a request needs, and checkpoints load without copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from audioclip_search.checkpoints import load_model
from audioclip_search.encoder import Encoder


def test_text_encode_builds_no_audio_or_image_copy(tiny_checkpoint, tiny_model):
    encoder = Encoder.from_pretrained(str(tiny_checkpoint), device="cpu", precision="fp32")
    assert encoder.built_towers == ()
    texts = encoder.encode_texts(["dog bark", "rain on a tin roof"])
    assert texts.shape == (2, tiny_model.config.embed_dim)
    assert encoder.built_towers == ()  # a text query pays for neither the audio nor the image tower
    encoder.encode_audio(torch.zeros(1, 1, 44100))
    assert encoder.built_towers == ("audio",)
    encoder.encode_images(torch.zeros(1, 3, 224, 224))
    assert encoder.built_towers == ("audio", "visual")
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(tiny_model.encode_text(encoder_tokens(["dog bark"])), dim=-1)
    np.testing.assert_allclose(texts[:1], expected.numpy(), rtol=0, atol=1e-6)


def encoder_tokens(texts: list[str]) -> torch.Tensor:
    from audioclip_search.text import tokenize

    return tokenize(texts)


def test_checkpoint_tensors_stay_memory_mapped(tiny_checkpoint):
    """Loading assigns the file's mapped tensors instead of copying them into a fresh model."""
    model = load_model(tiny_checkpoint, device="cpu")
    target = str(Path(tiny_checkpoint).resolve())
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            low, high = (int(x, 16) for x in fields[0].split("-"))
            mapped.append((low, high))
    assert mapped, "the checkpoint file is not memory-mapped"
    for name in ("visual.conv1.weight", "audio.conv1.weight", "token_embedding.weight"):
        ptr = model.get_parameter(name).data_ptr()
        assert any(low <= ptr < high for low, high in mapped), name
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_loaded_model_keeps_fbsp_gradient_hooks(tiny_checkpoint):
    """Assigned parameters get the official inf-norm gradient hook again (training from a checkpoint)."""
    model = load_model(tiny_checkpoint, device="cpu").train()
    audio = torch.randn(2, 1, 44100, generator=torch.Generator().manual_seed(0)) * 3000
    (_, _), loss = model(audio=audio, text=torch.randint(1, 49000, (2, 77), generator=torch.Generator().manual_seed(1)))
    loss.backward()
    for p in (model.audio.fbsp.m, model.audio.fbsp.fb, model.audio.fbsp.fc):
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert float(p.grad.abs().max()) <= 1.0 + 1e-6
        assert float(p.grad.abs().max()) >= 1.0 - 1e-6  # rescaled by its own inf-norm


def test_auto_precision_on_cpu_needs_native_bf16_and_measured_agreement(monkeypatch):
    from audioclip_search import devices

    cpu = torch.device("cpu")
    devices.cpu_has_native_bf16.cache_clear()
    assert isinstance(devices.cpu_has_native_bf16(), bool)
    for native, overlap, expected in ((False, 1.0, "fp32"), (True, 0.5, "fp32"), (True, 0.96, "bf16")):
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda native=native: native)
        monkeypatch.setattr(devices, "CPU_BF16_TOP10_OVERLAP", overlap)
        assert devices.resolve_precision("auto", cpu) == expected
        assert devices.resolve_precision("fp32", cpu) == "fp32"  # explicit choices are kept
        assert devices.resolve_precision("bf16", cpu) == "bf16"
