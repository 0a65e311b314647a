#!/usr/bin/env bash
# The main job: install, start the local LLM, ingest the sample docs, serve the doc Assistant.
# Ctrl-C stops both servers. Settings come from RAGSVC_* variables or .env (see docs/reference/configuration.rst).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export RAGSVC_DATA_DIR="${RAGSVC_DATA_DIR:-$PWD/data}"
LLM_PORT="${RAGSVC_LOCAL_LLM_PORT:-8081}"
RAGSVC=.venv/bin/ragsvc

llm_pid=""
cleanup() { [ -n "$llm_pid" ] && kill "$llm_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if ! curl -fs "http://127.0.0.1:$LLM_PORT/health" >/dev/null 2>&1; then
  "$RAGSVC" llm serve --port "$LLM_PORT" &
  llm_pid=$!
  until curl -fs "http://127.0.0.1:$LLM_PORT/health" >/dev/null 2>&1; do
    kill -0 "$llm_pid" 2>/dev/null || { echo "llama-server failed to start" >&2; exit 1; }
    sleep 0.5
  done
fi

"$RAGSVC" ingest docs --collection ragsvc-docs
"$RAGSVC" serve
