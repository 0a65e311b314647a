"""Deletion is a promise about bytes: once a delete of a document or a collection returns, a scan of every file
under the data dir (raw, re-encoded and decompressed) finds no byte of a canary planted in it."""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from indexes.edge import EdgeEngine
from indexes.engine import ChunkPoint, Filter, SparseVector
from indexes.keys import SqliteDocumentKeys
from indexes.sealed import SealedEngine, key_id
from ragsvc.service.factory import DOCUMENT_KEYS
from ragsvc.service.retrieval import unseen_terms
from tests.byte_scan import find_canary
from tests.conftest import wait_for_job


def new_canary() -> str:
    # letters outside hex, so that no 4-byte run of it repeats a hash elsewhere in a compressed block
    return "Kq" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


def secret_doc(canary: str) -> bytes:
    return (
        f"# Quarterly plan {canary}\n\n## Budget\n\nThe confidential figure is {canary}; tell no one.\n\n"
        f"## Staff\n\nThe review of {canary} is due in May.\n"
    ).encode()


PLAIN_DOC = b"# Widget manual\n\n## Calibration\n\nCalibrate the widget with widgetctl calibrate --depth 7.\n"


def upload(client: TestClient, collection: str, files: dict[str, bytes]) -> dict:
    response = client.post(
        f"/collections/{collection}/documents", files=[("files", (n, b)) for n, b in files.items()]
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job"]["id"])
    assert job["status"] == "done", job
    return job


def test_a_deleted_documents_words_are_no_longer_terms_of_the_collection(client: TestClient):
    """The answer check's unseen-term lookup reads the live index: a word only a deleted document used is
    unseen again, as it would be had the document never been ingested."""
    client.post("/collections", json={"name": "priv"})
    upload(client, "priv", {"secret.md": secret_doc(new_canary()), "manual.md": PLAIN_DOC})
    runtime = client.app.state.runtime
    question = "How is the widget calibrated, and when is the review due?"
    assert unseen_terms(runtime, "priv", question) == (0, 4)
    assert client.delete("/collections/priv/documents/secret.md").status_code == 200
    assert unseen_terms(runtime, "priv", question) == (2, 4)  # review, due: only the deleted page had them
    assert unseen_terms(runtime, "priv", "How is the widget calibrated?") == (0, 2)


def test_a_deleted_document_leaves_no_byte_of_it_under_the_data_dir(client: TestClient, data_dir: Path):
    canary = new_canary()
    client.post("/collections", json={"name": "priv"})
    job = upload(client, "priv", {"secret.md": secret_doc(canary), "manual.md": PLAIN_DOC})
    hits = client.post("/collections/priv/search", json={"question": f"confidential figure {canary}"}).json()
    assert canary in hits["results"][0]["text"]  # sealed text is opened for the reader
    # Only the stored upload holds it in the clear: the index keeps it sealed (this also shows the scan works)
    assert find_canary(data_dir, canary) == ["uploads/priv/secret.md"]

    assert client.delete("/collections/priv/documents/secret.md").status_code == 200

    assert find_canary(data_dir, canary) == []
    hits = client.post("/collections/priv/search", json={"question": f"confidential figure {canary}"}).json()
    assert hits["results"] and all(canary not in r["text"] for r in hits["results"])
    assert "secret.md" not in client.get(f"/jobs/{job['id']}").text
    assert [d["source"] for d in client.get("/collections/priv/documents").json()] == ["manual.md"]


def test_a_deleted_collection_leaves_no_byte_of_it_under_the_data_dir(client: TestClient, data_dir: Path):
    canary = new_canary()
    client.post("/collections", json={"name": "priv"})
    job = upload(client, "priv", {"secret.md": secret_doc(canary)})
    client.post("/collections", json={"name": "other"})
    upload(client, "other", {"manual.md": PLAIN_DOC})

    assert client.delete("/collections/priv").status_code == 204

    assert find_canary(data_dir, canary) == []
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    with sqlite3.connect(data_dir / DOCUMENT_KEYS) as db:
        indexes = {row[0] for row in db.execute("SELECT DISTINCT idx FROM document_keys")}
    assert indexes and all(not index.startswith("priv--") for index in indexes)
    assert client.post("/collections/other/search", json={"question": "calibrate"}).json()["results"]


def point(text: str, source: str, doc_hash: str = "v1") -> ChunkPoint:
    payload = {"source": source, "origin": "o", "doc_hash": doc_hash, "text": text, "section": "S"}
    return ChunkPoint(str(uuid.uuid4()), [1.0, 0.0, 0.0], SparseVector([1], [1.0]), payload)


def test_the_scan_finds_what_an_unsealed_shard_keeps_after_a_delete(tmp_path: Path):
    """The scan's own check: Qdrant Edge keeps a deleted point's payload in its WAL and in an LZ4 block of
    its payload pages, and the scan sees both; this is what sealing protects against."""
    canary = new_canary()
    engine = EdgeEngine(tmp_path / "indexes")
    engine.create_index("plain", 3)
    engine.upsert("plain", [point(f"{canary} {canary} and more {canary}", "secret.md")])
    engine.delete("plain", Filter(must={"source": "secret.md"}))
    assert engine.count("plain") == 0
    engine.close()
    hits = find_canary(tmp_path, canary)
    assert any("/wal/" in h for h in hits) and any("payload_storage/page_" in h for h in hits)


def test_a_sealed_delete_destroys_the_key_of_each_version_it_emptied(tmp_path: Path):
    keys = SqliteDocumentKeys(tmp_path / "keys.db")
    engine = SealedEngine(EdgeEngine(tmp_path / "indexes"), keys)
    engine.create_index("kb", 3)
    old, new, other = point("old text", "a.md", "v1"), point("new text", "a.md", "v2"), point("b", "b.md")
    engine.upsert("kb", [old, new, other])
    stored = {p.payload["doc_hash"] + p.payload["source"]: key_id(p.payload) for p in (old, new, other)}
    assert len(keys.get("kb", stored.values())) == 3

    # a re-ingest drops the old version of a.md: its key goes, the new version's stays
    engine.delete("kb", Filter(must={"source": "a.md"}, must_not={"doc_hash": "v2"}))
    assert set(keys.get("kb", stored.values())) == {stored["v2a.md"], stored["v1b.md"]}
    assert sorted(h.payload["text"] for h in engine.scroll("kb")) == ["b", "new text"]

    engine.drop_index("kb")
    assert keys.get("kb", stored.values()) == {}
    engine.close()
