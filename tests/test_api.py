"""The REST API on the sample docs: search, grounded answers from the real LLM, and JSON errors."""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragsvc.settings import Settings
from tests.conftest import SAMPLE_DOCS, app_client


@pytest.fixture
def client(settings: Settings, data_dir_with_docs: Path) -> Iterator[TestClient]:
    """The app on a copy of the session's data dir that holds the sample docs (ingested once, through the
    same service call as POST /collections/{name}/ingest makes; ingesting is tested in test_ingest and
    test_front_ends)."""
    with app_client(settings) as test_client:
        yield test_client


@pytest.fixture
def docs_collection() -> str:
    return "docs"


@pytest.mark.parametrize(
    ("question", "page"),
    [
        ("How many dimensions do the embedding vectors have?", "concepts/embedding-models.md"),
        ("Which environment variable sets the LLM request timeout?", "reference/configuration.rst"),
        ("Which URL should I use for a container health check?", "reference/rest-api.md"),
    ],
)
def test_search_ranks_the_answering_page_first(client: TestClient, docs_collection: str, question, page):
    response = client.post(f"/collections/{docs_collection}/search", json={"question": question, "top_k": 5})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5
    assert results[0]["source"] == page
    assert set(results[0]) >= {"source", "section", "score", "text"}


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_every_search_mode_answers(client: TestClient, docs_collection: str, mode: str):
    body = {"question": "RAGSVC_LLM_TIMEOUT", "top_k": 3, "mode": mode}
    response = client.post(f"/collections/{docs_collection}/search", json=body)
    assert response.status_code == 200
    assert len(response.json()["results"]) == 3


@pytest.mark.slow
def test_query_answers_from_the_page_and_cites_it(client_with_llm: TestClient, tmp_path: Path):
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, docs)
    assert (
        client_with_llm.post("/collections/docs/ingest", json={"path": str(docs), "wait": True}).status_code
        == 200
    )
    response = client_with_llm.post(
        "/collections/docs/query", json={"question": "How many dimensions do the embedding vectors have?"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sources"][0]["source"] == "concepts/embedding-models.md"
    assert "384" in body["answer"]
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", body["answer"])}
    assert cited, body["answer"]
    assert cited <= set(range(1, len(body["sources"]) + 1))


def test_query_without_llm_is_a_503_while_search_keeps_working(client: TestClient, docs_collection: str):
    response = client.post(f"/collections/{docs_collection}/query", json={"question": "How do I install?"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "llm_unavailable"
    assert "unreachable" in error["message"]
    search = client.post(f"/collections/{docs_collection}/search", json={"question": "How do I install?"})
    assert search.status_code == 200 and search.json()["results"]


def test_unknown_collection_is_a_404_naming_it(client: TestClient):
    response = client.post("/collections/nope/search", json={"question": "anything"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "collection_not_found", "message": "collection 'nope' does not exist"}
    }


def test_bad_requests_are_422_with_the_field_named(client: TestClient, docs_collection: str, tmp_path: Path):
    empty = client.post(f"/collections/{docs_collection}/search", json={"question": ""})
    assert empty.status_code == 422
    assert empty.json()["error"]["code"] == "invalid_request"
    assert "question" in empty.json()["error"]["message"]
    bad_mode = client.post(f"/collections/{docs_collection}/search", json={"question": "x", "mode": "fuzzy"})
    assert bad_mode.status_code == 422 and "mode" in bad_mode.json()["error"]["message"]
    bad_name = client.post("/collections/bad name!/ingest", json={"path": str(tmp_path)})
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["code"] == "invalid_collection_name"
    missing = client.post("/collections/other/ingest", json={"path": str(tmp_path / "absent")})
    assert missing.status_code == 422 and "not a folder" in missing.json()["error"]["message"]
    assert client.get("/collections/other").status_code == 404  # nothing half-created


def test_collections_list_describe_and_delete(client: TestClient, docs_collection: str):
    listed = client.get("/collections").json()
    assert [c["name"] for c in listed] == ["docs"]
    described = client.get("/collections/docs").json()
    assert described["chunks"] > 50
    assert described["embedding"]["model"] == "sentence-transformers/all-MiniLM-L6-v2#onnx-int8"
    assert described["embedding"]["dimensions"] == 384
    assert client.delete("/collections/docs").status_code == 204
    assert client.get("/collections/docs").status_code == 404
    assert client.get("/collections").json() == []


def test_search_results_cover_distinct_pages_by_default(client: TestClient, docs_collection: str):
    body = {"question": "how do I ingest and search my documents", "top_k": 8}
    sources = [
        r["source"]
        for r in client.post(f"/collections/{docs_collection}/search", json=body).json()["results"]
    ]
    assert len(sources) == len(set(sources)) == 8
