"""SIGKILL mid-run, then --resume: the resumed run repeats the uninterrupted run's losses exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from audioclip_search.trainer import build_config, train
from audioclip_search.trainer.checkpointing import load_state
from tests.conftest import PROJECT_ROOT
from tests.test_trainer_utils import FAST, train_losses, tux_manifest


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_sigkill_then_resume_continues_exactly(tmp_path):
    manifest = tux_manifest(tmp_path, 4)
    # Augmentation on (time scaling, flips, noise, random crops), frames and captions: everything
    # random must come back identically after the kill.
    settings = [*FAST, f"data.train={manifest}", "batch_size=2", "epochs=2", "deterministic=true",
                "checkpoint.every_steps=1", "optim.lr=1e-4", "model.train_fbsp=false", "augment.noise_p=0.5"]

    reference = tmp_path / "reference"
    train(build_config("cooperative", overrides=settings), reference)
    expected = train_losses(reference)
    assert sorted(expected) == [1, 2, 3, 4]  # 2 steps per epoch, 2 epochs

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "audioclip_search.trainer", "--preset", "cooperative", "--out", str(out)]
    for s in settings:
        command += ["--set", s]
    # SIGKILL right after optimiser step 2 (and its checkpoint): mid-run, at a named point
    env = {**os.environ, "ACSEARCH_CRASH_AT": "trainer.step:2"}
    proc = subprocess.run(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    stopped_at = load_state(out / "last.pt")["state"]["step"]
    assert 1 <= stopped_at < 4, "the kill landed after the run had finished"
    assert stopped_at == 2 and sorted(train_losses(out)) == [1, 2]  # exactly where it was told to stop
    assert not (out / "done.json").exists()

    # --resume alone: the configuration comes back from the run's folder
    resumed = subprocess.run([sys.executable, "-m", "audioclip_search.trainer", "--out", str(out), "--resume"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = train_losses(out)
    assert got == expected  # every step, before and after the kill, bit for bit
    final = torch.load(out / "final.pt", weights_only=True)["state_dict"]
    ref_final = torch.load(reference / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], ref_final[k]) for k in ref_final)
    # the metrics files read as one run: no record repeated by the resumed part
    steps = [line for line in (out / "metrics.csv").read_text().splitlines() if line.startswith("train,")]
    assert len(steps) == 4
