"""The crash-point test hook: ``name``, ``name:N`` and ``name:once`` (one death across processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from audioclip_search import crashpoints

HIT_TWICE = "from audioclip_search.crashpoints import crash_point\ncrash_point('p')\ncrash_point('p')\nprint('passed')"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIT_TWICE], capture_output=True, text=True,
                          env={**os.environ, **env})  # fmt: skip


def test_a_point_kills_at_its_nth_hit():
    assert _run({"ACSEARCH_CRASH_AT": "p:2"}).returncode == -signal.SIGKILL
    assert _run({"ACSEARCH_CRASH_AT": "p:3"}).stdout.strip() == "passed"


def test_a_once_point_kills_only_the_process_that_creates_the_marker(tmp_path):
    env = {"ACSEARCH_CRASH_AT": "p:once", "ACSEARCH_CRASH_ONCE": str(tmp_path / "marker")}
    first = _run(env)
    assert first.returncode == -signal.SIGKILL and "crash point p (hit 1)" in first.stderr
    assert (tmp_path / "marker").exists()
    again = _run(env)  # a restarted worker reaching the same point: it goes on
    assert again.returncode == 0 and again.stdout.strip() == "passed"


def test_a_once_point_without_a_marker_file_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("ACSEARCH_CRASH_AT", "p:once")
    monkeypatch.delenv("ACSEARCH_CRASH_ONCE", raising=False)
    crashpoints.reset()
    try:
        with pytest.raises(ValueError, match="ACSEARCH_CRASH_ONCE"):
            crashpoints.crash_point("p")
    finally:
        monkeypatch.delenv("ACSEARCH_CRASH_AT")
        crashpoints.reset()
