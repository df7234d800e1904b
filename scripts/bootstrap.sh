#!/usr/bin/env bash
# Set up everything audioclip-search needs on a fresh machine: Debian tools (ffmpeg decodes
# MP3/M4A/AAC/Opus/WMA, sox makes test files) and a virtual environment with the package.
# Idempotent: a second run only checks. Usage: scripts/bootstrap.sh [EXTRAS]   (e.g. "test", "serve")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-serve,eval}"

need_apt=()
for tool in ffmpeg ffprobe sox; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
  echo "bootstrap: installing Debian packages ffmpeg sox (missing: ${need_apt[*]})"
  $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq ffmpeg sox libsox-fmt-mp3 >/dev/null \
    || echo "bootstrap: could not install ffmpeg/sox; MP3/M4A/AAC/Opus/WMA decoding will be unavailable" >&2
fi

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "bootstrap: Python >= 3.11 is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing audioclip-search[$extras] (first run downloads PyTorch: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
