"""Races through the REST API of a real `ragsvc serve`: parallel uploads of one file, deletes racing the
ingestion of the document they delete, and many deletes while a job ingests. What must hold: exactly one
document per name, a document either fully in its newest version or fully gone (never half), and every
delete reporting whether it matched something."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import _serve, wait_for_job

pytestmark = pytest.mark.slow

MARK = re.compile(r"zq(?P<doc>\w+?) version v(?P<version>\d+) part (?P<part>\d+)")


def document(name: str, version: int, parts: int) -> bytes:
    """A document of `parts` sections (one chunk each), each naming the document, its version and part."""
    text = [f"# Document {name}", ""]
    for part in range(parts):
        text += [f"## Part {part}", "", f"zq{name} version v{version} part {part}. Storage quota notes.", ""]
    return "\n".join(text).encode()


def upload(client: httpx.Client, files: dict[str, bytes]) -> httpx.Response:
    return client.post("/collections/kb/documents", files=[("files", (n, b)) for n, b in files.items()])


def wait_for_jobs(client: httpx.Client) -> None:
    deadline = time.monotonic() + 600
    while any(j["status"] in ("queued", "running") for j in client.get("/jobs").json()):
        assert time.monotonic() < deadline, "jobs still unfinished"
        time.sleep(0.2)


def state_of(client: httpx.Client, data_dir: Path, name: str) -> tuple[int | None, list[int]]:
    """What a user can see of document `name`: the version its chunks hold (None when it is gone, after
    checking that no listing, search hit or stored file is left of it), and the parts a search finds."""
    source = f"{name}.md"
    listed = {d["source"]: d for d in client.get("/collections/kb/documents").json()}
    body = {"question": f"zq{name}", "mode": "sparse", "top_k": 50, "source_prefix": source}
    hits = client.post("/collections/kb/search", json=body).json()["results"]
    marks = [m for h in hits if (m := MARK.search(h["text"])) and m["doc"] == name]
    if source not in listed:
        assert not marks, f"{source} is not listed but search finds {len(marks)} of its chunks"
        assert not (data_dir / "uploads" / "kb" / source).exists()
        return None, []
    versions = {int(m["version"]) for m in marks}
    assert len(versions) == 1, f"{source}: chunks of versions {versions} (half-replaced)"
    # What is searchable is what is stored: never chunks whose upload a delete removed
    stored = data_dir / "uploads" / "kb" / source
    assert stored.exists() and f"zq{name} version v{next(iter(versions))} " in stored.read_text()
    assert listed[source]["status"] == "indexed"
    assert listed[source]["chunks"] == len(marks), (
        f"{source}: listed {listed[source]} but search finds {marks}"
    )
    return versions.pop(), sorted(int(m["part"]) for m in marks)


@pytest.fixture
def kb(data_dir: Path) -> Iterator[httpx.Client]:
    """`ragsvc serve` with an empty collection 'kb'; searches return every chunk of a document that matches."""
    for url in _serve(data_dir, {"RAGSVC_CHUNKS_PER_SOURCE": "0"}):
        with httpx.Client(base_url=url, timeout=120) as client:
            assert client.post("/collections", json={"name": "kb"}).status_code == 201
            yield client


def test_a_hundred_parallel_uploads_of_one_file_make_exactly_one_document(kb: httpx.Client, data_dir: Path):
    content = document("same", 1, parts=3)
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda _: upload(kb, {"same.md": content}), range(100)))
    assert [r.status_code for r in responses] == [202] * 100, [
        r.text for r in responses if r.status_code != 202
    ]
    wait_for_jobs(kb)

    assert [j["status"] for j in kb.get("/jobs").json()] == ["done"] * 100
    assert [d["source"] for d in kb.get("/collections/kb/documents").json()] == ["same.md"]
    assert state_of(kb, data_dir, "same") == (1, [0, 1, 2])
    # One stored file, whole; no partial upload left beside it
    assert sorted(p.name for p in (data_dir / "uploads" / "kb").iterdir()) == ["same.md"]
    assert (data_dir / "uploads" / "kb" / "same.md").read_bytes() == content


def test_a_delete_racing_the_ingestion_of_its_document_leaves_it_whole_or_gone(
    kb: httpx.Client, data_dir: Path
):
    rng = random.Random(7)
    outcomes = {"present": 0, "gone": 0}
    for version in range(1, 25):
        parts = rng.randint(1, 4)
        with ThreadPoolExecutor(max_workers=2) as pool:
            uploaded = pool.submit(upload, kb, {"doc.md": document("doc", version, parts)})
            time.sleep(rng.uniform(0, 0.3))
            deleted = pool.submit(kb.delete, "/collections/kb/documents/doc.md")
            assert uploaded.result().status_code == 202
            assert deleted.result().status_code in (200, 404), deleted.result().text
        wait_for_job(kb, uploaded.result().json()["job"]["id"])
        found, found_parts = state_of(kb, data_dir, "doc")
        if found is None:
            outcomes["gone"] += 1
        else:
            # Present only in the newest version, with every one of its chunks
            assert (found, found_parts) == (version, list(range(parts)))
            outcomes["present"] += 1
        if deleted.result().status_code == 200:
            body = deleted.result().json()
            assert body["source"] == "doc.md" and (body["chunks"] > 0 or body["upload"])
    assert outcomes["gone"] > 0  # the race went both ways at least once (seeded: it does)


def test_a_thousand_random_deletes_during_an_ingestion_leave_nothing_of_what_they_deleted(
    kb: httpx.Client, data_dir: Path
):
    names = [f"d{i:03d}" for i in range(200)]
    parts = {name: 1 + i % 3 for i, name in enumerate(names)}
    response = upload(kb, {f"{n}.md": document(n, 1, parts[n]) for n in names})
    assert response.status_code == 202
    job_id = response.json()["job"]["id"]

    rng = random.Random(11)
    # Names that exist and some that never did; many are deleted several times
    targets = [rng.choice(names) if rng.random() < 0.9 else f"never{rng.randint(0, 50)}" for _ in range(1000)]

    def delete(name: str) -> tuple[str, int, dict]:
        answer = kb.delete(f"/collections/kb/documents/{name}.md")
        return name, answer.status_code, answer.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(delete, targets))
    job = wait_for_job(kb, job_id)
    assert job["status"] == "done"

    matched: dict[str, int] = {}
    for name, status, body in results:
        assert status in (200, 404), body
        if status == 404:
            assert body["error"]["code"] == "document_not_found" and name in body["error"]["message"]
        else:
            assert body["source"] == f"{name}.md"
            matched[name] = matched.get(name, 0) + 1
    # Each document that existed is matched by exactly one delete; every other delete says it matched nothing
    assert matched == dict.fromkeys(sorted(set(targets) & set(names)), 1)
    assert not any(name.startswith("never") for name in matched)

    stored = {p.name for p in (data_dir / "uploads" / "kb").iterdir()}
    listed = {d["source"] for d in kb.get("/collections/kb/documents").json()}
    for name in names:
        found, found_parts = state_of(kb, data_dir, name)
        if name in matched:
            assert found is None and f"{name}.md" not in stored and f"{name}.md" not in listed
        else:
            assert (found, found_parts) == (1, list(range(parts[name])))
    assert stored == listed == {f"{n}.md" for n in names if n not in matched}
