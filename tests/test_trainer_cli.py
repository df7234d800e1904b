"""`acsearch train` as registered on a Typer app: presets, config printing, clean errors."""

from __future__ import annotations

import importlib.util

import pytest
import typer
import yaml
from typer.testing import CliRunner

from audioclip_search.cli.train import register
from tests.test_trainer_utils import FAST, tux_manifest


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        """root"""

    return app


runner = CliRunner()


def test_list_presets(app):
    result = runner.invoke(app, ["train", "--list-presets"])
    assert result.exit_code == 0
    for name in ("audio-head", "cooperative", "full", "finetune", "finetune-esc50-protocol"):
        assert name in result.output


def test_print_config_applies_preset_file_and_sets(app, tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("epochs = 7\n[data]\nroot = '/data/esc50'\n")
    result = runner.invoke(app, ["train", "--preset", "finetune", "--config", str(cfg_file), "--set", "optim.lr=1e-3",
                                 "--device", "cpu", "--print-config"])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["stage"] == "finetune" and data["epochs"] == 7 and data["optim"]["lr"] == 1e-3
    assert data["optim"]["gamma"] == 0.98 and data["device"] == "cpu" and data["data"]["root"] == "/data/esc50"


@pytest.mark.parametrize("args, code, text", [
    (["train", "--preset", "cooperative", "--set", "optim.lrr=1", "--out", "x"], 2, "did you mean 'lr'"),
    (["train", "--preset", "nope", "--out", "x"], 2, "unknown preset"),
    (["train", "--preset", "cooperative"], 2, "--out DIR is required"),
    (["train", "--out", "x"], 2, "give --preset"),
])
def test_errors_are_messages_with_exit_codes(app, args, code, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == code
    assert text in result.output
    assert "Traceback" not in result.output


def test_missing_files_listed_and_existing_run_protected(app, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio,caption\nnot/here.wav,a dog\nalso/missing.ogg,rain\n")
    out = tmp_path / "run"
    args = ["train", "--preset", "cooperative", "--out", str(out), "--set", f"data.train={manifest}"]
    args += [a for s in FAST for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "2 of 2 files named by the training data are missing" in result.output
    assert "not/here.wav" in result.output and "also/missing.ogg" in result.output
    (out / "last.pt").write_bytes(b"x")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--resume" in result.output


def test_resume_refuses_changed_settings(app, tmp_path):
    manifest = tux_manifest(tmp_path, 2)
    out = tmp_path / "run"
    out.mkdir()
    from audioclip_search.trainer.config import build_config, dump_yaml

    (out / "config.yaml").write_text(dump_yaml(build_config("cooperative", overrides=[f"data.train={manifest}"])))
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--set", "batch_size=3"])
    assert result.exit_code == 2 and "cannot change batch_size" in result.output
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--set", "epochs=99", "--print-config"])
    assert result.exit_code == 0 and yaml.safe_load(result.output)["epochs"] == 99


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_is_a_clear_message(tmp_path):
    from audioclip_search.trainer import TrainingError
    from audioclip_search.trainer.logs import open_tensorboard

    with pytest.raises(TrainingError, match="pip install tensorboard"):
        open_tensorboard(tmp_path)
