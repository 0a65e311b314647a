"""Bad and hostile input: each file is reported with its reason and skipped, within bounded time and memory;
nothing outside the folder is read or written; the rest ingests; nothing already stored is lost."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.extract import ExtractionFailed, check_zip, extract_document
from ingest.formats import parse_docx, parse_odt
from ingest.progress import IngestProgress
from ingest.sandbox import Extractor
from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings
from tests.conftest import run_cli
from tests.document_builders import make_docx, make_eml, make_odt, make_pdf, with_dtd, zip_bomb_docx

SECRET = "the launch code is 0000-hunter2"
GOOD = {
    "guide.md": "# Guide\n\nCalibrate the widget with widgetctl calibrate --depth 7.\n",
    "usage.rst": "Usage\n=====\n\nRun ``widget serve`` to start the dashboard.\n",
}


def _all_files(root: Path, exclude: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_relative_to(exclude)}


def _texts(runtime: Runtime, collection: str) -> list[str]:
    record = runtime.registry.get(collection)
    return [
        f"{hit.payload['section']}\n{hit.payload['text']}"
        for hit in runtime.engine.scroll(record.live_index, batch=1024)
    ]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file outside the ingested folder that no chunk may ever contain."""
    secret = tmp_path / "outside" / "secret.md"
    secret.parent.mkdir()
    secret.write_text(f"# Secret\n\n{SECRET}\n")
    return secret


@pytest.fixture
def hostile_folder(tmp_path: Path, secret_file: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in GOOD.items():
        (folder / name).write_text(text)
    manual = make_docx([("h1", "Manual"), ("p", "XXE_MARKER and the widget manual.")])

    (folder / "corrupt.pdf").write_bytes(
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\n%%garbage\x00\xff" * 20
    )
    (folder / "junk.md").write_bytes(bytes(range(256)) * 40)
    (folder / "empty.md").write_bytes(b"")
    (folder / "huge.txt").write_text("big " * 1_000_000)  # 4 MB against the 3 MB limit of this test
    os.mkfifo(folder / "pipe.md")  # a reader that opened it would wait forever for a writer
    (folder / "leak.md").symlink_to(secret_file)
    (folder / "loop-a.md").symlink_to(folder / "loop-b.md")
    (folder / "loop-b.md").symlink_to(folder / "loop-a.md")
    (folder / "dangling.md").symlink_to(folder / "nowhere.md")
    (folder / "up").symlink_to(secret_file.parent, target_is_directory=True)
    os.link(secret_file, folder / "hardlink.md")
    (folder / "bomb.docx").write_bytes(zip_bomb_docx(manual, megabytes=2048))
    (folder / "bomb-renamed.pptx").write_bytes(zip_bomb_docx(manual, megabytes=2048))
    (folder / "bomb-renamed.md").write_bytes(zip_bomb_docx(manual, megabytes=2048))
    (folder / "bomb-lying.docx").write_bytes(zip_bomb_docx(manual, megabytes=2048, declared=1000))
    (folder / "xxe.docx").write_bytes(with_dtd(manual, str(secret_file), "XXE_MARKER"))
    (folder / "mail.eml").write_bytes(
        make_eml(
            "Maintenance window",
            "The widget dashboard is offline on Sunday morning.",
            [
                ("../../x", b"attacker payload", "application/octet-stream"),
                ("../../notes.txt", b"Reboot rack 4.", "text/plain"),
            ],
        )
    )
    return folder


def test_hostile_files_are_reported_and_skipped_while_the_rest_ingests(
    runtime: Runtime, hostile_folder: Path, tmp_path: Path
):
    runtime.settings.max_file_bytes = 3_000_000
    before = _all_files(tmp_path, exclude=tmp_path / "data")
    summary = ingestion.ingest_folder(runtime, LOCAL, "kb", hostile_folder)

    failed = {issue.source: issue.reason for issue in summary.failed}
    skipped = {issue.source: issue.reason for issue in summary.skipped}
    assert sorted(summary.added) == ["guide.md", "mail.eml", "usage.rst"]
    assert failed.keys() == {
        "corrupt.pdf",
        "junk.md",
        "bomb.docx",
        "bomb-renamed.pptx",
        "bomb-renamed.md",
        "bomb-lying.docx",
        "xxe.docx",
    }
    assert "corrupt PDF" in failed["corrupt.pdf"]
    assert "binary content" in failed["junk.md"]
    assert failed["bomb.docx"].startswith("compression bomb: its parts claim to inflate to 2,14")
    assert "compression bomb" in failed["bomb-renamed.pptx"]
    assert failed["bomb-renamed.md"] == "not a .md file: its content is a zip archive"
    assert "corrupt zip part 'word/media/image1.png'" in failed["bomb-lying.docx"]
    assert "declares a DTD" in failed["xxe.docx"]
    assert skipped == {
        "empty.md": "empty file",
        "huge.txt": "4,000,000 bytes: over the size limit of 3,000,000 (RAGSVC_MAX_FILE_BYTES)",
        "pipe.md": "not a regular file (a named pipe): not read",
        "leak.md": "symbolic link to a file outside the folder: not followed",
        "loop-a.md": "symbolic link loop (file): not followed",
        "loop-b.md": "symbolic link loop (file): not followed",
        "dangling.md": "dangling symbolic link (file): not followed",
        "up": "symbolic link to a folder outside the folder: not followed",
        "hardlink.md": "hard link to a file that also has a name outside the folder: not read",
    }

    texts = _texts(runtime, "kb")
    assert not any("hunter2" in text for text in texts)
    assert (
        retrieval.search(runtime, LOCAL, "kb", "how do I calibrate the widget", top_k=1)[0].source
        == "guide.md"
    )
    mail = [t for t in texts if "Maintenance window" in t]
    assert any("offline on Sunday" in t for t in mail) and any("Reboot rack 4." in t for t in mail)
    assert any("Attachments not indexed: x (application/octet-stream)" in t for t in mail)
    # The attachment named ../../x was never written, there or anywhere else.
    assert _all_files(tmp_path, exclude=tmp_path / "data") == before
    assert not (tmp_path.parent / "x").exists() and not Path("x").exists()


def test_a_file_that_turns_bad_keeps_its_stored_version(runtime: Runtime, tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in GOOD.items():
        (folder / name).write_text(text)
    (folder / "manual.docx").write_bytes(
        make_docx([("h1", "Manual"), ("p", "Press the turbo button twice.")])
    )
    (folder / "big.md").write_text("# Big\n\nThe big page talks about sensors.\n")
    assert len(ingestion.ingest_folder(runtime, LOCAL, "kb", folder).added) == 4

    (folder / "manual.docx").write_bytes(b"PK\x03\x04 truncated in transfer")
    (folder / "big.md").write_text("# Big\n\n" + "sensor " * 200_000)
    runtime.settings.max_file_bytes = 1_000_000
    summary = ingestion.ingest_folder(runtime, LOCAL, "kb", folder)
    assert [f.source for f in summary.failed] == ["manual.docx"]
    assert [s.source for s in summary.skipped] == ["big.md"]
    assert summary.removed == [] and sorted(summary.unchanged) == ["guide.md", "usage.rst"]
    assert (
        retrieval.search(runtime, LOCAL, "kb", "how do I use the turbo button", top_k=1)[0].source
        == "manual.docx"
    )
    assert any("talks about sensors" in t for t in _texts(runtime, "kb"))


def test_xml_external_entities_are_never_resolved(secret_file: Path):
    manual = make_docx([("h1", "Manual"), ("p", "XXE_MARKER here.")])
    hostile = with_dtd(manual, str(secret_file), "XXE_MARKER")
    with pytest.raises(ExtractionFailed, match="declares a DTD"):
        extract_document("xxe.docx", hostile)
    # Behind that check, the parsers themselves do not resolve entities either.
    parsed = parse_docx("xxe.docx", hostile)
    assert "hunter2" not in repr(parsed)
    odt = make_odt(
        "<text:p>&xxe;</text:p>",
        doctype=f'<!DOCTYPE office:document-content [<!ENTITY xxe SYSTEM "file://{secret_file}">]>',
    )
    with pytest.raises(ExtractionFailed, match="declares a DTD"):
        extract_document("xxe.odt", odt)
    assert "hunter2" not in repr(parse_odt("xxe.odt", odt))


def test_zip_bombs_are_refused_before_they_inflate():
    manual = make_docx([("h1", "Manual"), ("p", "Text.")])
    with pytest.raises(ExtractionFailed, match="claim to inflate to 4,29"):
        check_zip(zip_bomb_docx(manual, megabytes=16, declared=0xFFFFFFFE))
    with pytest.raises(ExtractionFailed, match="compression bomb"):
        check_zip(zip_bomb_docx(manual, megabytes=300))
    # Sizes that understate the truth: inflation stops at the declared size and the part is refused.
    with pytest.raises(ExtractionFailed, match="corrupt zip part"):
        check_zip(zip_bomb_docx(manual, megabytes=300, declared=10))
    check_zip(manual)  # an honest DOCX passes


def test_a_parser_that_runs_too_long_or_too_big_is_stopped_and_replaced():
    long_page = ("# Page\n\n" + "A line of text with *emphasis* and `code`.\n" * 400_000).encode()
    with Extractor(timeout=0.2) as extractor:
        with pytest.raises(ExtractionFailed, match="took longer than 0.2 s"):
            extractor.extract("long.md", long_page)
        assert extractor.extract("ok.md", b"# Fine\n\nSmall page.").title == "Fine"
        assert extractor.started == 2
    with Extractor(memory_bytes=400 << 20) as extractor:
        # Five million rows held as Python lists need well over 400 MiB.
        with pytest.raises(ExtractionFailed, match="ran out of memory"):
            extractor.extract("big.csv", b"x,y\n" * 5_000_000)
        assert extractor.extract("ok.md", b"# Fine\n\nSmall page.").title == "Fine"
        assert extractor.started == 2


def test_unreadable_or_swapped_files_fail_alone(runtime: Runtime, tmp_path: Path, secret_file: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    names = [f"page-{i:02d}.md" for i in range(40)]
    for name in names:
        (folder / name).write_text(f"# {name}\n\nPage {name} text.\n")
    locked = folder / "locked.md"
    locked.write_text("# Locked\n\nNo one may read this.\n")
    locked.chmod(0)

    def change_the_folder(progress: IngestProgress) -> None:
        # Files are listed first, then read batch by batch: change two of the last batch in between.
        if progress.files_done < (progress.files_total or 0):
            (folder / "page-39.md").unlink(missing_ok=True)
            (folder / "page-38.md").unlink(missing_ok=True)
            os.link(secret_file, folder / "page-38.md")

    summary = ingestion.ingest_folder(runtime, LOCAL, "kb", folder, progress=change_the_folder)
    failed = {issue.source: issue.reason for issue in summary.failed}
    assert failed["page-39.md"] == "unreadable: No such file or directory"
    assert failed["page-38.md"] == "replaced by another file while being ingested: not read"
    if os.geteuid() != 0:  # root reads a mode-000 file; elsewhere it must fail with its reason
        assert failed["locked.md"] == "unreadable: Permission denied"
    assert len(summary.added) == 38 + (os.geteuid() == 0)
    assert not any("hunter2" in text for text in _texts(runtime, "kb"))


def test_hostile_uploads_fail_in_the_job_and_the_rest_ingests(
    client: TestClient, settings: Settings, data_dir: Path
):
    client.post("/collections", json={"name": "kb"})
    manual = make_docx([("h1", "Manual"), ("p", "Calibrate with widgetctl calibrate --depth 7.")])
    files = {
        "bomb.docx": zip_bomb_docx(manual, megabytes=2048),
        "report.pdf": b"%PDF-1.4 this is not really a PDF",
        "../../mail.eml": make_eml(
            "Hello", "Body text.", [("../../../x", b"payload", "application/octet-stream")]
        ),
        "manual.docx": manual,
        "scan.pdf": make_pdf([[]]),
    }
    response = client.post("/collections/kb/documents", files=[("files", (n, b)) for n, b in files.items()])
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    deadline = time.monotonic() + 300
    while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/jobs/{job['id']}").json()
    assert job["status"] == "done"
    summary = job["summary"]
    assert sorted(summary["added"]) == ["mail.eml", "manual.docx"]
    failed = {f["source"]: f["reason"] for f in summary["failed"]}
    assert "compression bomb" in failed["bomb.docx"]
    assert "corrupt PDF" in failed["report.pdf"]
    assert failed["scan.pdf"] == "PDF without a text layer (scanned pages?): OCR is not supported"
    assert sorted(p.name for p in (data_dir / "uploads" / "kb").iterdir()) == sorted(
        ["bomb.docx", "report.pdf", "mail.eml", "manual.docx", "scan.pdf"]
    )
    assert not (data_dir / "x").exists() and not (data_dir.parent / "x").exists()
    listed = {d["source"]: (d["status"], d["reason"]) for d in client.get("/collections/kb/documents").json()}
    assert listed["manual.docx"] == ("indexed", None)
    assert listed["bomb.docx"] == ("failed", failed["bomb.docx"])


def test_cli_reports_hostile_file_names_as_text(tmp_path: Path, secret_file: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text(GOOD["guide.md"])
    (folder / "[red]x.md").symlink_to(secret_file)  # read as markup, the name would lose its brackets
    result = run_cli("ingest", str(folder), "--collection", "kb")
    assert result.returncode == 0, result.stderr
    assert "skipped [red]x.md: symbolic link to a file outside the folder: not followed" in result.stdout
