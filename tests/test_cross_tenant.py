"""Tenants cannot reach each other, on every route: a suite generated from the OpenAPI spec, so that a route
added later is covered on the day it is added (and /mcp, which the spec does not list, by hand).

For every operation and every field in it that names a collection, a document, a job or a key (path, query,
body, nested), called with another user's key, the answer is the one a missing object gets (same status,
same body but for the name); with a key that may read but lacks the right, 403; with a revoked, expired,
malformed or missing key, 401. Nothing of it changes the other user's data, and a canary planted in their
collection appears in no body, stream, citation, error, audit entry or log line.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key, revoke_key
from ragsvc.access.principals import create_user, grant
from ragsvc.settings import Settings
from tests.conftest import app_client

CANARY = "zqx-canary-7c1f0b3e9d"
DOCUMENT = "alice-notes.md"
# What each kind of object is named by in a request, wherever the field is (path, query or body).
FIELD_KINDS = {
    "name": "collection",
    "collection": "collection",
    "model": "collection",
    "source": "document",
    "documents": "document",
    "job_id": "job",
    "key_id": "key",
}
OPEN_PATHS = {"/healthz", "/readyz"}
# Optional fields filled all the same: a chat message without content is refused before any look-up, so a
# request without it would never reach the check this suite is about.
ALSO_FILLED = {"content"}


@dataclass
class World:
    client: TestClient
    keys: dict[str, str]  # user (or kind of bad key) -> key
    targets: dict[str, str]  # kind -> alice's object of that kind
    missing: dict[str, str]  # kind -> an object of that kind that does not exist


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def wait_done(client: TestClient, job_id: str, key: str) -> dict:
    deadline = time.monotonic() + 300
    while (job := client.get(f"/jobs/{job_id}", headers=bearer(key)).json())["status"] not in (
        "done",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


@pytest.fixture
def world(settings: Settings, data_dir: Path) -> Iterator[World]:
    """alice owns 'alice-kb' (her notes hold the canary), bob owns 'bob-kb', rita may read alice-kb only."""
    db = AccessDB(data_dir / ACCESS_DB)
    for user in ("alice", "bob", "rita"):
        create_user(db, user)
    grant(db, "user", "alice", "alice-kb", "admin")
    grant(db, "user", "bob", "bob-kb", "admin")
    grant(db, "user", "rita", "alice-kb", "read")
    keys = {user: create_key(db, user, "laptop").secret for user in ("alice", "bob", "rita")}
    revoked = create_key(db, "bob", "old")
    revoke_key(db, revoked.key.id)
    keys |= {
        "revoked": revoked.secret,
        "expired": create_key(db, "bob", "short", expires_in=0.01).secret,
        "malformed": "rsk_not-a-key",
        "missing": "",
    }
    alice_key_id = keys["alice"].split("_")[1]
    db.close()
    with app_client(settings.model_copy(update={"auth": "on"})) as client:
        for user, text in (("alice", f"# Notes\n\nThe vault code is {CANARY}.\n"), ("bob", "# Bob\n\nHi.\n")):
            h = bearer(keys[user])
            assert client.post("/collections", json={"name": f"{user}-kb"}, headers=h).status_code == 201
            files = [("files", (DOCUMENT if user == "alice" else "bob.md", text.encode()))]
            upload = client.post(f"/collections/{user}-kb/documents", files=files, headers=h)
            assert upload.status_code == 202, upload.text
            assert wait_done(client, upload.json()["job"]["id"], keys[user])["status"] == "done"
            if user == "alice":
                job_id = upload.json()["job"]["id"]
        yield World(
            client,
            keys,
            targets={"collection": "alice-kb", "document": DOCUMENT, "job": job_id, "key": alice_key_id},
            missing={"collection": "no-such-kb", "document": "no-such.md", "job": "0" * 32, "key": "0" * 16},
        )


# --- requests generated from the spec ---------------------------------------------------------------------


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def instance(spec: dict, schema: dict, objects: dict[str, str], name: str | None = None) -> Any:
    """A small valid value for `schema`; a field named for an object holds `objects`' one of its kind."""
    schema = resolve(spec, schema)
    if name in FIELD_KINDS:
        value = objects[FIELD_KINDS[name]]
        is_list = schema.get("type") == "array" or any(
            s.get("type") == "array" for s in schema.get("anyOf", [])
        )
        return [value] if is_list else value
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if resolve(spec, s).get("type") != "null"]
        return instance(spec, options[0], objects) if options else None
    if "enum" in schema:
        return "user" if "user" in schema["enum"] else schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        wanted = [
            p for p in properties if p in schema.get("required", []) or p in FIELD_KINDS.keys() | ALSO_FILLED
        ]
        return {p: instance(spec, properties[p], objects, p) for p in wanted}
    if kind == "array":
        return [instance(spec, schema.get("items", {}), objects)]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return max(1.0, schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return False
    return "x"


def names_objects(spec: dict, operation: dict) -> bool:
    """Whether any field of the operation (path, query, body, nested) names an object."""
    if any(p["name"] in FIELD_KINDS for p in operation.get("parameters", [])):
        return True
    found: list[bool] = []

    def walk(schema: dict, seen: frozenset[str]) -> None:
        ref = schema.get("$ref")
        if ref in seen:
            return
        schema_seen = seen | {ref} if ref else seen
        schema = resolve(spec, schema)
        for prop, sub in schema.get("properties", {}).items():
            found.append(prop in FIELD_KINDS)
            walk(sub, schema_seen)
        for sub in (*schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])):
            walk(sub, schema_seen)

    for content in operation.get("requestBody", {}).get("content", {}).values():
        walk(content.get("schema", {}), frozenset())
    return any(found)


def request(spec: dict, path: str, method: str, operation: dict, objects: dict[str, str]) -> dict:
    """The arguments of one call of the operation on `objects`, for the TestClient."""
    url = path
    query = {}
    for parameter in operation.get("parameters", []):
        value = instance(spec, parameter.get("schema", {}), objects, parameter["name"])
        if parameter["in"] == "path":
            url = url.replace("{" + parameter["name"] + "}", str(value))
        elif parameter["in"] == "query" and parameter["name"] in FIELD_KINDS:
            query[parameter["name"]] = value
    call: dict[str, Any] = {"method": method.upper(), "url": url, "params": query}
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        call["json"] = instance(spec, content["application/json"]["schema"], objects)
    elif "multipart/form-data" in content:
        call["files"] = [("files", ("probe.md", b"# Probe\n\nA probe.\n"))]
    return call


def operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if path not in OPEN_PATHS:
                yield path, method, operation


def normalised(response: httpx.Response, objects: dict[str, str]) -> str:
    text = response.text
    for kind, value in objects.items():
        text = text.replace(value, f"<{kind}>")
    return text


# --- the suite --------------------------------------------------------------------------------------------


def test_every_operation_answers_another_users_objects_as_missing_ones_and_leaks_nothing(
    world: World, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    client = world.client
    spec = client.get("/openapi.json").json()
    seen: list[str] = []
    checked = refused_as_missing = 0
    for path, method, operation in operations(spec):
        label = f"{method.upper()} {path}"
        target = request(spec, path, method, operation, world.targets)
        answers = {"target": client.request(**target, headers=bearer(world.keys["bob"]))}
        seen.append(answers["target"].text)
        if names_objects(spec, operation):
            missing = request(spec, path, method, operation, world.missing)
            answers["missing"] = client.request(**missing, headers=bearer(world.keys["bob"]))
            seen.append(answers["missing"].text)
            got, expected = answers["target"], answers["missing"]
            assert got.status_code == expected.status_code, (label, got.text, expected.text)
            if got.status_code >= 400:
                assert normalised(got, world.targets) == normalised(expected, world.missing), label
            checked += 1
            refused_as_missing += got.status_code == 404
        else:  # lists and the caller's own things: nothing of alice's
            assert "alice" not in answers["target"].text, (label, answers["target"].text)
        # Keys that open nothing: 401 on every operation, whatever it names.
        for bad in ("revoked", "expired", "malformed", "missing"):
            refused = client.request(**target, headers=bearer(world.keys[bad]))
            assert refused.status_code == 401, (label, bad, refused.text)
            assert refused.json()["error"]["code"] == "unauthorized"
    # The suite reached the objects: most operations that name one refused bob exactly as a missing one.
    assert checked >= 15 and refused_as_missing >= 10, (checked, refused_as_missing)

    seen += mcp_answers_as_missing(client, world)
    assert not [text for text in seen if CANARY in text]
    audit = client.get("/admin/audit", headers=bearer(admin_key(client, world))).text
    assert CANARY not in audit
    logged = [r for r in caplog.records if CANARY in f"{r.getMessage()} {r.__dict__}"]
    assert logged == []

    # A key that may read alice-kb but lacks the right an operation needs is refused with 403 (what it reads
    # it may see: its answers are not scanned for the canary).
    forbidden = 0
    for path, method, operation in operations(spec):
        label = f"{method.upper()} {path}"
        reader = client.request(
            **request(spec, path, method, operation, world.targets), headers=bearer(world.keys["rita"])
        )
        if reader.status_code == 403:
            assert reader.json()["error"]["code"] in ("forbidden", "admin_only"), (label, reader.text)
            forbidden += 1
        assert not (method == "delete" and reader.status_code < 300), (label, "a reader deleted something")
    assert forbidden >= 7, (
        forbidden
    )  # delete, ingest, build, reindex, upload, delete a document, the admin API
    assert_alice_is_untouched(client, world)


def admin_key(client: TestClient, world: World) -> str:
    """An admin key, made through the data dir's access database (as `ragsvc keys create --admin` does)."""
    db = AccessDB(Path(client.app.state.runtime.settings.data_dir) / ACCESS_DB)
    try:
        create_user(db, "root", admin=True)
        return create_key(db, "root", "admin").secret
    finally:
        db.close()


def assert_alice_is_untouched(client: TestClient, world: World) -> None:
    h = bearer(world.keys["alice"])
    assert client.get("/collections/alice-kb", headers=h).status_code == 200
    documents = client.get("/collections/alice-kb/documents", headers=h).json()
    assert [d["source"] for d in documents] == [DOCUMENT]
    found = client.post("/collections/alice-kb/search", json={"question": "vault code"}, headers=h).json()
    assert CANARY in found["results"][0]["text"]
    assert client.get(f"/jobs/{world.targets['job']}", headers=h).status_code == 200
    assert world.targets["key"] in [k["id"] for k in client.get("/keys", headers=h).json()]


# --- /mcp, by hand ----------------------------------------------------------------------------------------


def mcp(client: TestClient, key: str | None, method: str, params: dict) -> httpx.Response:
    headers = bearer(key) | {
        "Accept": "application/json, text/event-stream",
        "Host": "127.0.0.1:8000",  # /mcp refuses other hosts (DNS rebinding); the TestClient's is 'testserver'
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return client.post("/mcp", json=body, headers=headers)


def mcp_answers_as_missing(client: TestClient, world: World) -> list[str]:
    """The MCP tools: bob gets from alice's collection the result a missing one gives; bad keys get 401."""
    seen = []
    tools = json.loads(mcp(client, world.keys["bob"], "tools/list", {}).text)["result"]["tools"]
    for tool in tools:
        properties = tool["inputSchema"].get("properties", {})
        if not set(properties) & set(FIELD_KINDS):
            listed = mcp(client, world.keys["bob"], "tools/call", {"name": tool["name"], "arguments": {}})
            assert "alice-kb" not in listed.text
            seen.append(listed.text)
            continue
        results = {}
        for which, objects in (("target", world.targets), ("missing", world.missing)):
            arguments = {
                p: instance({}, s, objects, p)
                for p, s in properties.items()
                if p in tool["inputSchema"]["required"]
            }
            answer = mcp(
                client, world.keys["bob"], "tools/call", {"name": tool["name"], "arguments": arguments}
            )
            assert answer.status_code == 200, answer.text
            seen.append(answer.text)
            result = json.loads(answer.text)["result"]
            assert result["isError"], (tool["name"], result)
            results[which] = normalised(answer, objects)
        assert results["target"] == results["missing"], tool["name"]
    for bad in ("revoked", "expired", "malformed", "missing"):
        refused = mcp(client, world.keys[bad], "tools/list", {})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        seen.append(refused.text)
    return seen


def test_v1_models_lists_only_what_the_key_may_read(world: World):
    listed = {
        user: [
            m["id"] for m in world.client.get("/v1/models", headers=bearer(world.keys[user])).json()["data"]
        ]
        for user in ("alice", "bob", "rita")
    }
    assert listed == {"alice": ["alice-kb"], "bob": ["bob-kb"], "rita": ["alice-kb"]}
    assert re.fullmatch(r"[0-9a-f]{16}", world.targets["key"])
