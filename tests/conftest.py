"""Shared test fixtures: where the real test data lives, and small models built from the same code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
REFERENCE = SHARED / "reference"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker gets one thread for PyTorch, FAISS and BLAS, and so do the CLI
    processes the tests start: N workers on N cores, not N x N threads fighting over them. Runs before
    any test module imports torch."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = "1"


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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    """The tiny model saved as a checkpoint file, as a user's own trained model would be."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"arch": "audioclip-tiny", "state_dict": tiny_model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint, tiny_model):
    """An Encoder on the tiny model that identifies itself exactly as the CLI would for tiny_checkpoint."""
    from audioclip_search.checkpoints import checkpoint_sha256
    from audioclip_search.encoder import Encoder

    return Encoder(tiny_model, device="cpu", model_name=str(tiny_checkpoint),
                   model_sha256=checkpoint_sha256(tiny_checkpoint))


@pytest.fixture(scope="session")
def reference_model():
    """The full-size AudioCLIP with the reference fixture's deterministic weights, built once per session
    (the fixture test and the real-clip test both need it, and it takes seconds to generate)."""
    from audioclip_search.reference_check import reference_model as build

    if not (REFERENCE / "weights.py").is_file():
        pytest.fail(f"reference fixture missing at {REFERENCE}")
    return build(REFERENCE)
