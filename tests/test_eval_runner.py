"""Evaluation end to end with the small model on the real mini datasets (Python API and CLI).

Every figure is checked against an independent computation from the same embeddings (plain
numpy loops here, scikit-learn for AP). ESC-50-mini and US8K-mini are each encoded once: the
tests share one embedding cache, keyed by the sha256 of the saved tiny checkpoint, which the
CLI (``--model PATH``) and the fine-tuned runs (copies of that file) hit as well.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from audioclip_search.audio import fit_length, load_audio
from audioclip_search.checkpoints import checkpoint_sha256
from audioclip_search.cli.eval import parse_folds, register
from audioclip_search.datasets import DatasetError, ManifestDataset, open_dataset
from audioclip_search.encoder import Encoder
from audioclip_search.errors import CheckpointError
from audioclip_search.evaluation import (
    EmbeddingCache,
    build_report,
    run_finetuned,
    run_querying,
    run_zeroshot,
    write_json,
)
from audioclip_search.evaluation.embeddings import embed_audio_items, embed_image_paths
from audioclip_search.evaluation.finetuned import fold_checkpoints
from audioclip_search.evaluation.plots import write_plots

average_precision_score = pytest.importorskip("sklearn.metrics").average_precision_score

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    path = folder / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    sha = checkpoint_sha256(path)
    # Larger audio micro-batches than the CPU default: the tiny model's activations are small.
    enc = Encoder(tiny_model, device="cpu", model_name=str(path), model_sha256=sha, micro_batch={"audio": 16})
    cache_root = tmp_path_factory.mktemp("acsearch-cache")
    cache = EmbeddingCache(sha, "fp32", root=cache_root / "embeddings")
    return SimpleNamespace(path=path, sha=sha, enc=enc, cache_root=cache_root, cache=cache)


@pytest.fixture(scope="module")
def esc50(shared_data):
    return open_dataset("esc50", shared_data / "esc50-mini")


@pytest.fixture(scope="module")
def us8k(shared_data):
    return open_dataset("us8k", shared_data / "us8k-mini")


# ------------------------------------------------------------------------------------------------
# independent reference computations


def ref_retrieval(scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, float]:
    """P@1, R@1, R@5, R@10, mAP (sklearn), MRR by plain loops, in percent; skips empty queries."""
    out: dict[str, list[float]] = {k: [] for k in ("P@1", "R@1", "R@5", "R@10", "mAP", "MRR")}
    for q in range(scores.shape[0]):
        keep = np.ones(scores.shape[1], bool) if exclude is None else ~exclude[q]
        s, rel = scores[q][keep], relevant[q][keep]
        if rel.sum() == 0:
            continue
        order = sorted(range(len(s)), key=lambda i: -s[i])
        ranked = [bool(rel[i]) for i in order]
        total = sum(ranked)
        out["P@1"].append(ranked[0] / 1)
        for k in (1, 5, 10):
            out[f"R@{k}"].append(sum(ranked[:k]) / total)
        out["mAP"].append(average_precision_score(rel, s))
        out["MRR"].append(1.0 / (ranked.index(True) + 1))
    return {k: 100.0 * float(np.mean(v)) for k, v in out.items()}


def assert_figures(ours: dict, ref: dict, keys=("P@1", "R@1", "R@5", "R@10", "mAP", "MRR")) -> None:
    for k in keys:
        assert ours[k] == pytest.approx(ref[k], abs=1e-3), k


def rows_for(emb, indices):
    where = {idx: row for row, idx in enumerate(emb.indices)}
    return emb.vectors[[where[i] for i in indices]]


# ------------------------------------------------------------------------------------------------
# zero-shot


def test_zeroshot_esc50_matches_independent(tiny, esc50):
    result = run_zeroshot(tiny.enc, esc50, cache=tiny.cache, progress=False)
    items = esc50.items(4)
    # The same embeddings, straight from the cache (nothing re-encoded).
    emb = embed_audio_items(tiny.enc, esc50, items, cache=tiny.cache)
    assert emb.encoded == 0 and emb.cached == 50 and not emb.failures
    # ... and they are what the model gives for the official preprocessing of the files.
    direct = tiny.enc.encode_audio([fit_length(load_audio(it.path)[0], 220500) for it in items[:2]])
    np.testing.assert_allclose(emb.vectors[:2], direct, atol=1e-5)

    text = tiny.enc.encode_texts(list(esc50.class_names))  # official template "{}"
    scores = emb.vectors.astype(np.float64) @ text.astype(np.float64).T
    target = np.array([esc50.class_names.index(it.labels[0]) for it in items])
    pred = scores.argmax(axis=1)
    top5 = np.argsort(-scores, axis=1)[:, :5]
    split = result.splits[0]
    assert split["fold"] == 4 and split["n"] == 50 and split["excluded"] == 0
    assert split["top1"] == pytest.approx(100 * np.mean(pred == target), abs=1e-3)
    in_top5 = [t in row for t, row in zip(target, top5, strict=True)]
    assert split["top5"] == pytest.approx(100 * np.mean(in_top5), abs=1e-3)
    confusion = np.zeros((50, 50), int)
    for t, p in zip(target, pred, strict=True):
        confusion[t, p] += 1
    np.testing.assert_array_equal(split["confusion"], confusion)
    per_class = [100.0 * float(pred[target == c][0] == c) for c in range(50)]  # one clip per class
    np.testing.assert_allclose(split["per_class_accuracy"], per_class)
    class_ap = [average_precision_score(target == c, scores[:, c]) for c in range(50)]
    assert split["class_mAP"] == pytest.approx(100 * np.mean(class_ap), abs=1e-3)
    assert result.summary["top1"] == pytest.approx(split["top1"], abs=1e-3)
    assert result.summary["folds"] == [4]
    assert result.settings["model_sha256"] == tiny.sha and result.settings["template"] == "{}"
    assert result.counts["ok"] == 50 and result.counts["failed"] == 0


def test_zeroshot_template_and_report_files(tiny, esc50, tmp_path):
    result = run_zeroshot(tiny.enc, esc50, folds=[4], template="the sound of {}", cache=tiny.cache, progress=False)
    assert result.settings["prompts"][0] == "the sound of dog"
    assert result.counts["encoded"] == 0  # audio embeddings do not depend on the template
    report = build_report(result, tmp_path, files=["report.json"])  # PNGs: see the CLI tests
    write_json(report, tmp_path / "report.json")
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["paper"]["top1"] == {"partial": 69.40, "full": 68.60}
    assert loaded["summary"]["top1"] == result.summary["top1"]
    assert loaded["dataset"]["preprocessing"]["clip_samples"] == 220500
    with pytest.raises(ValueError, match="no '{}'"):
        run_zeroshot(tiny.enc, esc50, template="a sound", cache=tiny.cache, progress=False)
    with pytest.raises(DatasetError, match="no fold 1"):
        run_zeroshot(tiny.enc, esc50, folds=[1], cache=tiny.cache, progress=False)


# ------------------------------------------------------------------------------------------------
# querying


def test_querying_us8k_matches_independent(tiny, us8k):
    result = run_querying(tiny.enc, us8k, cache=tiny.cache, progress=False)
    assert result.settings["directions"] == ["text->audio", "audio->text", "audio->audio"]
    items = us8k.items()
    emb = embed_audio_items(tiny.enc, us8k, items, cache=tiny.cache)
    assert emb.encoded == 0 and len(emb.indices) == 37
    per_fold = {}
    for split in result.splits:
        fold = split["fold"]
        idx = [i for i, it in enumerate(items) if it.fold == fold]
        audio = rows_for(emb, idx).astype(np.float64)
        labels = [items[i].labels[0] for i in idx]
        names = sorted(set(labels))
        text = tiny.enc.encode_texts(names).astype(np.float64)
        lab = np.array([names.index(x) for x in labels])
        rel_ta = np.arange(len(names))[:, None] == lab[None, :]
        expected = {
            "text->audio": ref_retrieval(text @ audio.T, rel_ta),
            "audio->text": ref_retrieval(audio @ text.T, rel_ta.T),
            "audio->audio": ref_retrieval(audio @ audio.T, lab[:, None] == lab[None, :], np.eye(len(idx), dtype=bool)),
        }
        for name, ref in expected.items():
            assert_figures(split["directions"][name], ref)
        assert split["directions"]["text->audio"]["queries"] == len(names)
        assert split["directions"]["audio->text"]["queries"] == len(idx)
        per_fold[fold] = expected
    # Fold 2 holds a single gun-shot clip: no other clip is relevant to it.
    assert result.splits[1]["directions"]["audio->audio"]["skipped_queries"] == 1
    for name, summ in result.summary["directions"].items():
        for k in ("P@1", "R@1", "mAP", "MRR"):
            assert summ[k] == pytest.approx(np.mean([per_fold[f][name][k] for f in (1, 2)]), abs=1e-3)
        assert len(summ["pr_curve"]) == 11
    # audio->text has exactly one relevant text per clip, so P@1 == R@1 and AP == RR.
    a2t = result.summary["directions"]["audio->text"]
    assert a2t["P@1"] == pytest.approx(a2t["R@1"]) and a2t["mAP"] == pytest.approx(a2t["MRR"])

    pooled = run_querying(tiny.enc, us8k, scope="all", cache=tiny.cache, progress=False)
    assert [s["split"] for s in pooled.splits] == ["all"]
    assert pooled.summary["directions"]["text->audio"]["queries"] == 10


def test_querying_images_and_audio_manifest(tiny, shared_data, tmp_path):
    root = shared_data / "tuxpaint-triples"
    with open(root / "triples.csv", newline="") as fh:
        triples = list(csv.DictReader(fh))
    animals = [t for t in triples if t["category"] == "animals"][:2]
    vehicles = [t for t in triples if t["category"] == "vehicles"][:2]
    manifest = tmp_path / "m.csv"
    lines = ["audio,image,labels"] + [f"{root / t['audio']},{root / t['image']},{t['category']}"
                                      for t in animals + vehicles]
    manifest.write_text("\n".join(lines) + "\n")
    ds = ManifestDataset(manifest, clip_seconds=1.0)
    result = run_querying(tiny.enc, ds, cache=tiny.cache, progress=False)
    assert result.settings["directions"] == ["text->audio", "audio->text", "audio->audio", "text->image",
                                             "image->text", "audio->image", "image->audio"]
    items = ds.items()
    audio = embed_audio_items(tiny.enc, ds, items, cache=tiny.cache)
    images = embed_image_paths(tiny.enc, ds, [it.image_paths[0] for it in items], cache=tiny.cache)
    assert audio.encoded == 0 and images.encoded == 0
    lab = np.array([0, 0, 1, 1])
    same = lab[:, None] == lab[None, :]
    a, i = audio.vectors.astype(np.float64), images.vectors.astype(np.float64)
    text = tiny.enc.encode_texts(["animals", "vehicles"]).astype(np.float64)
    rel_t = np.arange(2)[:, None] == lab[None, :]
    got = result.splits[0]["directions"]
    assert_figures(got["audio->image"], ref_retrieval(a @ i.T, same))
    assert_figures(got["image->audio"], ref_retrieval(i @ a.T, same))
    assert_figures(got["text->image"], ref_retrieval(text @ i.T, rel_t))
    assert_figures(got["image->text"], ref_retrieval(i @ text.T, rel_t.T))
    plots, _ = write_plots(result, tmp_path)
    assert [p.name for p in plots] == ["pr_curves.png"] and plots[0].read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------------------------
# fine-tuned


def test_finetuned_us8k_per_fold(tiny, us8k, tmp_path):
    for fold in (1, 2):
        shutil.copy(tiny.path, tmp_path / f"fold{fold}.pt")
    result = run_finetuned(us8k, str(tmp_path / "fold{fold}.pt"), arch="audioclip-tiny", device="cpu",
                           cache=tiny.cache, progress=False)
    zeroshot = run_zeroshot(tiny.enc, us8k, cache=tiny.cache, progress=False)
    # The same weights in every fold: the figures are the zero-shot ones, from the cached embeddings.
    assert result.counts["encoded"] == 0 and result.counts["from_cache"] == 37
    for ft, zs in zip(result.splits, zeroshot.splits, strict=True):
        assert ft["fold"] == zs["fold"]
        assert ft["top1"] == pytest.approx(zs["top1"]) and ft["top5"] == pytest.approx(zs["top5"])
        assert ft["checkpoint"].endswith(f"fold{ft['fold']}.pt") and ft["checkpoint_sha256"] == tiny.sha
    assert result.summary["top1"] == pytest.approx(zeroshot.summary["top1"])
    with pytest.raises(CheckpointError, match=r"not found:\n  fold 3: .*fold3\.pt"):
        fold_checkpoints(str(tmp_path / "fold{fold}.pt"), [1, 3])
    with pytest.raises(CheckpointError, match="has no '{fold}'"):
        run_finetuned(us8k, str(tiny.path), progress=False)


# ------------------------------------------------------------------------------------------------
# cache and unreadable files


class CountingEncoder:
    """Delegates to an Encoder and counts the clips it is asked to encode."""

    def __init__(self, enc):
        self._enc = enc
        self.clips = 0

    def __getattr__(self, name):
        return getattr(self._enc, name)

    def encode_audio(self, waveforms):
        self.clips += len(waveforms)
        return self._enc.encode_audio(waveforms)


def test_cache_skips_encoding_and_bad_files_are_reported(tiny, shared_data, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    sources = sorted((shared_data / "esc50-mini" / "audio").glob("*.wav"))[:3]
    for src in sources:
        shutil.copy(src, clips / src.name)
    (clips / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(64))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,labels\n" + "".join(f"clips/{s.name},class{i % 2}\n" for i, s in enumerate(sources))
                        + "clips/broken.wav,class0\n")
    ds = ManifestDataset(manifest, clip_seconds=2.0)
    cache = EmbeddingCache(tiny.sha, "fp32", root=tmp_path / "cache")
    enc = CountingEncoder(tiny.enc)

    first = run_zeroshot(enc, ds, cache=cache, progress=False)
    assert enc.clips == 3 and first.counts["encoded"] == 3 and first.counts["failed"] == 1
    assert [f.path for f in first.failures] == [str(clips / "broken.wav")] and first.failures[0].reason
    assert first.splits[0]["n"] == 3 and first.splits[0]["excluded"] == 1
    report = build_report(first)
    assert report["failures"][0]["path"].endswith("broken.wav") and "excluded" in report["notes"][-1]
    stored = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(stored) == 3 and len(list((tmp_path / "cache").rglob("*.npy"))) == 3
    key = json.loads(stored[0].read_text())
    assert key["model_sha256"] == tiny.sha and key["preprocessing"]["clip_samples"] == 88200
    assert {"path", "size", "mtime_ns", "dataset", "precision"} <= set(key)
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    second = run_zeroshot(enc, ds, cache=cache, progress=False)
    assert enc.clips == 3  # nothing encoded the second time
    assert second.counts["from_cache"] == 3 and second.counts["encoded"] == 0
    assert second.splits[0]["top1"] == first.splits[0]["top1"]
    assert second.splits[0]["predictions"] == first.splits[0]["predictions"]

    st = (clips / sources[0].name).stat()
    os.utime(clips / sources[0].name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file
    run_zeroshot(enc, ds, cache=cache, progress=False)
    assert enc.clips == 4
    run_zeroshot(enc, ds, cache=False, progress=False)
    assert enc.clips == 7

    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("path,labels\nclips/broken.wav,class0\n")
    with pytest.raises(DatasetError, match=r"all 1 audio files failed to load; first: .*broken\.wav"):
        run_zeroshot(enc, ManifestDataset(only_bad, clip_seconds=1.0), cache=cache, progress=False)


# ------------------------------------------------------------------------------------------------
# CLI


def cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root: keeps `eval` a subcommand."""

    register(app)
    return app


def invoke(tiny, *args: str):
    env = {"ACSEARCH_CACHE_DIR": str(tiny.cache_root), "ACSEARCH_OFFLINE": "1", "COLUMNS": "120"}
    return CliRunner().invoke(cli_app(), ["eval", *args], env=env)


def model_args(tiny) -> list[str]:
    return ["--model", str(tiny.path), "--arch", "audioclip-tiny", "--device", "cpu"]


def test_cli_zeroshot_esc50_json(tiny, esc50, tmp_path):
    out = tmp_path / "out"
    res = invoke(tiny, "--dataset", "esc50", "--root", str(esc50.root), "--task", "zeroshot", *model_args(tiny),
                 "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report == json.loads((out / "report.json").read_text())
    expected = run_zeroshot(tiny.enc, esc50, cache=tiny.cache, progress=False)
    assert report["summary"]["top1"] == pytest.approx(expected.summary["top1"])
    assert report["splits"][0]["top5"] == pytest.approx(expected.splits[0]["top5"])
    settings = report["settings"]
    assert settings["model"] == str(tiny.path) and settings["model_sha256"] == tiny.sha
    assert settings["arch"] == "audioclip-tiny" and settings["folds"] == [4] and settings["template"] == "{}"
    assert settings["dataset_root"] == str(esc50.root.absolute()) and settings["cache"]["enabled"]
    assert report["counts"]["items"] == 50 and report["timings_s"]["total"] > 0
    assert report["paper"]["top1"]["full"] == 68.60
    for name in ("confusion_matrix.png", "per_class_accuracy.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert name in report["output"]["files"]


def test_cli_querying_us8k_table(tiny, us8k, tmp_path):
    out = tmp_path / "q"
    res = invoke(tiny, "-d", "us8k", "--root", str(us8k.root), "-t", "querying", *model_args(tiny),
                 "--folds", "1,2", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "Querying: UrbanSound8K" in text and "text->audio" in text and "audio->audio" in text
    assert "paper partial" in text and "40.81" in text and "80.04" in text
    assert str(out.absolute()) in text.replace("\n", "")
    report = json.loads((out / "report.json").read_text())
    assert set(report["summary"]["directions"]) == {"text->audio", "audio->text", "audio->audio"}
    assert report["paper"]["directions"]["text->audio"]["full"]["mAP"] == 80.04
    assert (out / "pr_curves.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_finetuned_esc50(tiny, esc50, tmp_path):
    shutil.copy(tiny.path, tmp_path / "fold4.pt")
    out = tmp_path / "ft"
    res = invoke(tiny, "--dataset", "esc50", "--root", str(esc50.root), "--task", "finetuned",
                 "--checkpoint-pattern", str(tmp_path / "fold{fold}.pt"), "--arch", "audioclip-tiny",
                 "--device", "cpu", "--out", str(out), "--json", "-q")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    expected = run_zeroshot(tiny.enc, esc50, cache=tiny.cache, progress=False)
    assert report["task"] == "finetuned" and report["splits"][0]["checkpoint"].endswith("fold4.pt")
    assert report["summary"]["top1"] == pytest.approx(expected.summary["top1"])
    assert report["paper"]["top1"] == {"partial": 96.65, "full": 97.15}


def test_cli_errors(tiny, esc50, tmp_path):
    res = invoke(tiny, "--dataset", "esc50", "--root", str(tmp_path / "nowhere"), "--task", "zeroshot",
                 *model_args(tiny), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "error: ESC-50: dataset folder not found" in res.stderr
    res = invoke(tiny, "--dataset", "esc50", "--root", str(esc50.root), "--task", "zeroshot", *model_args(tiny),
                 "--folds", "1", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "no fold 1; folds present: 4" in res.stderr
    res = invoke(tiny, "--dataset", "esc50", "--root", str(esc50.root), "--task", "zeroshot",
                 "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "missing.pt: no such file" in res.stderr
    res = invoke(tiny, "--dataset", "esc50", "--task", "zeroshot")
    assert res.exit_code == 2 and "--root" in res.stderr
    res = invoke(tiny, "--dataset", "esc50", "--root", str(esc50.root), "--task", "finetuned")
    assert res.exit_code == 2 and "--checkpoint-pattern" in res.stderr
    res = invoke(tiny, "--dataset", "audioset", "--root", str(esc50.root), "--task", "zeroshot")
    assert res.exit_code == 2
    res = invoke(tiny, "--dataset", "esc50", "--root", str(esc50.root), "--task", "finetuned",
                 "--checkpoint-pattern", str(tmp_path / "none{fold}.pt"))
    assert res.exit_code == 2 and "fold 4:" in res.stderr and "none4.pt" in res.stderr


def test_parse_folds():
    assert parse_folds("1,2") == [1, 2]
    assert parse_folds("1-3,5") == [1, 2, 3, 5]
    assert parse_folds(None) is None and parse_folds(" ") is None
    with pytest.raises(typer.BadParameter):
        parse_folds("one")
