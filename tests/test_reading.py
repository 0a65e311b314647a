"""A file read by an older ragsvc is read again on the next ingest when ragsvc now reads it differently (its
parsers, the chunker, what is embedded): `ingest.pipeline.READING` names how files are read, and a change to
what they read as comes with a new one."""

import hashlib
import json
from pathlib import Path

import pytest

from ingest import pipeline
from ingest.chunk import ChunkingParams, chunk_document
from ingest.embedders import local_embedder
from ingest.extract import extract_document
from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings
from tests.conftest import app_client, wait_for_job
from tests.document_builders import make_docx

PAGES = {
    "guide/install.md": "# Install\n\nInstall the widget:\n\n```bash\npip install widget\n```\n\n## Upgrade\n\nUse -U.\n",
    "usage.rst": "Usage\n=====\n\nStart it with::\n\n   widget serve --port 8080\n\nFlags\n-----\n\nUse --fast.\n",
    "notes.txt": "Plain notes about widgets.\n",
}

# What the pages below read as under each reading (a SHA-256 of their chunks). When a change to the parsers,
# the chunker or `embed_text` (or an upgrade of a parsing library) fails this test, it changes what stored
# files read as: add a label to `ingest.pipeline.READINGS` and the new digest here, and the next ingest of
# every collection reads its files again.
CHUNKS_OF_EACH_READING = {
    "code-fenced": "c7f97f9663e2671a89392275ea3d678af91e3108b118d3797182c99e18985b22",
}

PAGES_OF_EVERY_KIND = {
    "guide.md": (
        '---\ntitle: Widget guide\n---\n\n# Widget guide {#guide}\n\nInstall it:\n\n```python title="x"\n'
        "import widget\nwidget.start(port=8080)\n```\n\n!!! note\n    Ports below 1024 need root.\n\n"
        "## Options\n\n| flag | what |\n|---|---|\n| `--fast` | skip checks |\n\n[Docs](https://example.org)\n"
    ),
    "usage.rst": (
        ".. _usage:\n\nUsage\n=====\n\nRun :doc:`the tutorial <tut>` with ``--gpus=1``::\n\n   sbatch job.sh\n\n"
        ".. code-block:: yaml\n\n   key: value\n\n.. note:: It queues.\n\nFlags\n-----\n\n* **--fast** skips checks.\n"
    ),
    "page.html": (
        "<html><head><title>Widget page</title></head><body><h1>Widget</h1><p>Run it.</p>"
        '<div class="highlight-bash"><pre>widget serve\n  --port 80</pre></div><h2>More</h2><ul><li>One</li>'
        "<li>Two</li></ul></body></html>"
    ),
    "notes.txt": "Plain notes.\n\nA second paragraph about widgets.\n",
}


def _write(folder: Path, pages: dict[str, str]) -> Path:
    for source, text in pages.items():
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).write_text(text)
    return folder


def _stored_versions(runtime: Runtime, collection: str) -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for hit in runtime.engine.scroll(runtime.registry.get(collection).live_index):
        versions.setdefault(hit.payload["source"], set()).add(hit.payload["doc_hash"])
    return versions


def test_files_an_older_reading_stored_are_read_again_once_then_unchanged(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = _write(tmp_path / "widget-docs", PAGES)
    with monkeypatch.context() as older:
        older.setattr(pipeline, "READING", "")  # a collection ingested by a ragsvc before readings had names
        first = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert sorted(first.added) == sorted(PAGES)

    again = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert sorted(again.updated) == sorted(PAGES) and again.unchanged == []
    # Each file in its new version only: the old chunks are gone, and a search finds each section once
    assert _stored_versions(runtime, "widget") == {
        source: {pipeline.document_version(text.encode())} for source, text in PAGES.items()
    }
    assert again.chunks_total == first.chunks_total
    hits = retrieval.search(runtime, LOCAL, "widget", "how do I install the widget with pip", top_k=10)
    assert len({(h.source, h.text) for h in hits}) == len(hits)

    third = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert sorted(third.unchanged) == sorted(PAGES) and third.chunks_written == 0


def test_uploads_an_older_reading_stored_are_read_again_with_the_next_upload_not_at_start_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    with monkeypatch.context() as older:
        older.setattr(pipeline, "READING", "")
        with app_client(settings) as client:
            client.post("/collections", json={"name": "kb"})
            files = [("files", ("manual.md", PAGES["guide/install.md"].encode()))]
            job = client.post("/collections/kb/documents", files=files).json()["job"]
            assert wait_for_job(client, job["id"])["summary"]["added"] == ["manual.md"]

    with app_client(settings) as client:
        assert len(client.get("/jobs").json()) == 1  # no ingest started at start-up
        files = [("files", ("notes.txt", PAGES["notes.txt"].encode()))]
        job = wait_for_job(client, client.post("/collections/kb/documents", files=files).json()["job"]["id"])
        assert (job["summary"]["added"], job["summary"]["updated"]) == (["notes.txt"], ["manual.md"])
        listed = client.get("/collections/kb/documents").json()
        assert [(d["source"], d["status"], d["chunks"]) for d in listed] == [
            ("manual.md", "indexed", 2),
            ("notes.txt", "indexed", 1),
        ]


def test_what_files_read_as_changes_only_with_a_new_reading():
    embedder = local_embedder()
    params = ChunkingParams(max_tokens=embedder.max_tokens, target_tokens=64, overlap_tokens=8)
    pages = {source: text.encode() for source, text in PAGES_OF_EVERY_KIND.items()}
    pages["report.docx"] = make_docx(
        [("h1", "Results"), ("p", "The widget ran 3 times faster."), ("table", "run,s;1,3")]
    )
    chunks = [
        [c.title, c.anchor, c.section_trail, c.text, c.embed_text, c.tokens]
        for source, raw in sorted(pages.items())
        for c in chunk_document(extract_document(source, raw), params, embedder.count_tokens)
    ]
    digest = hashlib.sha256(json.dumps(chunks).encode()).hexdigest()
    assert pipeline.READING in CHUNKS_OF_EACH_READING and pipeline.READINGS[-1] == pipeline.READING
    assert digest == CHUNKS_OF_EACH_READING[pipeline.READING], (
        f"these pages' chunks changed (digest {digest}): name a new reading in ingest.pipeline.READINGS "
        "and add it with this digest to CHUNKS_OF_EACH_READING, so that stored files are read again"
    )
