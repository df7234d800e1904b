"""Dataset readers on the real mini datasets, manifests, and the errors for broken layouts."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from audioclip_search.datasets import (
    ESC50,
    AudioPreprocessing,
    DatasetError,
    ManifestDataset,
    UrbanSound8K,
    find_manifest,
    open_dataset,
)
from audioclip_search.datasets.base import minmax_scale


@pytest.fixture(scope="module")
def esc50_root(shared_data: Path) -> Path:
    return shared_data / "esc50-mini"


@pytest.fixture(scope="module")
def us8k_root(shared_data: Path) -> Path:
    return shared_data / "us8k-mini"


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------------
# ESC-50


def test_esc50_structure(esc50_root: Path):
    ds = open_dataset("esc50", esc50_root)
    assert isinstance(ds, ESC50)
    rows = _csv_rows(esc50_root / "meta" / "esc50.csv")
    assert len(ds) == 50 and ds.folds == [4]
    assert len(ds.class_names) == 50
    # Ordered by target, underscores read as spaces (the official loader's class names).
    by_target = {int(r["target"]): r["category"].replace("_", " ") for r in rows}
    assert ds.class_names == [by_target[t] for t in range(50)]
    assert ds.class_names[0] == "dog" and "door wood creaks" in ds.class_names
    items = ds.items(fold=4)
    assert [it.path.name for it in items] == [r["filename"] for r in rows]  # CSV order
    assert items == ds.items()
    first = items[0]
    assert first.labels == [rows[0]["category"].replace("_", " ")] and first.fold == 4
    assert first.image_paths == [] and first.key == f"audio/{rows[0]['filename']}"
    assert ds.targets(first) == [int(rows[0]["target"])]
    assert not ds.multilabel and ds.has_audio and not ds.has_images
    assert ds.preprocessing == AudioPreprocessing(clip_samples=220500)


def test_esc50_audio_is_5s_mono_44k(esc50_root: Path):
    ds = ESC50(esc50_root)
    wave = ds.load_audio(ds.items()[0])
    assert wave.shape == (1, 220500) and wave.dtype == torch.float32
    assert float(wave.abs().max()) <= 1.0


def test_esc50_unknown_fold(esc50_root: Path):
    with pytest.raises(DatasetError, match=r"no fold 2; folds present: 4"):
        ESC50(esc50_root).items(fold=2)


def test_esc50_bad_root(tmp_path: Path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        ESC50(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"metadata file missing: .*meta/esc50\.csv"):
        ESC50(tmp_path)


def test_esc50_wrong_columns(tmp_path: Path, esc50_root: Path):
    rows = _csv_rows(esc50_root / "meta" / "esc50.csv")
    for r in rows:
        r["label"] = r.pop("category")
    _write_csv(tmp_path / "meta" / "esc50.csv", rows, ["filename", "fold", "target", "label"])
    (tmp_path / "audio").mkdir()
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) category \(columns found: filename, fold, "):
        ESC50(tmp_path)


def test_esc50_missing_audio_folder_and_file(tmp_path: Path, esc50_root: Path):
    rows = _csv_rows(esc50_root / "meta" / "esc50.csv")[:3]
    _write_csv(tmp_path / "meta" / "esc50.csv", rows, list(rows[0]))
    with pytest.raises(DatasetError, match="audio folder missing"):
        ESC50(tmp_path)
    (tmp_path / "audio").mkdir()
    for r in rows[:2]:
        shutil.copy(esc50_root / "audio" / r["filename"], tmp_path / "audio")
    ds = ESC50(tmp_path)
    with pytest.raises(DatasetError, match=rf"1 of 3 listed files are missing:\n  .*{rows[2]['filename']}"):
        ds.items()
    assert len(ds.items(check_files=False)) == 3


def test_esc50_bad_cell(tmp_path: Path, esc50_root: Path):
    rows = _csv_rows(esc50_root / "meta" / "esc50.csv")[:2]
    rows[1]["fold"] = "four"
    _write_csv(tmp_path / "meta" / "esc50.csv", rows, list(rows[0]))
    (tmp_path / "audio").mkdir()
    with pytest.raises(DatasetError, match=r"line 3: column 'fold' must be an integer, got 'four'"):
        ESC50(tmp_path)


# ------------------------------------------------------------------------------------------------
# UrbanSound8K


def test_us8k_structure(us8k_root: Path):
    ds = open_dataset("us8k", us8k_root)
    assert isinstance(ds, UrbanSound8K)
    rows = _csv_rows(us8k_root / "metadata" / "UrbanSound8K.csv")
    assert len(ds) == len(rows) == 37 and ds.folds == [1, 2]
    assert ds.class_names == ["air conditioner", "car horn", "children playing", "dog bark", "drilling",
                              "engine idling", "gun shot", "jackhammer", "siren", "street music"]
    fold1 = ds.items(1)
    assert [it.path.name for it in fold1] == [r["slice_file_name"] for r in rows if r["fold"] == "1"]
    assert all(it.path.parent.name == "fold1" for it in fold1)
    assert len(ds.items([1, 2])) == 37
    assert ds.preprocessing.clip_samples == 176400


def test_us8k_audio_resampled_and_scaled(us8k_root: Path):
    ds = UrbanSound8K(us8k_root)
    item = ds.items(1)[0]
    wave = ds.load_audio(item)  # 22.05 kHz file -> 44.1 kHz, 4 s
    assert wave.shape == (1, 176400)
    plain = UrbanSound8K(us8k_root, official_scaling=False).load_audio(item)
    assert plain.shape == (1, 176400)
    # The official loader stretches [min, max] to the int16 range.
    assert float(wave.min()) == pytest.approx(-1.0) and float(wave.max()) == pytest.approx(32767 / 32768)
    assert float(plain.abs().max()) <= 1.0


def test_us8k_cross_validation_split_and_unfitted_audio(us8k_root: Path):
    ds = UrbanSound8K(us8k_root)
    train, test = ds.split(2)
    assert {it.fold for it in train} == {1} and {it.fold for it in test} == {2}
    assert len(train) + len(test) == 37
    raw = ds.load_audio(test[0], fit=False)  # for training: scaled, not padded/cropped
    assert raw.shape[0] == 1 and raw.shape[1] <= 176400


def test_us8k_missing_fold_folder(tmp_path: Path, us8k_root: Path):
    rows = _csv_rows(us8k_root / "metadata" / "UrbanSound8K.csv")
    _write_csv(tmp_path / "metadata" / "UrbanSound8K.csv", rows, list(rows[0]))
    shutil.copytree(us8k_root / "audio" / "fold1", tmp_path / "audio" / "fold1")
    ds = UrbanSound8K(tmp_path)
    assert len(ds.items(1)) == 18
    with pytest.raises(DatasetError, match=r"folder .*audio/fold2 \(holding 19 listed files\)"):
        ds.items(2)


def test_us8k_wrong_columns(tmp_path: Path):
    _write_csv(tmp_path / "metadata" / "UrbanSound8K.csv", [{"file": "a.wav"}], ["file"])
    (tmp_path / "audio").mkdir()
    with pytest.raises(DatasetError, match=r"slice_file_name, fold, classID, class"):
        UrbanSound8K(tmp_path)


def test_unknown_dataset_name(tmp_path: Path):
    with pytest.raises(DatasetError, match="unknown dataset 'audioset'"):
        open_dataset("audioset", tmp_path)


# ------------------------------------------------------------------------------------------------
# preprocessing


def test_minmax_scale_and_fit():
    wave = torch.tensor([[0.0, 0.5, -0.25, 0.25]])
    scaled = minmax_scale(wave)
    assert float(scaled.min()) == -1.0 and float(scaled.max()) == pytest.approx(32767 / 32768)
    prep = AudioPreprocessing(clip_samples=8)
    assert prep.apply(wave).shape == (1, 8)
    head = AudioPreprocessing(clip_samples=2, head_truncate=True)
    assert head.apply(wave).tolist() == [[0.0, 0.5]]
    assert torch.equal(minmax_scale(torch.zeros(1, 4)), torch.zeros(1, 4))


# ------------------------------------------------------------------------------------------------
# manifests


def test_manifest_csv_multilabel_images_folds(tmp_path: Path, esc50_root: Path):
    clips = sorted((esc50_root / "audio").glob("*.wav"))[:3]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    (tmp_path / "img" / "b.png").write_bytes(b"x")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "Path,Labels,Image,fold\n"
        f"{clips[0]},dog,img/a.png,1\n"
        f'{clips[1]},"dog; bark",,2\n'
        f'{clips[2]},"[""wind"", ""bark""]","[""img/a.png"", ""img/b.png""]",\n'
    )
    ds = open_dataset("manifest", manifest=manifest)
    assert isinstance(ds, ManifestDataset)
    assert ds.class_names == ["bark", "dog", "wind"]
    assert ds.folds == [1, 2] and ds.multilabel and ds.has_images
    items = ds.items()
    assert [it.labels for it in items] == [["dog"], ["dog", "bark"], ["wind", "bark"]]
    assert items[1].label_set == ("bark", "dog")
    assert items[0].image_paths == [tmp_path / "img" / "a.png"]
    assert items[2].image_paths == [tmp_path / "img" / "a.png", tmp_path / "img" / "b.png"]
    assert items[2].fold is None
    assert [it.path for it in ds.items(2)] == [clips[1]]
    assert ds.targets(items[2]) == [0, 2]
    # Default clip length: the longest clip (ESC-50 clips are 5 s).
    assert ds.preprocessing.clip_samples == 220500
    assert ManifestDataset(manifest, clip_seconds=1.5).preprocessing.clip_samples == 66150


def test_manifest_jsonl_relative_paths_and_lookup(tmp_path: Path, esc50_root: Path):
    src = sorted((esc50_root / "audio").glob("*.wav"))[0]
    (tmp_path / "clips").mkdir()
    shutil.copy(src, tmp_path / "clips" / "one.wav")
    lines = [{"audio": "clips/one.wav", "labels": ["rain"]}, {"audio": "clips/two.wav", "label": "x;y"}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert find_manifest(tmp_path) == tmp_path / "manifest.jsonl"
    ds = open_dataset("manifest", tmp_path)  # found in --root
    assert ds.folds == [] and ds.items(check_files=False)[0].path == tmp_path / "clips" / "one.wav"
    assert ds.items(check_files=False)[1].labels == ["x", "y"]
    with pytest.raises(DatasetError, match=r"1 of 2 listed files are missing:\n  .*clips/two\.wav"):
        ds.items()
    with pytest.raises(DatasetError, match="has no folds"):
        ds.items(fold=1)


def test_manifest_errors(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file_name,labels\na.wav,dog\n")
    columns_found = r"\(columns found: file_name, labels\)"
    with pytest.raises(DatasetError, match=r"no file column: expected one of path, audio.*" + columns_found):
        ManifestDataset(bad)
    bad.write_text("path,tag\na.wav,dog\n")
    with pytest.raises(DatasetError, match=r"no label column: expected one of labels, label"):
        ManifestDataset(bad)
    bad.write_text("path,labels\na.wav,\n")
    with pytest.raises(DatasetError, match=r"bad\.csv, line 2: no labels \(column 'labels'\)"):
        ManifestDataset(bad)
    bad.write_text('path,labels\na.wav,"[""dog"",\n')
    with pytest.raises(DatasetError, match="not a valid JSON list"):
        ManifestDataset(bad)
    bad.write_text("path,labels\n")
    with pytest.raises(DatasetError, match="lists no items"):
        ManifestDataset(bad)
    with pytest.raises(DatasetError, match="manifest file not found"):
        ManifestDataset(tmp_path / "none.csv")
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"path": "a.wav", "labels": ["a"]}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 2: not valid JSON"):
        ManifestDataset(jl)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no manifest in"):
        open_dataset("manifest", empty)


def test_manifest_reads_tuxpaint_triples(shared_data: Path):
    ds = ManifestDataset(shared_data / "tuxpaint-triples" / "triples.csv", clip_seconds=2.0)
    assert len(ds) == 131 and ds.has_audio and ds.has_images
    assert "animals" in ds.class_names and len(ds.class_names) == 11
    first = ds.items()[0]
    assert first.path.suffix == ".ogg" and first.image_paths[0].suffix == ".png"
