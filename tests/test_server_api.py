"""The web server's JSON API, in process (TestClient), on the tiny model over a small real index."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from audioclip_search.index import Index  # noqa: E402
from audioclip_search.indexer.pipeline import IndexOptions  # noqa: E402
from audioclip_search.server import ServerSettings, create_app  # noqa: E402

from .conftest import SHARED_DATA  # noqa: E402

BASE = "http://127.0.0.1"
TUX = ["animals/amphibians/frog", "animals/birds/blackbird", "animals/birds/crow",
       "vehicles/emergency/firetruck", "naturalforces/lightningbolt"]
UPLOAD_LIMIT = 2 * 1024 * 1024
_BUILT: dict = {}
_BUILD_LOCK = threading.Lock()


def build_server_index(tmp_path_factory, tiny_encoder) -> tuple[Index, dict[str, Path]]:
    """A few esc50 clips and tuxpaint sounds + pictures (with captions and labels), built once per session
    (the browser test shares it)."""
    with _BUILD_LOCK:
        if "index" not in _BUILT:
            tmp = tmp_path_factory.mktemp("server-index")
            root = SHARED_DATA / "tuxpaint-triples"
            rows = {r["id"]: r for r in csv.DictReader((root / "triples.csv").open())}
            files: dict[str, Path] = {}
            with (tmp / "captions.csv").open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["path", "caption", "labels"])
                for key in TUX:
                    for column in ("audio", "image"):
                        path = (root / rows[key][column]).resolve()
                        files[path.name] = path
                        writer.writerow([str(path), rows[key]["caption"], rows[key]["category"]])
            for wav in sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:2]:
                files[wav.name] = wav.resolve()
            index = Index.open(tmp / "db", encoder=tiny_encoder)
            report = index.add(sorted(files.values()), IndexOptions(captions=tmp / "captions.csv", workers=0))
            assert report.ok, report.failed
            _BUILT["index"], _BUILT["files"] = index, files
    return _BUILT["index"], _BUILT["files"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_encoder):
    return build_server_index(tmp_path_factory, tiny_encoder)


@pytest.fixture(scope="module")
def app(built):
    index, _ = built
    return create_app(index, ServerSettings(max_upload_bytes=UPLOAD_LIMIT))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=BASE) as c:
        yield c


@pytest.fixture(scope="module")
def files(built):
    return built[1]


def ids_of(index: Index, modality: str, name: str) -> list[str]:
    rows = index.store.rows_by_ids(modality, index.store.ids(modality))
    return [r["id"] for r in sorted(rows, key=lambda r: r.get("start") or 0) if r["path"].endswith("/" + name)]


def raw_request(app, raw_path: str, method: str = "GET", headers: tuple = ()) -> tuple[int, dict, bytes]:
    """Call the ASGI app with a path exactly as given (no client-side URL normalisation)."""
    path, _, query = raw_path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(path), "raw_path": path.encode("latin-1"), "query_string": query.encode("latin-1"),
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 80)}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and body["message"]
    assert "Traceback" not in response.text
    return body


# ------------------------------------------------------------------------------------------ info
def test_health_and_info(client, built):
    index, _ = built
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["model_loaded"]
    info = client.get("/api/info").json()
    assert info["tables"]["audio"]["rows"] == index.store.count("audio") > 0
    assert info["tables"]["image"]["rows"] == 5
    assert info["tables"]["text"]["rows"] == 0
    assert info["model"]["dim"] == index.encoder.embed_dim
    assert info["limits"]["max_upload_bytes"] == UPLOAD_LIMIT
    assert ".wav" in info["limits"]["audio_extensions"] and ".png" in info["limits"]["image_extensions"]
    # security headers on every response, API responses not cached
    assert health.headers["x-content-type-options"] == "nosniff"
    assert health.headers["cache-control"] == "no-store"


def test_openapi_kept_and_docs_offline(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/similar/{modality}/{item_id}", "/api/media/{modality}/{item_id}",
            "/api/thumbnails/{item_id}", "/api/info", "/api/health"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/api/search"] and "get" in spec["paths"]["/api/search"]
    for path in ("/", "/docs", "/static/app.js", "/static/style.css", "/static/docs.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        # nothing loaded from another origin: the page works offline
        # the SVG XML namespace is a name, not a fetch; any other absolute URL would be
        assert not re.search(r"https?:/[/](?!www\.w3\.org/2000/svg)", response.text), path
        assert "//cdn" not in response.text, path
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert "script-src 'self'" in client.get("/").headers["content-security-policy"]
    assert_json_error(client.get("/static/secret.py"), 404)
    assert_json_error(client.get("/redoc"), 404)


# ------------------------------------------------------------------------------------------ search
def test_text_search_returns_ranked_hits(client, built):
    index, _ = built
    body = client.get("/api/search", params={"q": "a frog croaking", "k": 6}).json()
    assert body["count"] == 6 and body["query"]["text"] == "a frog croaking"
    hits = body["results"]
    assert [h["rank"] for h in hits] == list(range(1, 7))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # the same ranking as the library's own search, score for score
    vector = index.engine.embedder.text("a frog croaking")
    expected = index.engine.search_vector(vector, "all", 6)
    assert scores == pytest.approx([h.score for h in expected], abs=1e-5)
    for hit in hits:
        assert hit["urls"]["media"] == f"/api/media/{hit['modality']}/{hit['id']}"
        assert hit["urls"]["similar"] == f"/api/similar/{hit['modality']}/{hit['id']}"
        if hit["modality"] == "audio":
            assert hit["urls"]["play"].startswith(hit["urls"]["media"] + f"#t={hit['start']:.2f}")
            assert hit["duration"] and hit["duration"] >= hit["end"] - 1e-6
        else:
            assert hit["urls"]["thumbnail"] == f"/api/thumbnails/{hit['id']}"


def test_target_label_and_where_filters(client):
    images = client.get("/api/search", params={"q": "bird", "target": "image", "k": 50}).json()["results"]
    assert len(images) == 5 and {h["modality"] for h in images} == {"image"}
    both = client.get("/api/search", params={"q": "bird", "target": "audio,image", "k": 50}).json()["results"]
    assert {h["modality"] for h in both} == {"audio", "image"}
    animals = client.get("/api/search", params={"q": "bird", "label": "animals", "k": 50}).json()["results"]
    assert animals and all("animals" in h["labels"] for h in animals)
    assert {h["caption"] for h in animals} == {"A frog.", "A blackbird.", "A crow."}
    frog = client.get("/api/search", params={"q": "bird", "where": "caption = 'A frog.'", "k": 50}).json()
    assert {(h["modality"], h["name"]) for h in frog["results"]} == {("image", "frog.png"), ("audio", "frog.ogg")}
    assert frog["query"]["where"] == "caption = 'A frog.'"
    long_clips = client.get("/api/search", params={"q": "x", "target": "audio", "where": "duration > 4.5",
                                                   "k": 50}).json()["results"]
    assert long_clips and all(h["duration"] > 4.5 for h in long_clips)
    assert_json_error(client.get("/api/search", params={"q": "x", "where": "no_such_column > 1"}), 400)
    assert_json_error(client.get("/api/search", params={"q": "x", "target": "video"}), 400)
    assert_json_error(client.get("/api/search", params={"q": "x", "k": 0}), 422)
    assert_json_error(client.get("/api/search", params={"q": "x", "k": 10_000}), 422)
    assert_json_error(client.get("/api/search"), 400)
    assert_json_error(client.get("/api/search", params={"q": "x" * 5000}), 400)


def test_upload_audio_query_finds_the_same_sound(client, files):
    clip = files["frog.ogg"]
    with clip.open("rb") as fh:
        response = client.post("/api/search", files={"audio": ("frog.ogg", fh, "audio/ogg")},
                               data={"target": "audio", "k": "3"})
    body = response.json()
    assert response.status_code == 200, body
    assert body["query"]["audio"] == "frog.ogg"
    assert body["results"][0]["path"] == str(clip)
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_upload_image_query_finds_the_same_picture(client, files):
    picture = files["crow.png"]
    response = client.post("/api/search", files={"image": ("crow.png", picture.read_bytes(), "image/png")},
                           data={"target": "image", "k": "2", "q": "a black bird"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"]["image"] == "crow.png" and body["query"]["text"] == "a black bird"
    only_image = client.post("/api/search", files={"image": ("crow.png", picture.read_bytes(), "image/png")},
                             data={"target": "image", "k": "1"}).json()
    assert only_image["results"][0]["path"] == str(picture)
    assert only_image["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_search_by_id_finds_similar(client, built):
    index, _ = built
    image_id = ids_of(index, "image", "firetruck.png")[0]
    body = client.get(f"/api/similar/image/{image_id}", params={"k": 4}).json()
    assert body["query"]["item"] == {"modality": "image", "id": image_id}
    assert body["results"][0]["id"] == image_id
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    audio_id = ids_of(index, "audio", "lightningbolt.ogg")[0]
    same = client.get("/api/search", params={"item_id": audio_id, "item_modality": "audio", "target": "audio",
                                             "k": 3}).json()
    assert same["results"][0]["id"] == audio_id
    only_images = client.get(f"/api/similar/audio/{audio_id}", params={"target": "image"}).json()
    assert only_images["count"] == 5 and {h["modality"] for h in only_images["results"]} == {"image"}
    mixed = client.get("/api/search", params={"item_id": audio_id, "item_modality": "audio", "q": "thunder"})
    assert mixed.status_code == 200 and mixed.json()["query"]["item"]["id"] == audio_id
    item = client.get(f"/api/items/audio/{audio_id}").json()
    assert item["caption"] == "A lightning bolt." and item["labels"] == ["naturalforces"]
    assert "embedding" not in item and item["urls"]["media"] == f"/api/media/audio/{audio_id}"


def test_unknown_ids_are_404(client, built):
    index, _ = built
    audio_id = ids_of(index, "audio", "frog.ogg")[0]
    unknown = "0" * 40
    for url in (f"/api/similar/audio/{unknown}", f"/api/media/audio/{unknown}", f"/api/items/image/{unknown}",
                f"/api/thumbnails/{unknown}", f"/api/thumbnails/{audio_id}",  # an audio id is no picture
                f"/api/media/image/{audio_id}", f"/api/media/video/{audio_id}", f"/api/similar/bogus/{audio_id}",
                "/api/media/audio/not.an.id", "/api/nothing-here"):
        assert_json_error(client.get(url), 404)
    assert_json_error(client.get("/api/search", params={"item_id": unknown, "item_modality": "audio"}), 404)
    assert_json_error(client.get("/api/search", params={"item_id": "../../etc/passwd", "item_modality": "audio"}),
                      404)
    assert_json_error(client.get("/api/search", params={"item_id": "/etc/passwd", "item_modality": "image"}), 404)
    assert_json_error(client.get("/api/search", params={"item_id": audio_id, "item_modality": "../x"}), 404)


@pytest.mark.parametrize("raw_path", [
    "/api/media/audio/../../../../etc/passwd",
    "/api/media/audio/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/media/audio/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/media/audio/%2E%2E/%2E%2E/etc/passwd",
    "/api/media/audio/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/api/media/audio/%2Fetc%2Fpasswd",
    "/api/media/image//etc/passwd",
    "/api/media/audio/..%5C..%5Cwindows%5Cwin.ini",
    "/api/thumbnails/..%2F..%2Fetc%2Fpasswd",
    "/static/..%2F..%2F..%2Fpyproject.toml",
    "/static/%2e%2e/server/app.py",
    "/static/%00app.js",
    "/api/./health/../info",
    "//etc/passwd",
])
def test_traversal_attempts_refused(app, raw_path):
    status, headers, body = raw_request(app, raw_path)
    assert status in (400, 404), (raw_path, status)
    assert headers["content-type"].startswith("application/json")
    assert b"root:" not in body and b"[project]" not in body and b"import" not in body


def test_media_range_requests(client, built, files):
    index, _ = built
    for name, ctype in (("frog.ogg", "audio/ogg"), (sorted(n for n in files if n.endswith(".wav"))[0], "audio/wav")):
        path = files[name]
        data = path.read_bytes()
        size = len(data)
        url = f"/api/media/audio/{ids_of(index, 'audio', name)[0]}"

        part = client.get(url, headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-1099/{size}"
        assert part.headers["accept-ranges"] == "bytes"
        assert part.headers["content-type"] == ctype
        assert part.headers["content-length"] == "1000"
        assert part.content == data[100:1100]

        tail = client.get(url, headers={"Range": "bytes=-500"})
        assert tail.status_code == 206 and tail.content == data[-500:]
        assert tail.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
        rest = client.get(url, headers={"Range": f"bytes={size - 10}-"})
        assert rest.status_code == 206 and rest.content == data[-10:]
        clipped = client.get(url, headers={"Range": f"bytes=0-{size * 2}"})
        assert clipped.status_code == 206 and clipped.content == data

        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == ctype

        beyond = client.get(url, headers={"Range": f"bytes={size}-"})
        assert_json_error(beyond, 416)
        assert beyond.headers["content-range"] == f"bytes */{size}"

        several = client.get(url, headers={"Range": "bytes=0-1,5-6"})  # multiple ranges: whole file
        assert several.status_code == 200 and several.content == data
        stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"not-the-etag"'})
        assert stale.status_code == 200 and stale.content == data
        fresh = client.get(url, headers={"Range": "bytes=0-9", "If-Range": whole.headers["etag"]})
        assert fresh.status_code == 206 and fresh.content == data[:10]

        head = client.head(url, headers={"Range": "bytes=0-9"})
        assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""

    picture = files["frog.png"]
    full = client.get(f"/api/media/image/{ids_of(index, 'image', 'frog.png')[0]}")
    assert full.status_code == 200 and full.content == picture.read_bytes()
    assert full.headers["content-type"] == "image/png"


def test_media_of_missing_or_non_local_files_is_404(client, app, built, monkeypatch, tmp_path):
    index, _ = built
    audio_id = ids_of(index, "audio", "frog.ogg")[0]
    service = app.state.service
    for stored in ("/nonexistent/gone.wav", "relative/path.wav", "http://127.0.0.1:9/key.wav", "file://127.0.0.2/x.wav"):
        monkeypatch.setattr(service, "row", lambda modality, item_id, p=stored: {"id": item_id, "path": p})
        body = assert_json_error(client.get(f"/api/media/audio/{audio_id}"), 404)
        assert stored not in body["message"] and "gone" not in body["message"]  # the stored path never leaks
        assert ("no longer there" if stored.startswith("/") else "not a local file") in body["message"]
        assert_json_error(client.get(f"/api/thumbnails/{audio_id}"), 404)
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    monkeypatch.setattr(service, "row", lambda modality, item_id: {"id": item_id, "path": str(garbage)})
    assert "thumbnail" in assert_json_error(client.get(f"/api/thumbnails/{audio_id}"), 422)["message"]


def test_thumbnails(client, app, built, files):
    index, _ = built
    image_id = ids_of(index, "image", "blackbird.png")[0]
    first = client.get(f"/api/thumbnails/{image_id}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"  # transparent source
    with Image.open(files["blackbird.png"]) as source:
        expected = min(320, max(source.size))  # fitted in the box, never enlarged
    with Image.open(io.BytesIO(first.content)) as img:
        assert max(img.size) == expected and img.mode == "RGBA"
    misses = app.state.service.thumbs.misses
    again = client.get(f"/api/thumbnails/{image_id}")
    assert again.content == first.content and app.state.service.thumbs.misses == misses  # from the LRU cache
    assert client.get(f"/api/thumbnails/{image_id}", headers={"If-None-Match": first.headers["etag"]}).status_code \
        == 304
    small = client.get(f"/api/thumbnails/{image_id}", params={"size": 64, "format": "jpeg"})
    assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(small.content)) as img:
        assert img.format == "JPEG" and max(img.size) == 64 and img.mode == "RGB"
    assert_json_error(client.get(f"/api/thumbnails/{image_id}", params={"size": 5000}), 422)
    assert_json_error(client.get(f"/api/thumbnails/{image_id}", params={"format": "gif"}), 422)


# ------------------------------------------------------------------------------------------ uploads
def test_oversized_upload_refused_413(client):
    big = b"\0" * (UPLOAD_LIMIT + 512 * 1024)
    declared = client.post("/api/search", files={"audio": ("big.wav", big, "audio/wav")})
    assert "limit" in assert_json_error(declared, 413)["message"]

    def chunks():  # no Content-Length: refused while the body streams in
        for _ in range(40):
            yield b"x" * (128 * 1024)

    streamed = client.post("/api/search", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=abc"})
    assert_json_error(streamed, 413)
    # just under the request limit but over the file limit: still 413
    assert_json_error(client.post("/api/search", files={"audio": ("a.wav", b"\0" * (UPLOAD_LIMIT + 10), "audio/wav")}),
                      413)


@pytest.mark.parametrize(("field", "name", "ctype"), [
    ("audio", "notes.txt", "text/plain"),
    ("audio", "picture.png", "image/png"),
    ("audio", "clip.wav", "text/html"),
    ("audio", "noextension", "audio/wav"),
    ("image", "clip.wav", "audio/wav"),
    ("image", "photo.svg", "image/svg+xml"),
    ("image", "photo.png", "application/json"),
])
def test_wrong_upload_type_refused_415(client, files, field, name, ctype):
    payload = files["frog.png" if field == "image" else "frog.ogg"].read_bytes()
    assert_json_error(client.post("/api/search", files={field: (name, payload, ctype)}), 415)


def test_upload_edge_cases(client):
    assert_json_error(client.post("/api/search", json={"q": "frog"}), 415)
    assert_json_error(client.post("/api/search", content=b"q=frog", headers={"Content-Type": "text/plain"}), 415)
    assert_json_error(client.post("/api/search", files={"audio": ("../../etc/x.wav", b"RIFF", "audio/wav")}), 400)
    assert_json_error(client.post("/api/search", files={"audio": ("empty.wav", b"", "audio/wav")}), 400)
    bad = assert_json_error(client.post("/api/search", files={"audio": ("fake.wav", b"not audio" * 100, "audio/wav")}),
                            422)
    assert "fake.wav" in bad["message"] and "/tmp" not in bad["message"]
    assert_json_error(client.post("/api/search", files={"image": ("fake.png", b"\x89PNG broken", "image/png")}), 422)
    # a form without a file is a text search
    text_only = client.post("/api/search", data={"q": "frog", "k": "2"})
    assert text_only.status_code == 200 and text_only.json()["count"] == 2


def test_uploaded_query_files_are_deleted(client, files, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ok = client.post("/api/search", files={"audio": ("frog.ogg", files["frog.ogg"].read_bytes(), "audio/ogg")})
    assert ok.status_code == 200
    bad = client.post("/api/search", files={"image": ("x.png", b"garbage", "image/png")})
    assert bad.status_code == 422
    assert not list(tmp_path.glob("acsearch-query-*"))


# ------------------------------------------------------------------------------------------ errors, security
def test_errors_are_json_without_traceback(built, monkeypatch):
    index, _ = built
    app = create_app(index, ServerSettings(warm_up=False))

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.state.service.engine, "search_vector", explode)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        response = c.get("/api/search", params={"q": "frog"})
        body = assert_json_error(response, 500)
        assert "secret internal detail" not in response.text and "RuntimeError" in body["message"]
        assert_json_error(c.put("/api/search"), 405)


def test_host_header_and_cors(client, built):
    assert_json_error(client.get("/api/health", headers={"Host": "evil.example"}), 400)
    assert client.get("/api/health", headers={"Host": "localhost:8000"}).status_code == 200
    assert client.get("/api/health", headers={"Host": "[::1]:8000"}).status_code == 200
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"}
    off = client.options("/api/search", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    assert "access-control-allow-origin" not in client.get("/api/health", headers={"Origin": "http://localhost:9"}).headers

    index, _ = built
    cors_app = create_app(index, ServerSettings(warm_up=False, cors_origins=("http://localhost:3000",)))
    with TestClient(cors_app, base_url=BASE) as c:
        on = c.options("/api/search", headers=preflight)
        assert on.status_code == 200 and on.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = c.get("/api/health", headers={"Origin": "http://localhost:8"})
        assert "access-control-allow-origin" not in other.headers
    public = create_app(index, ServerSettings(warm_up=False, host="0.0.0.0"))
    with TestClient(public, base_url=BASE) as c:
        assert c.get("/api/health", headers={"Host": "search.lan"}).status_code == 200


def test_concurrent_requests_all_succeed(client, built, files):
    index, _ = built
    image_id = ids_of(index, "image", "frog.png")[0]
    audio_id = ids_of(index, "audio", "crow.ogg")[0]
    queries = ["dog", "rain", "a frog", "birds", "engine", "thunder", "siren", "crow"]
    def ranked(r) -> list[tuple[str, float]]:
        return [(h["id"], h["score"]) for h in r.json()["results"]]

    serial = {q: ranked(client.get("/api/search", params={"q": q, "k": 5})) for q in queries}
    ogg = files["crow.ogg"].read_bytes()

    def job(i: int):
        kind = i % 4
        if kind == 0 or kind == 1:
            q = queries[i % len(queries)]
            r = client.get("/api/search", params={"q": q, "k": 5})
            return r.status_code, ("text", q, ranked(r))
        if kind == 2:
            r = client.get(f"/api/similar/image/{image_id}", params={"k": 3})
            return r.status_code, ("similar", r.json()["results"][0]["id"] == image_id)
        r = client.post("/api/search", files={"audio": ("crow.ogg", ogg, "audio/ogg")}, data={"target": "audio"})
        return r.status_code, ("audio", r.json()["results"][0]["id"] == audio_id)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(32)))
    assert all(status == 200 for status, _ in results), results
    for _, detail in results:
        if detail[0] == "text":  # same ranking (batched embedding may differ in the last bits: ties may swap)
            got, want = detail[2], serial[detail[1]]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
        else:
            assert detail[1] is True
    media = client.get(f"/api/thumbnails/{image_id}")
    with ThreadPoolExecutor(8) as pool:
        thumbs = list(pool.map(lambda _: client.get(f"/api/thumbnails/{image_id}").content, range(16)))
    assert all(t == media.content for t in thumbs)


def test_text_batcher_batches_concurrent_queries(app):
    service = app.state.service
    batcher = service.texts
    gate = threading.Event()
    real = batcher.encoder.encode_texts
    calls: list[int] = []

    busy = threading.Event()
    queued = threading.Semaphore(0)
    real_put = batcher._queue.put

    def slow(texts, *args, **kwargs):
        calls.append(len(texts))
        busy.set()
        gate.wait(5)
        return real(texts, *args, **kwargs)

    def put(item, *args, **kwargs):
        real_put(item, *args, **kwargs)
        queued.release()

    batcher.encoder.encode_texts = slow  # instance attribute shadows the method
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(service.text_vector, "query 0")]
            assert busy.wait(10)  # the worker is now busy with query 0
            batcher._queue.put = put  # counts the queries queued from here on
            futures += [pool.submit(service.text_vector, f"query {i}") for i in range(1, 6)]
            assert all(queued.acquire(timeout=10) for _ in range(5))
            assert batcher._queue.qsize() == 5 and calls == [1]  # all five wait while query 0 is encoded
            gate.set()
            vectors = [f.result(10) for f in futures]
    finally:
        gate.set()
        del batcher.encoder.encode_texts
        batcher._queue.__dict__.pop("put", None)
    assert len(calls) == 2 and calls[0] == 1 and calls[1] == 5
    for i, v in enumerate(vectors):
        assert np.allclose(v, real([f"query {i}"])[0], atol=1e-5)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_serve_loads_model_once_and_binds_loopback(built, tiny_checkpoint, monkeypatch):
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from audioclip_search.cli import serve as serve_module
    from audioclip_search.encoder import Encoder

    index, _ = built
    loads: list[str] = []
    real_load = Encoder.from_pretrained.__func__

    def counting_load(cls, name, *args, **kwargs):
        loads.append(name)
        return real_load(cls, name, *args, **kwargs)

    captured: dict = {}

    def fake_run(app, **kwargs):
        captured.update(kwargs)
        with TestClient(app, base_url=BASE) as c:
            captured["statuses"] = [c.get("/api/search", params={"q": q}).status_code for q in ("a", "b", "c")]
            captured["info"] = c.get("/api/info").json()

    monkeypatch.setattr(Encoder, "from_pretrained", classmethod(counting_load))
    monkeypatch.setattr(uvicorn, "run", fake_run)
    cli = typer.Typer()
    serve_module.register(cli)
    cli.command("noop")(lambda: None)  # keep "serve" a named sub-command
    db = index.store.uri
    result = CliRunner().invoke(cli, ["serve", "--db", db, "--model", str(tiny_checkpoint), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert loads == [str(tiny_checkpoint)]
    assert captured["host"] == "127.0.0.1" and captured["port"] == 8000
    assert captured["statuses"] == [200, 200, 200]
    assert captured["info"]["tables"]["image"]["rows"] == 5
    assert "serving" in result.output

    missing = CliRunner().invoke(cli, ["serve", "--db", str(Path(db).parent / "nope"), "--model",
                                       str(tiny_checkpoint)])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_module_entry_point_is_the_serve_command():
    from typer.testing import CliRunner

    from audioclip_search.server.__main__ import app as entry

    result = CliRunner().invoke(entry, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--db", "--model", "--arch", "--device", "--table-set", "--max-upload-mb",
                   "--cors-origin"):
        assert option in result.output


def test_settings_validation():
    assert ServerSettings().host == "127.0.0.1" and ServerSettings().max_upload_bytes == 50 * 1024 * 1024
    assert ServerSettings().trusted_hosts() == sorted({"127.0.0.1", "localhost", "::1"})
    assert ServerSettings(host="0.0.0.0").trusted_hosts() == ["*"]
    for bad in ({"port": 70000}, {"max_upload_bytes": 10}, {"default_k": 0}, {"text_batch": 0}):
        with pytest.raises(ValueError):
            ServerSettings(**bad)
    assert json.dumps(ServerSettings().cors_origins) == "[]"


def test_where_is_checked_by_a_sql_parser(client):
    refused = {
        "duration IN (SELECT duration FROM audio)": "subqueries are not allowed",
        "lower(caption) = 'a frog.'": "function lower() is not allowed",
        "no_such_column > 1": "no_such_column",
        "duration > 1; DROP TABLE audio": "one expression",
    }
    for where, why in refused.items():
        body = assert_json_error(client.get("/api/search", params={"q": "x", "where": where}), 400)
        assert why in body["message"], (where, body)
    unknown = assert_json_error(client.get("/api/search", params={"q": "x", "where": "loudness > 1"}), 400)
    assert "columns:" in unknown["message"] and "caption" in unknown["message"]
    # the filter applies to the tables having its columns; the others are named
    body = client.get("/api/search", params={"q": "bird", "where": "duration > 1", "k": 50}).json()
    assert body["results"] and {h["modality"] for h in body["results"]} == {"audio"}
    assert body["skipped"] == {"image": ["duration"]}


def test_results_per_file_and_per_window(client):
    files = client.get("/api/search", params={"q": "frog", "target": "audio", "k": 50}).json()["results"]
    assert len({h["path"] for h in files}) == len(files)  # one hit per file
    assert any(h["windows"] for h in files)  # some sounds have more than one window
    for h in files:
        assert h["paths"][0] == h["path"] and all(w["score"] <= h["score"] for w in h["windows"])
    windows = client.get("/api/search", params={"q": "frog", "target": "audio", "k": 50,
                                                "per_window": "true"}).json()
    assert windows["query"]["per_window"] is True
    assert len(windows["results"]) == sum(1 + len(h["windows"]) for h in files) > len(files)


def test_search_responses_encode_non_finite_numbers_as_null():
    from audioclip_search.server.routes import ApiJSONResponse

    body = json.loads(ApiJSONResponse({"score": 0.5, "hits": [{"start": float("nan"), "end": float("inf")}],
                                       "pair": (1.0, float("-inf"))}).body)
    assert body == {"score": 0.5, "hits": [{"start": None, "end": None}], "pair": [1.0, None]}


def test_the_model_runs_on_model_threads_threads(built):
    import torch

    index, _ = built
    seen: list[int] = []
    for threads in (1, 2):
        app = create_app(index, ServerSettings(warm_up=False, model_threads=threads))
        encoder = app.state.service.encoder
        real = encoder.encode_texts

        def spy(texts, *args, real=real, **kwargs):
            seen.append(torch.get_num_threads())
            return real(texts, *args, **kwargs)

        encoder.encode_texts = spy  # instance attribute shadows the method
        try:
            with TestClient(app, base_url=BASE) as c:
                assert c.get("/api/search", params={"q": "frog", "k": 2}).status_code == 200
        finally:
            del encoder.encode_texts
    assert seen == [1, 2]
    with pytest.raises(ValueError):
        ServerSettings(model_threads=0)
