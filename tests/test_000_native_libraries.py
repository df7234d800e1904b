"""Every compiled dependency loads and computes: run first, so a broken wheel is one clear failure.

``scripts/run-tests.sh`` runs this file on its own before the suite and stops there if it fails,
instead of letting one bad wheel surface as dozens of unrelated errors.
"""

from __future__ import annotations

import io

import numpy as np
import pytest


def test_torch_ops():
    import torch

    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert torch.equal(x @ x.T, torch.from_numpy(x.numpy() @ x.numpy().T))
    conv = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
    assert conv.shape == (1, 1, 2, 2) and float(conv[0, 0, 0, 0]) == 9.0
    spec = torch.fft.rfft(torch.sin(torch.arange(64) * (2 * np.pi / 8)))
    assert int(spec.abs().argmax()) == 8
    buf = io.BytesIO()
    torch.save({"w": x}, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=True)["w"], x)


def test_soundfile_roundtrip():
    import soundfile as sf

    data = (np.sin(np.arange(4410) / 7.0) * 0.5).astype(np.float32)
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")):
        buf = io.BytesIO()
        sf.write(buf, data, 44100, format=fmt, subtype=subtype)
        buf.seek(0)
        back, rate = sf.read(buf, dtype="float32")
        assert rate == 44100 and back.shape == data.shape, fmt


def test_soxr_resamples():
    import soxr

    out = soxr.resample(np.zeros((4800, 1), np.float32), 48000, 44100, "VHQ")
    assert out.shape == (4410, 1)


@pytest.mark.parametrize(("codec", "container"), [("libmp3lame", "mp3"), ("aac", "adts"), ("libopus", "ogg")])
def test_av_encodes_and_decodes(codec, container):
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=48000, layout="mono")
        samples = np.zeros((1, 48000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=48000)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    buf.seek(0)
    with av.open(buf) as inp:
        decoded = sum(f.samples for f in inp.decode(audio=0))
    assert decoded >= 40000, codec


def test_faiss_search():
    import faiss
    from faiss.contrib.evaluation import knn_intersection_measure

    x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    index = faiss.IndexFlatL2(16)
    index.add(x)
    _, ids = index.search(x[:5], 3)
    assert list(ids[:, 0]) == [0, 1, 2, 3, 4]
    assert knn_intersection_measure(ids, ids) == 1.0


def test_lancedb_and_pyarrow(tmp_path):
    import lancedb
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.table({"id": ["a", "b"], "v": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32(), 2))})
    assert pc.sum(pc.list_value_length(table["v"])).as_py() == 4
    db = lancedb.connect(tmp_path / "db")
    tbl = db.create_table("t", data=table)
    assert tbl.count_rows() == 2
    assert tbl.search([1.0, 0.0]).limit(1).to_arrow()["id"].to_pylist() == ["a"]


def test_image_and_tokenizer_stack():
    from open_clip.tokenizer import SimpleTokenizer
    from PIL import Image

    image = Image.new("RGB", (32, 16), (255, 0, 0)).resize((16, 8), Image.BICUBIC)
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert SimpleTokenizer().encode("a dog")
