#!/usr/bin/env bash
# Install (or reuse) everything, lint, and run the test suite against the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Redis job backend is tested against a real redis-server (Debian's package), started on a free port.
if ! command -v redis-server >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update && $sudo apt-get install -y --no-install-recommends redis-server
fi
scripts/bootstrap.sh
.venv/bin/ruff check ragsvc ingest indexes eval tests bench
.venv/bin/python -m pytest "$@"
