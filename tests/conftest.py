"""Shared test fixtures: where the real test data lives, and small models built from the same code."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data folder missing: {SHARED_DATA} (the repo expects ../shared beside it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model():
    """A deterministic small AudioCLIP (same code as the full model, narrow and shallow)."""
    import torch

    from audioclip_search.model import AudioCLIP

    torch.manual_seed(0)
    model = AudioCLIP("audioclip-tiny").eval()
    return model
