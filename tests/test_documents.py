"""Documents and jobs: uploads ingested by a job, listed, deleted with their chunks and files; jobs that
survive the serving process being killed."""

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.jobs import Job, JobStatus, JobStore
from tests.conftest import RAGSVC, free_port


def _wait(client, job: dict, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = client.get(f"/jobs/{job['id']}").json()
    return job


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
    job = _wait(client, response.json()["job"])
    assert job["status"] == "done" and job["files_done"] == job["files_total"] == 2
    assert sorted(job["summary"]["added"]) == ["manual.md", "notes.txt"]

    listed = client.get("/collections/kb/documents").json()
    assert [(d["source"], d["status"], d["chunks"]) for d in listed] == [
        ("manual.md", "indexed", 1),
        ("notes.txt", "indexed", 1),
    ]
    hits = client.post("/collections/kb/search", json={"question": "how to calibrate the widget"}).json()
    assert hits["results"][0]["source"] == "manual.md"
    assert client.get("/collections/kb/documents/manual.md").json()["title"] == "Widget manual"

    assert client.delete("/collections/kb/documents/manual.md").status_code == 204
    assert [d["source"] for d in client.get("/collections/kb/documents").json()] == ["notes.txt"]
    assert not (data_dir / "uploads" / "kb" / "manual.md").exists()
    hits = client.post("/collections/kb/search", json={"question": "how to calibrate the widget"}).json()
    assert all(r["source"] != "manual.md" for r in hits["results"])
    assert client.get("/collections/kb/documents/manual.md").status_code == 404

    assert client.delete("/collections/kb").status_code == 204
    assert not (data_dir / "uploads" / "kb").exists()


def test_upload_names_cannot_escape_the_uploads_folder(client: TestClient, data_dir: Path):
    client.post("/collections", json={"name": "kb"})
    response = _upload(client, "kb", {"../../escape.md": MANUAL})
    assert response.status_code == 202
    assert response.json()["documents"] == ["escape.md"]
    _wait(client, response.json()["job"])
    assert (data_dir / "uploads" / "kb" / "escape.md").exists()
    assert not (data_dir / "escape.md").exists() and not (data_dir.parent / "escape.md").exists()


def test_bad_uploads_are_refused_and_lose_nothing(client: TestClient, settings, data_dir: Path):
    client.post("/collections", json={"name": "kb"})
    _wait(client, _upload(client, "kb", {"notes.txt": NOTES}).json()["job"])

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


def test_a_job_left_running_by_a_dead_server_is_finished_at_the_next_start(
    settings, data_dir: Path, tmp_path
):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nAlpha text.\n")
    data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(data_dir / "jobs.sqlite")
    job = store.save(
        Job(kind="ingest_folder", collection="kb", params={"path": str(folder)}, status=JobStatus.running)
    )
    store.close()
    from tests.conftest import app_client

    with app_client(settings) as client:
        finished = _wait(client, client.get(f"/jobs/{job.id}").json())
        assert finished["status"] == "done" and finished["attempts"] == 1
        assert client.get("/collections/kb").json()["chunks"] == 1


def _start_server(data_dir: Path, port: int) -> subprocess.Popen:
    log = open(data_dir.parent / f"serve-{port}.log", "ab")  # noqa: SIM115
    return subprocess.Popen([RAGSVC, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)


def _until_up(url: str, process: subprocess.Popen) -> None:
    for _ in range(600):
        assert process.poll() is None
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not start")


@pytest.mark.slow
def test_sigkill_mid_ingest_then_restart_finishes_the_job_with_every_file_once(
    data_dir: Path, tmp_path: Path
):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(120):
        sections = "\n\n".join(
            f"## Part {j}\n\nFile {i} part {j} explains topic {i * 7 + j} in detail. " * 3 for j in range(4)
        )
        (folder / f"page{i:03}.md").write_text(f"# Page {i}\n\n{sections}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(data_dir, port)
    _until_up(url, server)
    job = httpx.post(f"{url}/collections/kb/ingest", json={"path": str(folder)}).json()
    while (state := httpx.get(f"{url}/jobs/{job['id']}").json())["files_done"] < 32:
        assert state["status"] in ("queued", "running"), state
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()

    server = _start_server(data_dir, port)
    try:
        _until_up(url, server)
        client = httpx.Client(base_url=url, timeout=60)
        done = _wait(client, client.get(f"/jobs/{job['id']}").json())
        assert done["status"] == "done" and done["attempts"] == 2
        documents = client.get("/collections/kb/documents").json()
        assert len(documents) == 120 and all(d["chunks"] == 4 for d in documents)
        # No duplicate or orphan chunks: every (source, position) once, every source in one version.
        results = client.post("/collections/kb/search", json={"question": "topic", "top_k": 100}).json()[
            "results"
        ]
        assert len({(r["source"], r["section"], r["text"]) for r in results}) == len(results)
        assert client.get("/collections/kb").json()["chunks"] == 480
        assert Counter(d["source"] for d in documents).most_common(1)[0][1] == 1
    finally:
        server.terminate()
        server.wait(timeout=30)
