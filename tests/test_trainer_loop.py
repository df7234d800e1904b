"""Training runs on real data with the tiny model: every stage learns, exports load, bad input stops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audioclip_search.audio import load_audio
from audioclip_search.checkpoints import load_audio_head, load_model, read_checkpoint
from audioclip_search.encoder import Encoder
from audioclip_search.errors import CheckpointError
from audioclip_search.model import AudioCLIP
from audioclip_search.model.esresnext import ESResNeXtFBSP
from audioclip_search.trainer import (
    NonFiniteLossError,
    TooManyBadSamplesError,
    build_config,
    fold_pattern,
    train,
)
from audioclip_search.trainer.checkpointing import load_state
from audioclip_search.trainer.tasks import ContrastiveTask
from tests.test_trainer_utils import ESC50_MINI, FAST, TUX, train_losses, tux_manifest, two_fold_esc50

OVERFIT = ["augment.enabled=false", "model.train_fbsp=false"]


def test_cooperative_learns_skips_bad_sample_and_exports_official_layout(tmp_path):
    manifest = tux_manifest(tmp_path, 4, broken=1)
    out = tmp_path / "coop"
    cfg = build_config("cooperative", overrides=[
        *FAST, *OVERFIT, f"data.train={manifest}", "batch_size=5", "epochs=4", "optim.lr=1e-4",
        "data.max_bad_fraction=0.3",
    ])
    result = train(cfg, out)
    losses = train_losses(out)
    assert len(losses) == 4 and losses[4] < losses[1] * 0.9, losses
    unit = result.units[0]
    assert unit.skipped == 1 and unit.steps == 4 and unit.best_metric == "train_loss"
    skips = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"skip"' in line]
    assert [s["key"] for s in skips] == ["broken0"]  # counted once although it is met every epoch

    # The export is the official layout and loads strictly through load_model; it embeds audio.
    ckpt = read_checkpoint(out / "best.pt")
    assert ckpt.arch == "audioclip-tiny" and ckpt.config["name"] == "audioclip-tiny"
    model = load_model(out / "final.pt", device="cpu")
    clips = [load_audio(TUX / "animals/amphibians/frog.ogg")[0][:, :44100], torch.zeros(1, 44100)]
    emb = Encoder(model, device="cpu").encode_audio(clips)
    assert emb.shape == (2, 1024) and np.isfinite(emb).all()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)

    # Teachers frozen: image and text heads are exactly their initial (seeded) weights; audio moved.
    torch.manual_seed(cfg.seed)
    initial = AudioCLIP("audioclip-tiny").state_dict()
    trained = model.state_dict()
    assert all(torch.equal(initial[k], trained[k]) for k in initial if k.startswith(("visual.", "transformer.")))
    assert not torch.equal(initial["audio.fc.weight"], trained["audio.fc.weight"])
    # ... and the audio-head export carries the same audio weights in the audio.-less layout.
    fresh = AudioCLIP("audioclip-tiny")
    report = load_audio_head(fresh, out / "final_audio_head.pt")
    assert report.loaded == len(fresh.audio.state_dict())
    assert all(torch.equal(v, trained[f"audio.{k}"]) for k, v in fresh.audio.state_dict().items())
    assert (out / "metrics.csv").read_text().startswith("kind,epoch,step,loss,lr,samples_per_s")


def test_contrastive_task_loss_is_the_model_forward_loss(tiny_model):
    from audioclip_search.text import tokenize

    task = ContrastiveTask(tiny_model, ["audio"], use_image=True, use_text=True).eval()
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(3, 1, 8000, generator=g) * 3000
    image = torch.randn(3, 3, 224, 224, generator=g)
    tokens = tokenize(["a dog", "a cat", "rain"])
    with torch.no_grad():
        ours, _ = task(audio, image, tokens)
        (_, _), reference = tiny_model(audio=audio, image=image, text=tokens)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert "logit_scale_ai" in trainable and "logit_scale_at" in trainable and "logit_scale" not in trainable
    assert not any(n.startswith(("visual.", "transformer.")) for n in trainable)
    assert "audio.fbsp.bias" not in trainable
    for p in tiny_model.parameters():
        p.requires_grad_(True)


def test_full_trains_every_head(tmp_path):
    manifest = tux_manifest(tmp_path, 4)
    out = tmp_path / "full"
    cfg = build_config("full", overrides=[*FAST, *OVERFIT, f"data.train={manifest}", "batch_size=4", "epochs=3",
                                          "optim.lr=1e-4", "data.val_fraction=0"])
    train(cfg, out)
    losses = train_losses(out)
    assert losses[3] < losses[1], losses
    torch.manual_seed(cfg.seed)
    initial = AudioCLIP("audioclip-tiny").state_dict()
    trained = load_model(out / "final.pt", device="cpu").state_dict()
    for key in ("visual.conv1.weight", "transformer.resblocks.0.mlp.c_fc.weight", "audio.fc.weight"):
        assert not torch.equal(initial[key], trained[key]), key


def test_finetune_writes_one_checkpoint_per_fold(tmp_path):
    root = two_fold_esc50(tmp_path)
    out = tmp_path / "ft"
    cfg = build_config("finetune", overrides=[
        *FAST, *OVERFIT, f"data.root={root}", "data.limit=4", "batch_size=4", "epochs=1", "optim.lr=1e-4",
    ])
    result = train(cfg, out)
    assert [u.name for u in result.units] == ["fold1", "fold2"]
    for fold in (1, 2):
        best = fold_pattern(out).format(fold=fold)
        assert best == str(out / f"fold{fold}" / "best.pt")
        model = load_model(best, device="cpu")
        assert model.config.name == "audioclip-tiny"
        vals = [json.loads(line) for line in (out / f"fold{fold}" / "metrics.jsonl").read_text().splitlines()
                if '"val"' in line]
        assert len(vals) == 1 and all(0.0 <= v["accuracy"] <= 1.0 and v["val_samples"] == 4 for v in vals)
        done = json.loads((out / f"fold{fold}" / "done.json").read_text())
        assert done["best_metric"] == "accuracy" and done["epochs_done"] == 1 and done["best_epoch"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [u["fold"] for u in summary["units"]] == [1, 2]


def test_audio_head_classification_learns_and_exports_head(tmp_path):
    out = tmp_path / "head"
    cfg = build_config("audio-head", overrides=[
        *FAST, "augment.enabled=false", "data.dataset=esc50", f"data.root={ESC50_MINI}", "data.limit=4",
        "batch_size=4", "epochs=2", "optim.lr=1e-2",
    ])
    result = train(cfg, out)
    losses = train_losses(out)
    assert losses[2] < losses[1], losses
    assert result.units[0].best_metric == "train_loss"
    saved = torch.load(out / "best.pt", weights_only=True)
    assert saved["kind"] == "audio-head" and len(saved["class_names"]) == 50
    assert not any(k.startswith("audio.") for k in saved["state_dict"])
    head = ESResNeXtFBSP(num_classes=50, layers=(1, 1, 1, 1), width=16, groups=4, width_per_group=4)
    report = load_audio_head(head, out / "best.pt")
    assert not report.skipped and report.loaded == len(head.state_dict())
    with pytest.raises(CheckpointError, match="audio-head checkpoint"):
        load_model(out / "best.pt", device="cpu")
    # the FBSP filterbank was trained (train_fbsp defaults to true)
    assert not torch.equal(saved["state_dict"]["fbsp.fc"], torch.arange(1025, dtype=torch.float32))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    cfg = build_config("audio-head", overrides=[
        *FAST, *OVERFIT, "data.dataset=esc50", f"data.root={ESC50_MINI}", "data.limit=4", "batch_size=2",
        "epochs=3", "optim.lr=1e30", "checkpoint.every_steps=1",
    ])
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf).*last good checkpoint"):
        train(cfg, out)
    state = load_state(out / "last.pt")
    assert state["state"]["step"] == 1 and torch.isfinite(state["model"]["head.fc.weight"]).all()
    errors = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"error"' in line]
    assert len(errors) == 1 and "optimiser step 2" in errors[0]["error"]
    assert not (out / "final.pt").exists()


def test_too_many_unreadable_samples_stop_the_run(tmp_path):
    manifest = tux_manifest(tmp_path, 2, broken=2)
    cfg = build_config("cooperative", overrides=[*FAST, *OVERFIT, f"data.train={manifest}", "batch_size=4",
                                                 "data.max_bad_fraction=0.25"])
    with pytest.raises(TooManyBadSamplesError, match=r"2 of 4 training samples .* unreadable"):
        train(cfg, tmp_path / "bad")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_steps(tmp_path, precision):
    manifest = tux_manifest(tmp_path, 4)
    out = tmp_path / precision
    cfg = build_config("cooperative", overrides=[*FAST, f"data.train={manifest}", "batch_size=4", "epochs=2",
                                                 "device=cuda", f"precision={precision}", "optim.lr=1e-4"])
    result = train(cfg, out)
    losses = train_losses(out)
    assert len(losses) == 2 and all(np.isfinite(v) for v in losses.values())
    assert result.units[0].steps == 2
    model = load_model(out / "final.pt", device="cpu")  # exports are float32 on the CPU
    assert model.audio.fc.weight.dtype == torch.float32
