#!/usr/bin/env bash
# The main job on a fresh machine: set up, index a folder into the embedded database
# (./acsearch.lancedb, or $ACSEARCH_DB), then search it with words.
#   scripts/run-main.sh FOLDER "QUERY" [extra acsearch query options, e.g. --target audio -k 5]
# The default checkpoint (audioclip-full) downloads on first use; set ACSEARCH_MODEL=/path/file.pt to
# use a local copy, and ACSEARCH_OFFLINE=1 to forbid the download.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 2 ]; then
  echo "usage: scripts/run-main.sh FOLDER \"QUERY\" [acsearch query options]" >&2
  exit 2
fi
folder="$1"; query="$2"; shift 2
"$repo/scripts/bootstrap.sh" serve,eval
status=0
"$repo/.venv/bin/acsearch" index "$folder" || status=$?
if [ "$status" -gt 1 ]; then exit "$status"; fi   # 1 = some files were skipped: still search
"$repo/.venv/bin/acsearch" query --text "$query" "$@"
