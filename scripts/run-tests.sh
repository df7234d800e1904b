#!/usr/bin/env bash
# The test command: sets itself up (scripts/bootstrap.sh), lints, then runs the whole suite.
# Offline, deterministic, CPU-only; GPU tests skip themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test,serve,eval
# The web page's browser test drives Debian's chromium; it skips itself (with the reason) without it.
if ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "run-tests: chromium could not be installed; the browser test will be skipped" >&2
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
