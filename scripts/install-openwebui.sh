#!/usr/bin/env bash
# Install (or reuse) Open WebUI, pinned, in a venv of its own for the live Open WebUI test; prints its path.
# It lives in the machine's ragsvc cache, like the llama-server build, so a fresh clone (CI) reuses it: the first
# install takes about 1.5-3.5 minutes. Its dependencies never meet ragsvc's.
set -euo pipefail
VERSION="${OPEN_WEBUI_VERSION:-0.12.4}"
CACHE="${RAGSVC_CACHE_DIR:-$HOME/.cache/ragsvc}"
VENV="$CACHE/open-webui-$VERSION"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

mkdir -p "$CACHE"
exec 9>"$CACHE/open-webui.lock"
flock 9
if [ ! -f "$VENV/.installed" ]; then
  echo "install-openwebui: installing open-webui $VERSION into $VENV (once per machine)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2; }
  # The CPU build of torch first (it lies on disk), so that open-webui's sentence-transformers never pulls CUDA.
  pip_install "torch==2.13.0"
  pip_install "open-webui==$VERSION"
  touch "$VENV/.installed"
fi
echo "$VENV"
