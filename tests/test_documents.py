"""Documents: uploads ingested by a job, listed, deleted with their chunks and files. Jobs surviving a killed
server are tested in tests/test_jobs.py."""

from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from ragsvc.settings import Settings
from tests.conftest import app_client, wait_for_job


def _upload(client: TestClient, name: str, files: dict[str, bytes]) -> httpx.Response:
    return client.post(f"/collections/{name}/documents", files=[("files", (n, b)) for n, b in files.items()])


MANUAL = b"# Widget manual\n\n## Calibration\n\nCalibrate the widget with widgetctl calibrate --depth 7.\n"
NOTES = b"Release notes: version 3 adds the turbo flag.\n"


def test_upload_is_ingested_by_a_job_then_listed_searched_and_deleted(client: TestClient, data_dir: Path):
    assert client.post("/collections", json={"name": "kb"}).status_code == 201
    assert client.post("/collections", json={"name": "kb"}).json()["error"]["code"] == "collection_exists"

    response = _upload(client, "kb", {"manual.md": MANUAL, "notes.txt": NOTES})
    assert response.status_code == 202
    assert response.json()["documents"] == ["manual.md", "notes.txt"]
    job = wait_for_job(client, response.json()["job"]["id"])
    assert job["status"] == "done" and job["progress"]["files_done"] == job["progress"]["files_total"] == 2
    assert sorted(job["summary"]["added"]) == ["manual.md", "notes.txt"]

    listed = client.get("/collections/kb/documents").json()
    assert [(d["source"], d["status"], d["chunks"]) for d in listed] == [
        ("manual.md", "indexed", 1),
        ("notes.txt", "indexed", 1),
    ]
    hits = client.post("/collections/kb/search", json={"question": "how to calibrate the widget"}).json()
    assert hits["results"][0]["source"] == "manual.md"
    assert client.get("/collections/kb/documents/manual.md").json()["title"] == "Widget manual"

    deleted = client.delete("/collections/kb/documents/manual.md")
    assert deleted.status_code == 200
    assert deleted.json() == {"source": "manual.md", "chunks": 1, "upload": True}
    assert [d["source"] for d in client.get("/collections/kb/documents").json()] == ["notes.txt"]
    assert not (data_dir / "uploads" / "kb" / "manual.md").exists()
    hits = client.post("/collections/kb/search", json={"question": "how to calibrate the widget"}).json()
    assert all(r["source"] != "manual.md" for r in hits["results"])
    assert client.get("/collections/kb/documents/manual.md").status_code == 404
    # A delete that matches nothing says so
    again = client.delete("/collections/kb/documents/manual.md")
    assert again.status_code == 404 and again.json()["error"]["code"] == "document_not_found"

    assert client.delete("/collections/kb").status_code == 204
    assert not (data_dir / "uploads" / "kb").exists()


def test_upload_names_cannot_escape_the_uploads_folder(client: TestClient, data_dir: Path):
    client.post("/collections", json={"name": "kb"})
    response = _upload(client, "kb", {"../../escape.md": MANUAL})
    assert response.status_code == 202
    assert response.json()["documents"] == ["escape.md"]
    wait_for_job(client, response.json()["job"]["id"])
    assert (data_dir / "uploads" / "kb" / "escape.md").exists()
    assert not (data_dir / "escape.md").exists() and not (data_dir.parent / "escape.md").exists()


def test_bad_uploads_are_refused_and_lose_nothing(client: TestClient, settings, data_dir: Path):
    client.post("/collections", json={"name": "kb"})
    wait_for_job(client, _upload(client, "kb", {"notes.txt": NOTES}).json()["job"]["id"])

    unsupported = _upload(client, "kb", {"tool.exe": b"MZ\x90\x00"})
    assert unsupported.status_code == 415
    assert unsupported.json()["error"]["code"] == "unsupported_file"

    too_big = _upload(client, "kb", {"huge.md": b"x" * (settings.max_upload_bytes + 1)})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "upload_too_large"

    assert (
        client.post("/collections/absent/documents", files=[("files", ("a.md", b"# A"))]).status_code == 404
    )
    assert sorted(p.name for p in (data_dir / "uploads" / "kb").iterdir()) == ["notes.txt"]
    assert [d["source"] for d in client.get("/collections/kb/documents").json()] == ["notes.txt"]
    assert client.get("/jobs/nope").json()["error"]["code"] == "job_not_found"


def test_uploads_a_crash_left_unrecorded_are_ingested_at_start_and_partial_files_removed(
    settings: Settings, data_dir: Path
):
    with app_client(settings) as client:
        assert client.post("/collections", json={"name": "kb"}).status_code == 201
    # What a crash leaves: an upload stored but no job recorded for it, and a half-written upload
    folder = data_dir / "uploads" / "kb"
    folder.mkdir(parents=True)
    (folder / "manual.md").write_bytes(MANUAL)
    (folder / ".notes.txt.k3j2.part").write_bytes(NOTES[:10])

    with app_client(settings) as client:
        (job,) = client.get("/jobs").json()
        assert wait_for_job(client, job["id"])["status"] == "done"
        listed = client.get("/collections/kb/documents").json()
        assert [(d["source"], d["status"]) for d in listed] == [("manual.md", "indexed")]
    assert sorted(p.name for p in folder.iterdir()) == ["manual.md"]

    with app_client(settings) as client:  # nothing left to recover: no new job
        assert len(client.get("/jobs").json()) == 1
