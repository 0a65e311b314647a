"""Ingesting folders: chunk counts, incremental re-ingest, and what is skipped or removed."""

from pathlib import Path

from indexes.engine import Filter
from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.runtime import Runtime


def _write_folder(root: Path) -> Path:
    (root / "guide").mkdir(parents=True)
    (root / "guide" / "install.md").write_text(
        "# Install\n\nInstall with pip install widget.\n\n## Upgrade\n\nUpgrade with pip install -U widget.\n"
    )
    (root / "usage.rst").write_text(
        "Usage\n=====\n\nRun ``widget serve`` to start.\n\nFlags\n-----\n\nUse --fast.\n"
    )
    (root / "notes.txt").write_text("Plain notes about widgets.\n")
    (root / "image.png").write_bytes(b"\x89PNG not a doc")
    return root


def _chunks_by_source(runtime: Runtime, collection: str) -> dict[str, list[dict]]:
    record = runtime.registry.get(collection)
    by_source: dict[str, list[dict]] = {}
    for hit in runtime.engine.scroll(record.live_index):
        by_source.setdefault(hit.payload["source"], []).append(hit.payload)
    return by_source


def test_ingest_folder_stores_one_chunk_per_section(runtime: Runtime, tmp_path: Path):
    folder = _write_folder(tmp_path / "widget-docs")
    summary = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert summary.files == 3
    assert sorted(summary.added) == ["guide/install.md", "notes.txt", "usage.rst"]
    assert summary.failed == []
    chunks = _chunks_by_source(runtime, "widget")
    assert {s: len(c) for s, c in chunks.items()} == {"guide/install.md": 2, "usage.rst": 2, "notes.txt": 1}
    assert summary.chunks_written == summary.chunks_total == 5
    sections = sorted(c["section"] for c in chunks["usage.rst"])
    assert sections == ["Usage", "Usage > Flags"]


def test_reingest_skips_unchanged_replaces_edited_and_removes_deleted(runtime: Runtime, tmp_path: Path):
    folder = _write_folder(tmp_path / "widget-docs")
    ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    before = _chunks_by_source(runtime, "widget")

    again = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert sorted(again.unchanged) == ["guide/install.md", "notes.txt", "usage.rst"]
    assert again.chunks_written == 0

    (folder / "usage.rst").write_text("Usage\n=====\n\nRun ``widget start`` instead.\n")
    (folder / "notes.txt").unlink()
    summary = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert summary.updated == ["usage.rst"]
    assert summary.removed == ["notes.txt"]
    assert summary.unchanged == ["guide/install.md"]

    after = _chunks_by_source(runtime, "widget")
    assert "notes.txt" not in after
    assert [c["text"] for c in after["usage.rst"]] == ["Run widget start instead."]
    assert after["guide/install.md"] == before["guide/install.md"]
    record = runtime.registry.get("widget")
    assert runtime.engine.count(record.live_index, Filter(must={"source": "usage.rst"})) == 1


def test_symlinks_out_of_the_folder_are_not_followed(runtime: Runtime, tmp_path: Path):
    secret = tmp_path / "secret.md"
    secret.write_text("# Secret\n\nThe password is hunter2.\n")
    folder = _write_folder(tmp_path / "widget-docs")
    (folder / "leak.md").symlink_to(secret)
    summary = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert [s.source for s in summary.skipped] == ["leak.md"]
    texts = [c["text"] for cs in _chunks_by_source(runtime, "widget").values() for c in cs]
    assert not any("hunter2" in t for t in texts)


def test_binary_junk_named_md_fails_alone(runtime: Runtime, tmp_path: Path):
    folder = _write_folder(tmp_path / "widget-docs")
    (folder / "junk.md").write_bytes(b"\x00\x01\x02binary\x00" * 100)
    summary = ingestion.ingest_folder(runtime, LOCAL, "widget", folder)
    assert [f.source for f in summary.failed] == ["junk.md"]
    assert len(summary.added) == 3


def test_pages_sharing_a_name_across_folders_are_told_apart_by_their_folders_titles(
    runtime: Runtime, tmp_path: Path
):
    # Hugo sites repeat a page per language (languages/go/quickstart.md, titled "Quick start", and one for
    # Python): a question naming the language must find that language's page, which only its folder names.
    root = tmp_path / "site"
    for folder, language in (("go", "Go"), ("python", "Python")):
        (root / "languages" / folder).mkdir(parents=True)
        (root / "languages" / folder / "_index.md").write_text(f"---\ntitle: {language}\n---\n\nIntro.\n")
        (root / "languages" / folder / "quickstart.md").write_text(
            "---\ntitle: Quick start\n---\n\n### Prerequisites\n\nInstall the compiler plugins for the example.\n"
        )
    (root / "guides").mkdir()
    (root / "guides" / "deadlines.md").write_text(
        "---\ntitle: Deadlines\n---\n\nSet a deadline on each call.\n"
    )
    ingestion.ingest_folder(runtime, LOCAL, "site", root)
    sections = {
        s: sorted(c["section"] for c in chunks) for s, chunks in _chunks_by_source(runtime, "site").items()
    }
    assert sections["languages/go/quickstart.md"] == ["Go > Quick start > Prerequisites"]
    assert sections["languages/python/quickstart.md"] == ["Python > Quick start > Prerequisites"]
    assert sections["languages/go/_index.md"] == ["Go"]  # the top folder's title would be on every page
    assert sections["guides/deadlines.md"] == ["Deadlines"]  # a name no other page has needs no breadcrumb
    for mode in ("dense", "sparse", "hybrid"):
        hits = retrieval.search(
            runtime, LOCAL, "site", "Python quick start prerequisites", top_k=2, mode=mode
        )
        assert hits[0].source == "languages/python/quickstart.md", mode
