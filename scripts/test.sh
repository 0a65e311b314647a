#!/usr/bin/env bash
# Install (or reuse) everything, lint, and run the test suite against the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check ragsvc ingest indexes eval tests bench
.venv/bin/python -m pytest "$@"
