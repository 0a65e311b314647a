"""The OpenAPI contract is exact: every status a route answers is documented with the error body, the input
constraints the server enforces are in the schema, an unknown method is 405 with Allow, and schemathesis,
run against a real `ragsvc serve` with auth on, finds no failure of any check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key
from ragsvc.access.principals import create_user
from ragsvc.settings import Settings
from tests.conftest import _serve, app_client

OPEN_PATHS = {"/healthz", "/readyz"}
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Bounded so the run takes minutes in CI; the stateful phase chains creates, reads and deletes.
MAX_EXAMPLES = 15
CONFIG = Path(__file__).with_name("schemathesis.toml")


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_route_documents_its_error_statuses_with_the_error_body(client: TestClient):
    spec = client.get("/openapi.json").json()
    body_ref = "#/components/schemas/ErrorBody"
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    for method, path, op in operations(spec):
        responses = op["responses"]
        if path in OPEN_PATHS:
            assert "401" not in responses, (method, path)
            continue
        for status in ("401", "403", "429"):
            assert status in responses, (method, path, status)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": body_ref}, (method, path, status)
    ops = {(m, p): op["responses"] for m, p, op in operations(spec)}
    assert {"400", "404", "409", "413", "415", "422"} <= set(ops["POST", "/collections/{name}/documents"])
    assert {"404", "409", "422"} <= set(ops["POST", "/collections/{name}/reindex"])
    assert {"502", "503", "504"} <= set(ops["POST", "/v1/chat/completions"])
    assert {"200", "202"} <= set(ops["POST", "/collections/{name}/ingest"])
    assert "503" in ops["GET", "/readyz"]


def test_the_schema_states_the_constraints_the_server_enforces(client: TestClient):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    name_param = next(
        p for p in spec["paths"]["/collections/{name}"]["get"]["parameters"] if p["name"] == "name"
    )
    pattern = name_param["schema"]["pattern"]
    assert schemas["CreateCollectionRequest"]["properties"]["name"]["pattern"] == pattern
    embedding_input = schemas["EmbeddingRequest"]["properties"]["input"]["anyOf"]
    assert embedding_input[0]["minLength"] == 1
    assert embedding_input[1]["minItems"] == 1 and embedding_input[1]["items"]["minLength"] == 1
    upload = schemas["Body_upload_documents_collections__name__documents_post"]
    assert upload["properties"]["files"]["minItems"] == 1
    assert schemas["SearchRequest"]["properties"]["question"]["maxLength"] == 4000

    # and the server holds to them, with the problem named
    bad_name = client.post("/collections", json={"name": "-starts-with-a-dash"})
    assert bad_name.status_code == 422 and "name" in bad_name.json()["error"]["message"]
    trailing_newline = client.get("/collections/docs%0A")
    assert trailing_newline.status_code == 422
    assert trailing_newline.json()["error"]["code"] == "invalid_collection_name"
    empty = client.post("/v1/embeddings", json={"model": "m", "input": []})
    assert empty.status_code == 422 and "input" in empty.json()["error"]["message"]
    no_files = client.post("/collections/docs/documents", files={"other": ("a.txt", b"x")})
    assert no_files.status_code == 422 and "files" in no_files.json()["error"]["message"]


def test_reindexing_onto_the_embedding_a_collection_has_is_a_409_conflict(client: TestClient):
    assert client.post("/collections", json={"name": "docs"}).status_code == 201
    model = client.get("/collections/docs").json()["embedding"]["model"]
    same = client.post("/collections/docs/reindex", json={"embedding": {"model": model}})
    assert same.status_code == 409
    assert same.json()["error"]["code"] == "already_embedded"


@pytest.mark.parametrize("method", ["TRACE", "PUT", "PATCH", "OPTIONS"])
def test_an_unknown_method_is_405_with_every_allowed_method(client: TestClient, method: str):
    # /collections/{name} is served by two routes (GET and DELETE): Allow names the methods of both.
    response = client.request(method, "/collections/docs")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == {"DELETE", "GET"}
    listing = client.request(method, "/collections")
    assert listing.status_code == 405
    assert set(listing.headers["allow"].split(", ")) == {"GET", "POST"}


def test_an_admin_cannot_delete_their_own_user(settings: Settings, admin_key: str):
    # schemathesis' stateful phase found it: DELETE /admin/users/{name} on the caller locked everyone out
    with app_client(settings.model_copy(update={"auth": "on"})) as secured:
        headers = {"Authorization": f"Bearer {admin_key}"}
        refused = secured.delete("/admin/users/root", headers=headers)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "deleting_self"
        assert secured.get("/admin/users", headers=headers).status_code == 200


@pytest.fixture
def admin_key(data_dir: Path) -> str:
    db = AccessDB(data_dir / ACCESS_DB)
    create_user(db, "root", admin=True)
    secret = create_key(db, "root", "schemathesis").secret
    db.close()
    return secret


@pytest.mark.slow
def test_schemathesis_finds_no_failure_with_auth_on(data_dir: Path, admin_key: str, running_llm: str):
    """Every check, every phase (stateful included), bounded examples, the real LLM; the server-path ingest
    is left out (it reads the server's folders). tests/schemathesis.toml names the two statuses that are
    right where a JSON Schema cannot tell (it says which and why)."""
    env = {"RAGSVC_AUTH": "on", "RAGSVC_LLM_BASE_URL": running_llm, "RAGSVC_LLM_MAX_TOKENS": "16"}
    report = data_dir.parent / "schemathesis"
    for url in _serve(data_dir, env):
        assert httpx.get(f"{url}/collections").status_code == 401  # auth is on
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(CONFIG),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--exclude-path",
                "/collections/{name}/ingest",
                "--header",
                f"Authorization: Bearer {admin_key}",
                "--request-timeout",
                "120",
                # the real LLM shares 2 busy cores with the rest of the suite: the default 10 s is not ragsvc's
                "--max-response-time",
                "120",
                "--seed",
                "23",
                "--workers",
                "1",
                "--report",
                "junit",
                "--report-dir",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=data_dir.parent,  # its cache of crashes goes there, not into the checkout
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        )
        summary = run.stdout[-6000:]
        print(summary)
        assert run.returncode == 0, summary + run.stderr[-2000:]
        counted = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
        assert counted and counted[1] == counted[2] and int(counted[1]) > 500, summary
