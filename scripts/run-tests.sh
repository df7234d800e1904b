#!/usr/bin/env bash
# The test command: sets itself up (scripts/bootstrap.sh), lints, checks that every compiled
# dependency loads, then runs the whole suite. Offline, deterministic, CPU-only; GPU tests skip
# themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# Tests make some of their input files with Debian's ffmpeg and sox (the product itself needs
# neither), and the web page's browser test drives Debian's chromium (it skips itself without it).
need_apt=()
for tool in ffmpeg sox chromium; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
  echo "run-tests: installing Debian packages for test files and the browser test (missing: ${need_apt[*]})"
  { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq \
      ffmpeg sox libsox-fmt-mp3 chromium >/dev/null; } \
    || echo "run-tests: could not install ${need_apt[*]}; the tests that need them will skip with the reason" >&2
fi
.venv/bin/ruff check .
# A broken wheel shows here as one clear failure, not as dozens of unrelated ones.
.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_000_native_libraries.py \
  || { echo "run-tests: a compiled dependency does not load (see above); not running the suite" >&2; exit 1; }
# One pytest-xdist worker per core (TEST_WORKERS overrides; 0 runs in this process). A test file stays
# on one worker, so its module fixtures (a local Ray, an S3 server, a built index) are made once.
workers="${TEST_WORKERS:-$(nproc)}"
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile --deselect tests/test_000_native_libraries.py "$@"
