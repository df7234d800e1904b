"""Training configuration: presets, config files, --set overrides, validation, resume rules."""

from __future__ import annotations

import json

import pytest
import yaml

from audioclip_search.trainer.config import (
    PRESETS,
    ConfigError,
    TrainConfig,
    build_config,
    dump_yaml,
    list_presets,
    set_value,
)
from audioclip_search.trainer.loop import prepare_config

MANIFEST = ["data.train=train.csv"]


def test_paper_defaults_in_presets():
    head = build_config("audio-head", overrides=MANIFEST)
    assert (head.optim.lr, head.optim.gamma, head.epochs) == (1e-4, 0.95, 30)
    assert (head.optim.momentum, head.optim.nesterov, head.optim.weight_decay, head.batch_size) == (0.9, True, 5e-4, 64)
    assert head.model.init == "esresnext-audioset" and head.stage == "audio-head"
    ft = build_config("finetune", overrides=["data.root=/x"])
    assert (ft.optim.lr, ft.optim.gamma, ft.epochs) == (5e-5, 0.98, 50)
    assert ft.data.folds == "all" and ft.model.init == "audioclip-full" and ft.trained_heads() == ["audio"]
    protocol = build_config("finetune-esc50-protocol", overrides=["data.root=/x"])
    assert protocol.optim.gamma == 0.96
    assert build_config("cooperative", overrides=MANIFEST).trained_heads() == ["audio"]
    assert build_config("full", overrides=MANIFEST).trained_heads() == ["audio", "image", "text"]
    assert set(list_presets()) == set(PRESETS)
    aug = head.augment
    assert (aug.time_scale, aug.flip_p, aug.noise_p, aug.snr_min_db, aug.snr_max_db) == (1.5, 0.5, 0.25, 10.0, 120.0)


def test_set_overrides_are_typed():
    cfg = build_config("cooperative", overrides=[
        *MANIFEST, "optim.lr=1e-3", "epochs=3", "data.folds=[1, 2]", "model.train_heads=audio",
        "augment.enabled=false", "data.template=the sound of {}", "max_steps=7", "model.init_audio=null",
        "checkpoint.every-steps=5", "optim={gamma: 0.5}",
    ])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML 1.1 would read "1e-3" as a string
    assert cfg.epochs == 3 and cfg.data.folds == [1, 2] and cfg.model.train_heads == ["audio"]
    assert cfg.augment.enabled is False and cfg.data.template == "the sound of {}"
    assert cfg.max_steps == 7 and cfg.model.init_audio is None and cfg.checkpoint.every_steps == 5
    assert cfg.optim.gamma == 0.5 and cfg.optim.lr == 1e-3
    cfg2 = build_config("finetune", overrides=["data.root=/x", "data.folds=all"])
    assert cfg2.data.folds == "all"


@pytest.mark.parametrize("assignment, message", [
    ("optim.lrr=1", "did you mean 'lr'"),
    ("optimm.lr=1", "unknown config key"),
    ("epochs=many", "expected an integer"),
    ("augment.enabled=maybe", "expected true or false"),
    ("data.dataset=audioset", "not one of"),
    ("noequals", "expected key=value"),
])
def test_bad_overrides(assignment, message):
    with pytest.raises(ConfigError, match=message):
        build_config("cooperative", overrides=[*MANIFEST, assignment])


def test_validation_lists_every_problem():
    with pytest.raises(ConfigError) as info:
        build_config("cooperative", overrides=["optim.lr=0", "augment.flip_p=2", "batch_size=0"])
    text = str(info.value)
    for part in ("optim.lr", "augment.flip_p", "batch_size", "data.train"):
        assert part in text
    with pytest.raises(ConfigError, match="audio head only"):
        build_config("cooperative", overrides=[*MANIFEST, "model.train_heads=[audio,text]"])
    with pytest.raises(ConfigError, match="unknown preset 'fine-tune'.*finetune"):
        build_config("fine-tune")


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_config_files(tmp_path, suffix):
    data = {"stage": "full", "epochs": 4, "optim": {"lr": 0.002}, "data": {"train": "m.csv", "folds": [3]}}
    path = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        path.write_text(yaml.safe_dump(data))
    elif suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text('stage = "full"\nepochs = 4\n[optim]\nlr = 0.002\n[data]\ntrain = "m.csv"\nfolds = [3]\n')
    # preset, then file, then --set
    cfg = build_config("cooperative", path, ["epochs=9"])
    assert cfg.stage == "full" and cfg.optim.lr == 0.002 and cfg.data.folds == [3] and cfg.epochs == 9
    assert cfg.optim.gamma == 0.95 and cfg.preset == "cooperative"


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_config(None, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [1, 2]}\ndata: {train: x}\n")
    with pytest.raises(ConfigError, match="optim.lr"):
        build_config(None, bad)
    ini = tmp_path / "x.ini"
    ini.write_text("a=1")
    with pytest.raises(ConfigError, match="unknown config format"):
        build_config(None, ini)


def test_round_trip_through_yaml():
    cfg = build_config("full", overrides=[*MANIFEST, "data.folds=[1,2]", "optim.lr=3e-4"])
    again = TrainConfig.from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_resume_config_rules(tmp_path):
    cfg = build_config("cooperative", overrides=[*MANIFEST, "optim.lr=1e-3"])
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    same, _ = prepare_config(tmp_path, resume=True)
    assert same == cfg  # the saved config, not the preset's defaults
    longer, notes = prepare_config(tmp_path, "cooperative", None, ["epochs=60"], resume=True)
    assert longer.epochs == 60 and longer.optim.lr == 1e-3 and any("ignored" in n for n in notes)
    with pytest.raises(ConfigError, match="cannot change optim.lr"):
        prepare_config(tmp_path, overrides=["optim.lr=1"], resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        prepare_config(tmp_path / "empty", resume=True)


def test_set_value_on_section_and_errors():
    cfg = TrainConfig()
    set_value(cfg, "augment={noise_p: 0.5, flip_p: 0}")
    assert cfg.augment.noise_p == 0.5 and cfg.augment.flip_p == 0.0
    with pytest.raises(ConfigError, match="unknown config key 'augment.bogus'"):
        set_value(cfg, "augment.bogus=1")
