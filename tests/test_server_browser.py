"""The web page in a real headless browser (Debian's chromium) against a real uvicorn server on loopback.

Chromium loads ``/?q=frog``: the page puts the words in the search box and runs the same search
function as the Search button, then renders the results. ``--dump-dom`` gives the rendered
DOM to check; ``--screenshot`` saves ``test-artifacts/server_search.png`` (gitignored) to look at.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from audioclip_search.server import ServerSettings, create_app  # noqa: E402

from .conftest import PROJECT_ROOT  # noqa: E402
from .test_server_api import build_server_index, ids_of  # noqa: E402

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                  "--window-size=1280,1000", "--virtual-time-budget=15000"]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, tiny_encoder):
    index, _ = build_server_index(tmp_path_factory, tiny_encoder)
    # The listening socket is ours, bound before the server starts: a request made before uvicorn
    # accepts waits in the socket's backlog, so nothing polls for the server to come up.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    app = create_app(index, ServerSettings(port=port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", index
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _raw_http(base: str, request_line: str) -> tuple[int, bytes]:
    parsed = urllib.parse.urlsplit(base)
    host, port = parsed.hostname, parsed.port
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("path", ["/api/media/audio/../../../../etc/passwd", "/api/media/audio/..%2f..%2fetc%2fpasswd",
                                  "/static/../../pyproject.toml", "/api/thumbnails/%2e%2e%2f%2e%2e%2fetc%2fpasswd"])
def test_real_server_refuses_raw_traversal(live_server, path):
    base, _ = live_server
    status, data = _raw_http(base, f"GET {path} HTTP/1.1")
    assert status in (400, 404)
    assert b"root:" not in data and b"[project]" not in data


def test_real_server_streams_ranges(live_server):
    base, index = live_server
    item = ids_of(index, "audio", "frog.ogg")[0]
    status, data = _raw_http(base, f"GET /api/media/audio/{item} HTTP/1.1\r\nRange: bytes=0-3")
    head, _, body = data.partition(b"\r\n\r\n")
    assert status == 206 and body == b"OggS"
    assert b"content-range: bytes 0-3/" in head.lower() and b"content-type: audio/ogg" in head.lower()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the browser test needs it")


def _run_chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish: {' '.join(cmd)}")


def test_page_searches_and_renders_results(live_server, tmp_path):
    binary = _chromium()
    base, index = live_server
    url = f"{base}/?q=frog&k=12"

    dom = _run_chromium(binary, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    cards = re.findall(r'<article class="card (audio|image|text)"', html)
    assert len(cards) == 12, html[-3000:]
    assert {"audio", "image"} <= set(cards)
    assert "12 results" in html and "“frog”" in html
    assert "A frog." in html and "Find similar" in html
    assert re.search(r'<audio [^>]*src="/api/media/audio/[0-9a-f]{40}#t=\d+\.\d\d', html)  # starts at the window
    assert re.search(r'<img [^>]*src="/api/thumbnails/[0-9a-f]{40}"', html)
    assert re.search(r'class="stat"><b>5</b> pictures', html)  # /api/info reached the header

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "server_search.png"
    shot.unlink(missing_ok=True)
    result = _run_chromium(binary, tmp_path, f"--screenshot={shot}", url)
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_page_find_similar_and_filters(live_server, tmp_path):
    binary = _chromium()
    base, index = live_server
    image_id = ids_of(index, "image", "firetruck.png")[0]
    similar = _run_chromium(binary, tmp_path, "--dump-dom", f"{base}/?similar=image:{image_id}&target=image&k=3")
    assert similar.returncode == 0, similar.stderr[-2000:]
    cards = re.findall(r'<article class="card (image)" data-id="([0-9a-f]+)"', similar.stdout)
    assert len(cards) == 3 and cards[0][1] == image_id
    assert "similar to A fire truck." in similar.stdout

    labelled = _run_chromium(binary, tmp_path, "--dump-dom", f"{base}/?q=bird&label=animals&k=48")
    kinds = re.findall(r'<article class="card (audio|image)"', labelled.stdout)
    captions = set(re.findall(r'<div class="caption"[^>]*>([^<]+)</div>', labelled.stdout))
    assert {"audio", "image"} == set(kinds) and captions == {"A frog.", "A blackbird.", "A crow."}
    assert "label: animals" in labelled.stdout
