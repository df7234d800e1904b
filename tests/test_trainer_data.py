"""Training data: manifests (CSV/JSONL/Parquet), text and frame choice, bad samples, missing files."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from audioclip_search.trainer import MissingFilesError, build_config, train
from audioclip_search.trainer.config import ConfigError, DataConfig
from audioclip_search.trainer.data import (
    BadSample,
    Sample,
    TrainingSet,
    collate,
    find_missing,
    load_source,
    read_manifest,
)
from tests.conftest import SHARED_DATA
from tests.test_trainer_utils import two_fold_esc50

TUX = SHARED_DATA / "tuxpaint-triples"


def _rows(n: int = 4) -> list[dict[str, str]]:
    with open(TUX / "triples.csv", newline="") as fh:
        return list(csv.DictReader(fh))[:n]


def test_read_tuxpaint_triples():
    samples = read_manifest(TUX / "triples.csv")
    assert len(samples) == 131
    s = samples[0]
    assert s.key == "animals/amphibians/frog" and s.audio == TUX / "animals/amphibians/frog.ogg"
    assert s.images == [TUX / "animals/amphibians/frog.png"] and s.labels == ["animals"] and s.caption == "A frog."
    assert s.text("auto") == "A frog." and s.text("labels", "the sound of {}") == "the sound of animals"
    assert find_missing(samples) == ([], 262)


def test_jsonl_and_parquet_manifests_with_frames(tmp_path):
    rows = _rows(3)
    records = [{"ytid": r["id"], "audio": str(TUX / r["audio"]), "frames": [str(TUX / r["image"])] * 3,
                "labels": ["Animal", "Bird"] if i else ["Animal"], "fold": i % 2 + 1} for i, r in enumerate(rows)]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records))
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    for path in (jsonl, parquet):
        samples = read_manifest(path)
        assert [s.key for s in samples] == [r["id"] for r in rows]
        assert samples[1].labels == ["Animal", "Bird"] and len(samples[1].images) == 3 and samples[1].fold == 2
        assert samples[1].text() == "Animal, Bird"  # the official ", "-joined label prompt


def test_manifest_errors(tmp_path):
    from audioclip_search.trainer.data import ManifestError

    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\nx.wav,dog\n")
    with pytest.raises(ManifestError, match="no audio column"):
        read_manifest(bad)
    bad.write_text("audio,label\nx.wav,\n")
    with pytest.raises(ManifestError, match="line 2: neither labels nor a caption"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.csv")


def test_frames_random_in_training_central_in_evaluation(tmp_path):
    frames = sorted(TUX.rglob("*.png"))[:5]
    sample = Sample(key="k", audio=TUX / _rows(1)[0]["audio"], images=frames, labels=["x"])
    pre = load_source(DataConfig(train=str(TUX / "triples.csv"), clip_samples=4410)).preprocessing
    train_set = TrainingSet([sample] * 8, pre, train=True, images=True, seed=3)
    eval_set = TrainingSet([sample], pre, train=False, images=True)
    central = eval_set[0]["image"]
    from audioclip_search.image import image_transform, load_image

    assert torch.equal(central, image_transform()(load_image(frames[2])))
    assert eval_set[0]["audio"].shape == (1, 4410)  # evaluation clips are centre-fitted
    seen = {tuple(train_set[i]["image"].flatten()[::997].tolist()) for i in range(8)}
    assert len(seen) > 1  # several frames are used
    again = TrainingSet([sample] * 8, pre, train=True, images=True, seed=3)
    assert all(torch.equal(again[i]["image"], train_set[i]["image"]) for i in range(8))
    train_set.set_epoch(1)
    assert any(not torch.equal(again[i]["image"], train_set[i]["image"]) for i in range(8))


def test_unreadable_sample_is_skipped_in_collate(tmp_path):
    broken = tmp_path / "broken.ogg"
    broken.write_bytes(b"OggS" + b"\x00" * 100)
    rows = _rows(3)
    samples = [Sample(key=r["id"], audio=TUX / r["audio"], labels=["a"]) for r in rows]
    samples.insert(1, Sample(key="broken", audio=broken, labels=["a"]))
    pre = load_source(DataConfig(train=str(TUX / "triples.csv"))).preprocessing
    ds = TrainingSet(samples, pre, train=True, text="auto", classes={"a": 0})
    items = [ds[i] for i in range(4)]
    assert isinstance(items[1], BadSample) and str(broken) in items[1].reason
    batch = collate(items)
    assert batch["size"] == 3 and [b.key for b in batch["bad"]] == ["broken"]
    assert batch["audio"].shape[0] == 3 and batch["lengths"].max() == batch["audio"].shape[-1]
    assert batch["tokens"].shape == (3, 77) and batch["target"].tolist() == [0, 0, 0]


def test_missing_files_all_listed_before_training(tmp_path):
    rows = _rows(4)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "image", "caption"])
        for i, r in enumerate(rows):
            audio = TUX / r["audio"] if i % 2 == 0 else tmp_path / f"gone{i}.ogg"
            image = TUX / r["image"] if i < 3 else tmp_path / "gone.png"
            w.writerow([audio, image, r["caption"]])
    cfg = build_config("cooperative", overrides=[f"data.train={manifest}", "model.arch=audioclip-tiny",
                                                  "model.init=none", "data.num_workers=0", "log.display=none"])
    out = tmp_path / "run"
    with pytest.raises(MissingFilesError) as info:
        train(cfg, out)
    message = str(info.value)
    for name in ("gone1.ogg", "gone3.ogg", "gone.png"):
        assert name in message
    assert info.value.missing == [tmp_path / "gone1.ogg", tmp_path / "gone3.ogg", tmp_path / "gone.png"]
    assert (out / "missing_files.txt").read_text().split() == [str(p) for p in info.value.missing]
    assert not (out / "last.pt").exists() and not (out / "config.yaml").exists()


def test_esc50_source_and_folds(tmp_path):
    root = two_fold_esc50(tmp_path)
    source = load_source(DataConfig(dataset="esc50", root=str(root)))
    assert source.clip_samples == 220500 and len(source.class_names) == 50
    splits = source.splits(DataConfig(dataset="esc50", root=str(root), folds="all"))
    assert [s.name for s in splits] == ["fold1", "fold2"]
    assert len(splits[0].train) == 25 and all(s.fold == 1 for s in splits[0].val)
    with pytest.raises(ConfigError, match="no fold 7"):
        source.splits(DataConfig(dataset="esc50", root=str(root), folds=[7]))
