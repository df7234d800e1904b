"""`acsearch weights ...` through typer's CliRunner, against a local HTTP server and a test cache."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audioclip_search.checkpoints import CheckpointEntry, registered
from audioclip_search.checkpoints import download as download_mod
from audioclip_search.cli.app import _register, app

PAYLOAD = random.Random(99).randbytes(2 * 1024 * 1024 + 777)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _cli_app():
    if not any(group.name == "weights" for group in app.registered_groups):
        _register()
    return app


@pytest.fixture(autouse=True)
def _local_network_only(monkeypatch):
    real = urllib.request.urlopen

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else str(request)
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", f"test tried to reach the network: {url}"
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setattr(download_mod.time, "sleep", lambda s: None)
    monkeypatch.delenv("ACSEARCH_OFFLINE", raising=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files: dict[str, bytes] = {}
    requests: list[str | None] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        data = self.files.get(self.path.lstrip("/"))
        self.requests.append(self.headers.get("Range"))
        if data is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        if match:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"files": {"blob.bin": PAYLOAD}, "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.handler = handler
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ACSEARCH_CACHE_DIR", str(cache))
    return {"ACSEARCH_CACHE_DIR": str(cache), "COLUMNS": "400"}


@pytest.fixture
def entry(server):
    e = CheckpointEntry("cli-blob", "blob.bin", f"{server.url}/blob.bin", len(PAYLOAD), PAYLOAD_SHA,
                        "audioclip-tiny", "full", "test payload")
    with registered(e):
        yield e


def invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(_cli_app(), ["weights", *args], env=env)


def test_help_lists_the_commands(env):
    result = invoke(["--help"], env)
    assert result.exit_code == 0
    for command in ("list", "download", "verify", "path"):
        assert command in result.stdout


def test_path_prints_the_cache_location(env, tmp_path):
    result = invoke(["path", "audioclip-full"], env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "cache" / "AudioCLIP-Full-Training.pt")
    other = tmp_path / "elsewhere"
    result = invoke(["path", "esresnext-audioset", "--cache-dir", str(other)], env)
    assert result.stdout.strip() == str(other / "ESRNXFBSP.pt")
    assert not other.exists()


def test_list_shows_registry_and_cache_state(env, entry, tmp_path):
    result = invoke(["list"], env)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for name in ("audioclip-full", "audioclip-partial", "esresnext-audioset", "cli-blob"):
        assert name in out
    assert "537.3 MB" in out and "audio-head" in out and "audioclip-rn50" in out
    row = next(line for line in out.splitlines() if "cli-blob" in line)
    assert re.search(r"\bno\b", row)
    assert str(tmp_path / "cache" / "blob.bin") in row
    assert invoke(["download", "cli-blob", "--quiet"], env).exit_code == 0
    row = next(line for line in invoke(["list"], env).stdout.splitlines() if "cli-blob" in line)
    assert re.search(r"\byes\b", row)


def test_download_then_verify(env, entry, server, tmp_path):
    result = invoke(["download", "cli-blob", "-q"], env)
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == tmp_path / "cache" / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name("blob.bin.part").exists()

    result = invoke(["verify", "cli-blob"], env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("OK") and PAYLOAD_SHA in result.stdout

    result = invoke(["verify", str(path)], env)  # a path works too
    assert result.exit_code == 0 and "cli-blob" in result.stdout

    # a second download is a no-op (no new request)
    before = len(server.handler.requests)
    assert invoke(["download", "cli-blob", "-q"], env).exit_code == 0
    assert len(server.handler.requests) == before

    damaged = bytearray(PAYLOAD)
    damaged[-1] ^= 0x01
    path.write_bytes(bytes(damaged))
    result = invoke(["verify", "cli-blob"], env)
    assert result.exit_code == 1
    assert "expected sha256 " + PAYLOAD_SHA in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_download_with_explicit_cache_dir(env, entry, tmp_path):
    target = tmp_path / "explicit"
    result = invoke(["download", "cli-blob", "--quiet", "--cache-dir", str(target)], env)
    assert result.exit_code == 0, result.stderr
    assert (target / "blob.bin").read_bytes() == PAYLOAD
    assert not (tmp_path / "cache").exists()


def test_verify_an_unregistered_file(env, tmp_path):
    f = tmp_path / "mine.bin"
    f.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    result = invoke(["verify", str(f)], env)
    assert result.exit_code == 0 and digest in result.stdout
    assert invoke(["verify", str(f), "--sha256", digest], env).exit_code == 0
    assert invoke(["verify", str(f), "--sha256", "0" * 64], env).exit_code == 1


def test_errors_are_one_line_and_exit_1(env, entry, tmp_path, monkeypatch):
    result = invoke(["path", "nope"], env)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown checkpoint 'nope'")
    assert len(result.stderr.strip().splitlines()) == 1

    result = invoke(["verify", "cli-blob"], env)  # not downloaded yet
    assert result.exit_code == 1 and "not downloaded" in result.stderr

    result = invoke(["download", "cli-blob", "-q"], {**env, "ACSEARCH_OFFLINE": "1"})
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "offline" in line and PAYLOAD_SHA in line and entry.url in line
    assert str(tmp_path / "cache" / "blob.bin") in line


def test_server_down_is_one_line(env, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = CheckpointEntry("cli-dead", "dead.pt", f"http://127.0.0.1:{port}/dead.pt", 10, "ab" * 32,
                           "audioclip-tiny", "full")
    with registered(dead):
        result = invoke(["download", "cli-dead", "-q", "--timeout", "5"], env)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.output
    assert f"put dead.pt (10 bytes, sha256 {'ab' * 32}) at {tmp_path / 'cache' / 'dead.pt'}" in line


def test_usage_errors_exit_2(env):
    assert invoke(["download"], env).exit_code == 2
    assert invoke(["verify"], env).exit_code == 2
    assert invoke(["path"], env).exit_code == 2
