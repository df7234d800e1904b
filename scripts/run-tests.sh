#!/usr/bin/env bash
# The test command: sets itself up (scripts/bootstrap.sh), lints, then runs the whole suite.
# Offline, deterministic, CPU-only; GPU tests skip themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test,serve,eval
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
