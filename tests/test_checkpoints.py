"""Checkpoint registry, download cache and loading: offline, against a local HTTP server only."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from audioclip_search.checkpoints import (
    DEFAULT_CHECKPOINT,
    REGISTRY,
    CheckpointEntry,
    cache_dir,
    cached_path,
    check_keys,
    checkpoint_sha256,
    download_checkpoint,
    get_entry,
    list_checkpoints,
    load_audio_head,
    load_model,
    load_state_dict_file,
    registered,
    resolve_checkpoint,
    verify_checkpoint,
)
from audioclip_search.checkpoints import download as download_mod
from audioclip_search.errors import CheckpointError
from audioclip_search.model import AudioCLIP

PAYLOAD_SIZE = 3 * 1024 * 1024 + 12345
PAYLOAD = random.Random(1234).randbytes(PAYLOAD_SIZE)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# --------------------------------------------------------------------------------------------
# a local file server that understands Range and can be told to drop the connection


class FileServer:
    """Serves `files` over HTTP/1.1 on 127.0.0.1; records every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.bytes_sent = 0
        self.cut_after: list[int | None] = []  # per request, in order: drop after N body bytes
        self.ignore_range = False
        self.gate: threading.Event | None = None  # when set up, a body is sent only once it is set
        self.requested = threading.Event()  # a request has arrived
        self.lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = urllib.parse.unquote(self.path.lstrip("/"))
                range_header = self.headers.get("Range")
                with state.lock:
                    state.requests.append({"path": name, "range": range_header})
                    cut = state.cut_after.pop(0) if state.cut_after else None
                state.requested.set()
                if state.gate is not None:
                    state.gate.wait(60)
                data = state.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if range_header and not state.ignore_range:
                    match = re.fullmatch(r"bytes=(\d+)-", range_header)
                    assert match, range_header
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = memoryview(data)[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                limit = len(body) if cut is None else min(cut, len(body))
                pos = 0
                try:
                    while pos < limit:
                        chunk = body[pos:min(pos + 65536, limit)]
                        self.wfile.write(chunk)
                        pos += len(chunk)
                        with state.lock:
                            state.bytes_sent += len(chunk)
                except OSError:
                    pass
                if cut is not None:
                    self.close_connection = True  # the client sees EOF before Content-Length

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _local_network_only(monkeypatch):
    """Any urlopen call that is not to 127.0.0.1 fails the test; no stray env settings leak in."""
    real = urllib.request.urlopen

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else str(request)
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"test tried to reach the network: {url}"
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.delenv("ACSEARCH_OFFLINE", raising=False)
    monkeypatch.setattr(download_mod.time, "sleep", lambda s: None)  # no retry back-off waits


@pytest.fixture
def server():
    srv = FileServer()
    srv.files["blob.bin"] = PAYLOAD
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ACSEARCH_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def entry(server, cache):
    e = CheckpointEntry(name="test-blob", filename="blob.bin", url=server.url("blob.bin"),
                        size=PAYLOAD_SIZE, sha256=PAYLOAD_SHA, arch="audioclip-tiny", kind="full",
                        description="random bytes for tests")
    with registered(e):
        yield e


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _assert_put_message(message: str, entry: CheckpointEntry, dest: Path) -> None:
    assert entry.filename in message
    assert entry.sha256 in message
    assert entry.url in message
    assert str(dest.absolute()) in message
    assert "put " in message
    assert "\n" not in message


# --------------------------------------------------------------------------------------------
# registry and cache location


def test_builtin_registry_entries():
    names = [e.name for e in list_checkpoints()]
    assert names[:3] == ["audioclip-full", "audioclip-partial", "esresnext-audioset"]
    assert DEFAULT_CHECKPOINT == "audioclip-full"
    full = get_entry("audioclip-full")
    assert full.filename == "AudioCLIP-Full-Training.pt"
    assert full.url.startswith("https:")
    assert full.url.endswith("github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/AudioCLIP-Full-Training.pt")
    assert full.size == 537302068
    assert full.sha256 == "2441d35b353352c8b1bbfb8f7c687f46314c3d2909e940eaf763b8c17f632c44"
    assert (full.arch, full.kind) == ("audioclip-rn50", "full")
    partial = get_entry("audioclip-partial")
    assert partial.url.endswith("/v0.1/AudioCLIP-Partial-Training.pt")
    assert partial.sha256 == "1921885b6c3b5de0619f2ef4a9700ecbade758a398b34eb064230c30baef0c75"
    assert partial.kind == "full"
    head = get_entry("esresnext-audioset")
    assert (head.filename, head.size, head.kind) == ("ESRNXFBSP.pt", 124795647, "audio-head")
    assert head.sha256 == "acfcc6b0a0f07025cc660ed6dcf9b5a05fbd7c8ebf65edaa0a81d88a92ff6834"
    with pytest.raises(CheckpointError, match="known names: audioclip-full"):
        get_entry("no-such-model")


def test_registered_context_restores_registry():
    e = CheckpointEntry("tmp-entry", "x.pt", "http://127.0.0.1:1/x.pt", 1, "0" * 64, "audioclip-tiny", "full")
    with registered(e):
        assert get_entry("tmp-entry") is e
    assert "tmp-entry" not in REGISTRY
    with pytest.raises(ValueError, match="kind"):
        CheckpointEntry("bad", "x.pt", "u", 1, "0" * 64, "a", "weird")


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ACSEARCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "audioclip-search"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "audioclip-search"
    monkeypatch.setenv("ACSEARCH_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert cached_path(get_entry("audioclip-full")) == tmp_path / "mine" / "AudioCLIP-Full-Training.pt"
    assert not (tmp_path / "mine").exists()  # computing a path creates nothing


def test_import_has_no_side_effects(tmp_path):
    code = ("import sys, audioclip_search.checkpoints as c; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(c.cache_dir())")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": "", "ACSEARCH_CACHE_DIR": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# download


def test_download_verifies_and_renames_atomically(entry, server, cache, monkeypatch):
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(download_mod.os, "replace", spy)
    path = download_checkpoint("test-blob", progress=False)
    assert path == (cache / "blob.bin").absolute()
    assert path.read_bytes() == PAYLOAD
    assert ("blob.bin.part", "blob.bin") in replaced
    assert not (cache / "blob.bin.part").exists()
    marker = json.loads((cache / "blob.bin.sha256").read_text())
    assert marker["sha256"] == PAYLOAD_SHA and marker["size"] == PAYLOAD_SIZE
    assert server.requests == [{"path": "blob.bin", "range": None}]
    # a second call finds it cached and does not ask the server again
    assert download_checkpoint(entry, progress=False) == path
    assert len(server.requests) == 1


def test_download_with_progress_bar(entry, capsys):
    path = download_checkpoint(entry, progress=True)
    assert path.read_bytes() == PAYLOAD


def test_bad_checksum_leaves_nothing(server, cache):
    bad = CheckpointEntry("bad-blob", "blob.bin", server.url("blob.bin"), PAYLOAD_SIZE, "ab" * 32,
                          "audioclip-tiny", "full")
    with pytest.raises(CheckpointError) as info:
        download_checkpoint(bad, progress=False)
    message = str(info.value)
    assert "checksum mismatch" in message
    assert "ab" * 32 in message and PAYLOAD_SHA in message
    assert not (cache / "blob.bin").exists()
    assert not (cache / "blob.bin.part").exists()


def test_interrupted_download_resumes_with_range(entry, server, cache):
    cut = 1_000_000
    server.cut_after = [cut]
    with pytest.raises(CheckpointError) as info:
        download_checkpoint(entry, progress=False, retries=0)
    _assert_put_message(str(info.value), entry, cache / "blob.bin")
    part = cache / "blob.bin.part"
    assert part.stat().st_size == cut
    assert not (cache / "blob.bin").exists()

    path = download_checkpoint(entry, progress=False, retries=0)
    assert path.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None, f"bytes={cut}-"]
    assert server.bytes_sent == PAYLOAD_SIZE < 2 * PAYLOAD_SIZE
    assert not part.exists()


def test_connection_reset_mid_stream_is_retried(entry, server, cache):
    server.cut_after = [500_000, 700_000]
    path = download_checkpoint(entry, progress=False, retries=2)
    assert path.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None, "bytes=500000-", "bytes=1200000-"]
    assert server.bytes_sent == PAYLOAD_SIZE


def test_server_ignoring_range_restarts_from_zero(entry, server, cache):
    cache.mkdir(parents=True)
    (cache / "blob.bin.part").write_bytes(b"\x00" * 200_000)  # garbage that must not survive
    server.ignore_range = True
    path = download_checkpoint(entry, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] == "bytes=200000-"
    assert len(server.requests) == 1


def test_complete_part_file_is_only_verified(entry, server, cache):
    cache.mkdir(parents=True)
    (cache / "blob.bin.part").write_bytes(PAYLOAD)
    path = download_checkpoint(entry, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == []


def test_server_down_says_which_file_to_put_where(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = CheckpointEntry("dead", "dead.pt", f"http://127.0.0.1:{port}/dead.pt", 10, "cd" * 32,
                           "audioclip-tiny", "full")
    with pytest.raises(CheckpointError) as info:
        download_checkpoint(dead, progress=False, retries=1, timeout=5)
    _assert_put_message(str(info.value), dead, cache / "dead.pt")
    assert "failed" in str(info.value)


def test_http_404_is_a_clear_error(server, cache):
    missing = CheckpointEntry("gone", "gone.pt", server.url("gone.pt"), 10, "cd" * 32, "audioclip-tiny", "full")
    with pytest.raises(CheckpointError, match="HTTP 404"):
        download_checkpoint(missing, progress=False)
    assert len(server.requests) == 1  # a 404 is not retried


def test_local_disk_problems_are_checkpoint_errors(entry, cache, monkeypatch):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file where the cache folder should be")
    with pytest.raises(CheckpointError, match="cannot create the checkpoint cache folder"):
        download_checkpoint(entry, progress=False)
    cache.unlink()

    class Usage:
        free = 1000

    monkeypatch.setattr(download_mod.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(CheckpointError, match="not enough disk space"):
        download_checkpoint(entry, progress=False)


def test_offline_mode_never_touches_the_network(entry, cache, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setenv("ACSEARCH_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint("test-blob")
    _assert_put_message(str(info.value), entry, cache / "blob.bin")
    assert "offline" in str(info.value)
    monkeypatch.delenv("ACSEARCH_OFFLINE")
    with pytest.raises(CheckpointError) as info:
        download_checkpoint("test-blob", offline=True)
    _assert_put_message(str(info.value), entry, cache / "blob.bin")
    assert not cache.exists()


def test_cached_file_with_marker_needs_no_network_and_no_hashing(entry, cache, monkeypatch):
    path = download_checkpoint(entry, progress=False)
    _no_network(monkeypatch)

    def no_hashing(*args, **kwargs):
        raise AssertionError("re-hashed a file whose marker is valid")

    monkeypatch.setattr(download_mod, "_hash_file", no_hashing)
    monkeypatch.setenv("ACSEARCH_OFFLINE", "1")
    assert resolve_checkpoint("test-blob") == path
    assert resolve_checkpoint("test-blob", offline=False) == path
    assert checkpoint_sha256(path) == PAYLOAD_SHA


def test_hand_placed_file_is_hashed_once(entry, cache, monkeypatch):
    _no_network(monkeypatch)
    cache.mkdir(parents=True)
    (cache / "blob.bin").write_bytes(PAYLOAD)
    assert resolve_checkpoint("test-blob", offline=True) == cache / "blob.bin"
    assert json.loads((cache / "blob.bin.sha256").read_text())["sha256"] == PAYLOAD_SHA
    # a file of the right size but other content is caught on that first load
    (cache / "blob.bin.sha256").unlink()
    (cache / "blob.bin").write_bytes(bytes(PAYLOAD_SIZE))
    with pytest.raises(CheckpointError, match="expected " + PAYLOAD_SHA):
        resolve_checkpoint("test-blob", offline=True)


def test_wrong_size_cached_file_is_reported_then_replaced_by_download(entry, cache):
    cache.mkdir(parents=True)
    (cache / "blob.bin").write_bytes(b"short")
    with pytest.raises(CheckpointError, match=r"has 5 bytes, expected \d+"):
        resolve_checkpoint("test-blob")
    assert download_checkpoint("test-blob", progress=False).read_bytes() == PAYLOAD


def test_two_concurrent_downloads_fetch_once(entry, server, cache, monkeypatch):
    import fcntl

    server.gate = threading.Event()  # the first download stays mid-transfer, holding the lock
    contended = threading.Event()
    real_flock = fcntl.flock

    def flock(fd, operation):
        try:
            return real_flock(fd, operation)
        except BlockingIOError:
            contended.set()  # the non-blocking try found the lock taken: the caller now waits for it
            raise

    monkeypatch.setattr(fcntl, "flock", flock)
    results, errors = [], []

    def run():
        try:
            results.append(download_checkpoint(entry, progress=False))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    threads[0].start()
    assert server.requested.wait(60), "the first download never reached the server"
    threads[1].start()
    assert contended.wait(60), "the second download did not wait for the first one's lock"
    server.gate.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == 2 and results[0] == results[1]
    assert len(server.requests) == 1
    assert results[0].read_bytes() == PAYLOAD


def test_verify_checkpoint(entry, cache):
    path = download_checkpoint(entry, progress=False)
    result = verify_checkpoint("test-blob")
    assert result.ok and result.sha256 == PAYLOAD_SHA and result.entry == entry
    by_path = verify_checkpoint(str(path))  # a path is matched to the entry by file name
    assert by_path.ok and by_path.entry == entry
    damaged = bytearray(PAYLOAD)
    damaged[12345] ^= 0xFF
    path.write_bytes(bytes(damaged))
    result = verify_checkpoint("test-blob")
    assert result.ok is False and result.expected_sha256 == PAYLOAD_SHA
    assert not (cache / "blob.bin.sha256").exists()
    other = cache / "other.dat"
    other.write_bytes(b"hello")
    unknown = verify_checkpoint(other)
    assert unknown.ok is None and unknown.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert verify_checkpoint(other, expected_sha256=hashlib.sha256(b"hello").hexdigest()).ok


def test_verify_missing_cached_file(entry, cache):
    with pytest.raises(CheckpointError, match="not downloaded"):
        verify_checkpoint("test-blob")


def test_resolve_local_paths(tmp_path):
    f = tmp_path / "mine.pt"
    f.write_bytes(b"x")
    assert resolve_checkpoint(str(f)) == f
    assert resolve_checkpoint(f) == f
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(str(tmp_path / "absent.pt"))
    with pytest.raises(CheckpointError, match="folder"):
        resolve_checkpoint(tmp_path)


# --------------------------------------------------------------------------------------------
# loading


def _inputs():
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(1, 1, 11025, generator=g) * 3000
    image = torch.randn(1, 3, 224, 224, generator=g)
    text = torch.randint(1, 49000, (1, 77), generator=g)
    text[:, 10] = 49407
    return audio, image, text


def _outputs(model):
    audio, image, text = _inputs()
    with torch.no_grad():
        return model.encode_audio(audio), model.encode_image(image), model.encode_text(text)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(7)
    return AudioCLIP("audioclip-tiny").eval()


@pytest.fixture(scope="module")
def tiny_outputs(tiny):
    return _outputs(tiny)


def _assert_same(model, expected):
    for got, want in zip(_outputs(model), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _assert_same_weights(model, reference):
    """Equal tensors under equal names: the same function (cheaper than a forward pass)."""
    got, want = model.state_dict(), reference.state_dict()
    assert list(got) == list(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_load_model_from_path_matches_original(tiny, tiny_outputs, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    model = load_model(path, arch="audioclip-tiny", device="cpu")
    assert not model.training
    assert model.config.name == "audioclip-tiny"
    assert model.device.type == "cpu"
    _assert_same(model, tiny_outputs)


def test_load_model_from_wrapped_checkpoints(tiny, tmp_path):
    sd = tiny.state_dict()
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"arch": "audioclip-tiny", "state_dict": sd, "epoch": 3}, wrapped)
    _assert_same_weights(load_model(str(wrapped), device="cpu"), tiny)

    with_config = tmp_path / "with_config.pt"
    torch.save({"config": tiny.config.to_dict(), "model": {f"module.{k}": v for k, v in sd.items()}},
               with_config)
    model = load_model(with_config, device="cpu")
    assert model.config == tiny.config
    assert not model.training
    _assert_same_weights(model, tiny)
    assert list(load_state_dict_file(with_config)) == list(sd)


def test_load_model_through_registry_downloads(tiny, tmp_path, server, cache):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    data = path.read_bytes()
    server.files["tiny.pt"] = data
    e = CheckpointEntry("test-tiny", "tiny.pt", server.url("tiny.pt"), len(data),
                        hashlib.sha256(data).hexdigest(), "audioclip-tiny", "full")
    with registered(e):
        model = load_model("test-tiny", device="cpu", progress=False)
    _assert_same_weights(model, tiny)
    assert (cache / "tiny.pt").is_file()


def test_key_report_is_readable(tiny):
    sd = dict(tiny.state_dict())
    removed = list(sd)[:13]
    for k in removed:
        del sd[k]
    sd["extra.weight"] = torch.zeros(1)
    sd["token_embedding.weight"] = torch.zeros(10, 64)
    with pytest.raises(CheckpointError) as info:
        check_keys(tiny, sd, source="ckpt.pt")
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("ckpt.pt: checkpoint does not fit the audioclip-tiny model")
    assert "13 missing keys, 1 unexpected key, 1 shape mismatch" in first
    for k in removed[:10]:
        assert k in message
    assert removed[12] not in message and "... and 3 more" in message
    assert "extra.weight" in message
    assert "token_embedding.weight: model expects (49408, 64), checkpoint has (10, 64)" in message
    check_keys(tiny, tiny.state_dict())  # a matching state dict passes


def test_wrong_arch_hint(tiny, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    wider = dataclasses.replace(tiny.config, name="tiny-wider", vision_width=32)
    with pytest.raises(CheckpointError) as info:
        load_model(path, arch=wider, device="cpu")
    message = str(info.value)
    assert "does not fit the tiny-wider model" in message and "shape mismatches" in message
    assert "arch='audioclip-tiny'" in message


def test_architecture_precedence(tmp_path):
    from audioclip_search.checkpoints.loading import CheckpointFile, _config_from

    bare = CheckpointFile(path=tmp_path / "x.pt", state_dict={})
    assert _config_from(None, bare, None).name == "audioclip-rn50"  # the default for plain files
    assert _config_from(None, bare, get_entry("audioclip-full")).name == "audioclip-rn50"
    named = CheckpointFile(path=tmp_path / "x.pt", state_dict={}, arch="audioclip-tiny")
    assert _config_from(None, named, None).name == "audioclip-tiny"
    assert _config_from("audioclip-rn50", named, None).name == "audioclip-rn50"  # the argument wins
    unknown = CheckpointFile(path=tmp_path / "x.pt", state_dict={}, arch="no-such-arch")
    with pytest.raises(CheckpointError, match="unknown model architecture"):
        _config_from(None, unknown, None)


def test_corrupt_files_are_checkpoint_errors(tmp_path, tiny):
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a PyTorch checkpoint"):
        load_state_dict_file(text)
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(CheckpointError, match="empty"):
        load_model(empty, device="cpu")
    good = tmp_path / "good.pt"
    torch.save(tiny.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: the file is corrupt or truncated"):
        load_model(truncated, arch="audioclip-tiny", device="cpu")
    not_dict = tmp_path / "list.pt"
    torch.save([torch.ones(1)], not_dict)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict_file(not_dict)
    no_state = tmp_path / "nostate.pt"
    torch.save({"epoch": 1, "lr": 0.1}, no_state)
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_state_dict_file(no_state)


class Payload:
    """Stands in for anything a malicious pickle could smuggle in."""


def test_weights_only_is_always_used(tmp_path, monkeypatch, tiny):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": {"a": torch.ones(1)}, "payload": Payload()}, unsafe)
    with pytest.raises(CheckpointError, match="arbitrary Python objects"):
        load_state_dict_file(unsafe)

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    good = tmp_path / "good.pt"
    torch.save(tiny.state_dict(), good)
    load_model(good, arch="audioclip-tiny", device="cpu")
    load_state_dict_file(good)
    assert calls and all(c.get("weights_only") is True and c.get("map_location") == "cpu" for c in calls)


def test_audio_head_checkpoints(tiny, tmp_path, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(CheckpointError, match=r"load_audio_head\(model, 'esresnext-audioset'\)"):
        load_model("esresnext-audioset", device="cpu")

    head = {k: v.clone() for k, v in tiny.audio.state_dict().items()}
    head["fc.weight"] = torch.randn(527, head["fc.weight"].shape[1])
    head["fc.bias"] = torch.randn(527)
    path = tmp_path / "head.pt"
    torch.save(head, path)
    with pytest.raises(CheckpointError, match="load_audio_head"):
        load_model(path, device="cpu")

    torch.manual_seed(99)
    model = AudioCLIP("audioclip-tiny").eval()
    fc_before = model.audio.fc.weight.clone()
    report = load_audio_head(model, path)
    assert [k for k, _, _ in report.skipped] == ["fc.weight", "fc.bias"]
    assert report.skipped[0][1:] == ((1024, head["fc.weight"].shape[1]), (527, head["fc.weight"].shape[1]))
    assert report.loaded == len(head) - 2
    assert "fc.weight" in str(report) and "527" in str(report)
    torch.testing.assert_close(model.audio.fc.weight, fc_before)
    for k, v in tiny.audio.state_dict().items():
        if not k.startswith("fc."):
            torch.testing.assert_close(model.audio.state_dict()[k], v)

    # a full AudioCLIP checkpoint: its audio.* tensors are used, fc included (same shape)
    full = tmp_path / "full.pt"
    torch.save(tiny.state_dict(), full)
    report = load_audio_head(AudioCLIP("audioclip-tiny"), full)
    assert report.skipped == [] and report.ignored > 0

    # anything else that does not fit is an error, not a silent partial load
    bad = dict(head)
    bad["layer1.0.conv1.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="layer1.0.conv1.weight: model expects"):
        load_audio_head(model, tmp_path / "bad.pt")
