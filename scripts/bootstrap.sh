#!/usr/bin/env bash
# Set up everything audioclip-search needs on a fresh machine: a virtual environment (.venv) holding
# exactly the locked, hash-checked set of requirements.lock (installed by uv, pinned below), plus
# this package in editable mode. Decoding needs no system program (PyAV carries FFmpeg's libraries).
# Idempotent: a second run only checks. Usage: scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION="0.13.9"

python=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "bootstrap: Python >= 3.11 is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
if ! .venv/bin/uv --version 2>/dev/null | grep -q "^uv $UV_VERSION"; then
  echo "bootstrap: installing uv $UV_VERSION into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
stamp=".venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing the locked requirements (first run downloads PyTorch: a few minutes)"
  # --compile-bytecode: every later process (each CLI call, each test subprocess) starts from .pyc
  # files instead of compiling PyTorch's and LanceDB's sources again, which matters most where
  # PYTHONDONTWRITEBYTECODE is set: about 2 s instead of 10-30 s per process on a 2-core machine.
  .venv/bin/uv pip sync --quiet --python .venv/bin/python --require-hashes --compile-bytecode requirements.lock
  .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# Our own sources change between runs: keep their bytecode current too (a no-op when it is).
.venv/bin/python -m compileall -q audioclip_search >/dev/null
