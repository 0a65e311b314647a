#!/usr/bin/env bash
# Install (or reuse) everything, lint, and run the test suite against the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Redis job backend is tested against a real redis-server (Debian's package), started on a free port; the
# live Open WebUI test drives Debian's chromium (playwright launches it by path: no browser is downloaded).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
scripts/bootstrap.sh
# Open WebUI for its live test, pinned, in its own venv in the machine's cache (installed once per machine).
scripts/install-openwebui.sh >/dev/null
.venv/bin/ruff check ragsvc ingest indexes eval tests bench
.venv/bin/python -m pytest "$@"
