"""Formats beyond Markdown and reST: HTML, PDF, DOCX, PPTX, ODT, e-mail, CSV and non-UTF-8 text, each
parsed into headed sections, ingested from a folder and from uploads, and searchable afterwards."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from ingest.extract import extract_document
from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.runtime import Runtime
from tests.conftest import wait_for_job
from tests.document_builders import make_docx, make_eml, make_odt, make_pdf, make_pptx

SPHINX_PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Installing &mdash; Widget 3.1 documentation</title>
<style>body { color: red }</style><script>var secretTracker = 1;</script></head>
<body>
<nav class="sidebar"><a href="index.html">Home</a> Table of contents</nav>
<div role="main" class="document">
<section id="installing">
<h1>Installing<a class="headerlink" href="#installing" title="Link to this heading">\xc2\xb6</a></h1>
<p>Widget runs on <em>Linux</em> and macOS.</p>
<section id="from-pypi">
<h2>From PyPI<a class="headerlink" href="#from-pypi">\xc2\xb6</a></h2>
<p>Install it with pip:</p>
<pre>pip install widget
widget --version</pre>
<table><thead><tr><th>Platform</th><th>Command</th></tr></thead>
<tbody><tr><td>Linux</td><td>apt install widget</td></tr></tbody></table>
<h3 id="extras">Optional extras</h3>
<ul><li>gpu: CUDA kernels</li><li>docs: the manual</li></ul>
</section>
</section>
</div>
<footer>Copyright 2026 Widget Inc.</footer>
</body></html>
"""


def _sections(document) -> list[tuple[str, str]]:
    return [(" > ".join(s.trail), s.anchor) for s in document.sections]


def test_html_headings_become_sections_and_page_furniture_is_dropped():
    document = extract_document("guide/install.html", SPHINX_PAGE)
    assert document.title == "Installing"
    assert _sections(document) == [
        ("Installing", ""),
        ("Installing > From PyPI", "from-pypi"),
        ("Installing > From PyPI > Optional extras", "extras"),
    ]
    text = "\n".join(s.text for s in document.sections)
    assert "Widget runs on Linux and macOS." in text
    assert "pip install widget\nwidget --version" in text  # code keeps its lines
    assert "Platform: Linux; Command: apt install widget" in text  # a table row says what its values are
    assert "- gpu: CUDA kernels" in text
    for noise in ("secretTracker", "color: red", "Table of contents", "Copyright", "\u00b6"):
        assert noise not in text


def test_docx_heading_styles_become_the_section_trail():
    raw = make_docx(
        [
            ("h1", "Calibration guide"),
            ("p", "Calibrate the widget before first use."),
            ("h2", "Depth sensor"),
            ("p", "Run widgetctl calibrate --depth 7."),
            ("li", "Keep the sensor clean."),
            ("table", "Mode,Depth;fast,3;precise,7"),
            ("h2", "Temperature"),
            ("p", "Let it warm up for ten minutes."),
        ],
        title="Widget calibration",
    )
    document = extract_document("manual.docx", raw)
    assert document.title == "Widget calibration"
    assert [" > ".join(s.trail) for s in document.sections] == [
        "Widget calibration > Calibration guide",
        "Widget calibration > Calibration guide > Depth sensor",
        "Widget calibration > Calibration guide > Temperature",
    ]
    depth = document.sections[1].text
    assert "Run widgetctl calibrate --depth 7." in depth
    assert "- Keep the sensor clean." in depth
    assert "Mode: precise; Depth: 7" in depth


def test_pptx_slides_become_sections_with_titles_and_notes():
    raw = make_pptx(
        [
            (
                "Quarterly roadmap",
                ["Ship the turbo flag", "Retire the legacy API"],
                "Mention the beta users.",
            ),
            ("Risks", ["Supply of depth sensors"], ""),
        ]
    )
    document = extract_document("roadmap.pptx", raw)
    assert document.title == "Quarterly roadmap"
    assert [(s.trail, s.anchor) for s in document.sections] == [
        (["Quarterly roadmap"], "slide-1"),
        (["Quarterly roadmap", "Risks"], "slide-2"),
    ]
    assert "Ship the turbo flag" in document.sections[0].text
    assert "Notes: Mention the beta users." in document.sections[0].text


def test_pdf_text_layer_is_read_page_by_page_under_its_bookmarks():
    raw = make_pdf(
        [
            ["Widget field manual", "Read this before use."],
            ["Charge the battery for 4 hours (overnight is fine)."],
        ],
        title="Widget field manual",
        bookmarks=[("Introduction", 0), ("Charging", 1)],
    )
    document = extract_document("field-manual.pdf", raw)
    assert document.title == "Widget field manual"
    assert [(s.trail, s.anchor) for s in document.sections] == [
        (["Widget field manual", "Introduction"], "page=1"),
        (["Widget field manual", "Charging"], "page=2"),
    ]
    assert "Charge the battery for 4 hours (overnight is fine)." in document.sections[1].text


def test_odt_outline_levels_become_sections():
    raw = make_odt(
        '<text:h text:outline-level="1">Field guide</text:h><text:p>Carry spare sensors.</text:p>'
        '<text:h text:outline-level="2">Storage</text:h><text:p>Store the widget<text:s/>below 30 C.</text:p>'
        "<text:list><text:list-item><text:p>Remove the battery.</text:p></text:list-item></text:list>"
    )
    document = extract_document("guide.odt", raw)
    assert document.title == "Field guide"
    assert [s.trail for s in document.sections] == [["Field guide"], ["Field guide", "Storage"]]
    assert "Store the widget below 30 C." in document.sections[1].text
    assert "- Remove the battery." in document.sections[1].text


def test_email_body_and_text_attachments_are_sections():
    raw = make_eml(
        "Outage on Friday",
        "The cluster is down on Friday from 8 to 10 for a kernel upgrade.",
        [("runbook.md", b"Drain the nodes first, then reboot them one rack at a time.", "text/markdown")],
    )
    document = extract_document("outage.eml", raw)
    assert document.title == "Outage on Friday"
    assert [s.trail for s in document.sections] == [
        ["Outage on Friday"],
        ["Outage on Friday", "Attachment: runbook.md"],
    ]
    assert "From: Ada <ada@example.org>" in document.sections[0].text
    assert "kernel upgrade" in document.sections[0].text
    assert "one rack at a time" in document.sections[1].text


def test_csv_rows_keep_their_column_names():
    document = extract_document("ports.csv", b"service;port;protocol\nssh;22;tcp\ndns;53;udp\n")
    assert document.sections[0].text.split("\n\n") == [
        "service: ssh; port: 22; protocol: tcp",
        "service: dns; port: 53; protocol: udp",
    ]


def test_text_in_other_encodings_is_decoded_not_garbled():
    latin = (
        "# Café menu\n\nThe crème brûlée costs 5 € and the pâté costs 4 €. "
        "Déjà vu: the garçon serves the entrée à la carte, naïve façade included.\n"
    ).encode("cp1252")
    document = extract_document("menu.md", latin)
    assert document.title == "Café menu"
    assert "crème brûlée costs 5 €" in document.sections[0].text
    assert document.metadata["encoding"] in ("cp1252", "windows-1252")

    utf16 = "# Überblick\n\nGrüße aus München.\n".encode("utf-16")
    assert extract_document("de.md", utf16).sections[0].text == "Grüße aus München."


def _write_mixed_folder(root: Path) -> Path:
    root.mkdir()
    (root / "install.html").write_bytes(SPHINX_PAGE)
    (root / "manual.docx").write_bytes(
        make_docx([("h1", "Calibration"), ("p", "Calibrate the widget with widgetctl calibrate --depth 7.")])
    )
    (root / "roadmap.pptx").write_bytes(make_pptx([("Roadmap", ["The turbo flag ships in March."], "")]))
    (root / "field-manual.pdf").write_bytes(
        make_pdf([["Field manual"], ["Charge the battery for 4 hours before the first flight."]])
    )
    (root / "guide.odt").write_bytes(
        make_odt(
            '<text:h text:outline-level="1">Storage</text:h><text:p>Store the drone below 30 C.</text:p>'
        )
    )
    (root / "outage.eml").write_bytes(
        make_eml("Outage", "The cluster is down on Friday for a kernel upgrade.")
    )
    (root / "ports.csv").write_text("service,port\nssh,22\nprometheus exporter,9100\n")
    (root / "menu.md").write_bytes(
        "# Menu\n\nThe crème brûlée is the best dessert in town, déjà vu.\n".encode("cp1252")
    )
    return root


def test_a_folder_of_mixed_formats_ingests_and_each_is_searchable(runtime: Runtime, tmp_path: Path):
    folder = _write_mixed_folder(tmp_path / "mixed")
    summary = ingestion.ingest_folder(
        runtime, LOCAL, "mixed", folder, docs_base_url="https://docs.example.org/"
    )
    assert summary.failed == [] and summary.skipped == []
    assert sorted(summary.added) == [
        "field-manual.pdf",
        "guide.odt",
        "install.html",
        "manual.docx",
        "menu.md",
        "outage.eml",
        "ports.csv",
        "roadmap.pptx",
    ]
    questions = {
        "how long should I charge the battery": "field-manual.pdf",
        "how do I calibrate the widget depth": "manual.docx",
        "when does the turbo flag ship": "roadmap.pptx",
        "at what temperature should the drone be stored": "guide.odt",
        "why is the cluster down on Friday": "outage.eml",
        "which port does the prometheus exporter use": "ports.csv",
        "what is the best dessert": "menu.md",
        "how do I install widget from PyPI with pip": "install.html",
    }
    for question, source in questions.items():
        hits = retrieval.search(runtime, LOCAL, "mixed", question, top_k=3)
        assert hits[0].source == source, (question, [h.source for h in hits])
    pdf_hit = retrieval.search(runtime, LOCAL, "mixed", "charge the battery", top_k=1)[0]
    assert pdf_hit.link == "https://docs.example.org/field-manual.pdf#page=2"
    html_hit = retrieval.search(runtime, LOCAL, "mixed", "install widget from PyPI with pip", top_k=1)[0]
    assert html_hit.link == "https://docs.example.org/install.html#from-pypi"
    assert "crème brûlée" in retrieval.search(runtime, LOCAL, "mixed", "best dessert", top_k=1)[0].text

    again = ingestion.ingest_folder(runtime, LOCAL, "mixed", folder)
    assert len(again.unchanged) == 8 and again.chunks_written == 0


def test_uploaded_docx_and_pdf_are_ingested_and_searchable(client: TestClient):
    client.post("/collections", json={"name": "kb"})
    files = {
        "manual.docx": make_docx(
            [("h1", "Calibration"), ("p", "Calibrate with widgetctl calibrate --depth 7.")]
        ),
        "field-manual.pdf": make_pdf([["Charge the battery for 4 hours before the first flight."]]),
    }
    response = client.post("/collections/kb/documents", files=[("files", (n, b)) for n, b in files.items()])
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job"]["id"])
    assert job["status"] == "done" and sorted(job["summary"]["added"]) == ["field-manual.pdf", "manual.docx"]
    listed = {d["source"]: d["file_type"] for d in client.get("/collections/kb/documents").json()}
    assert listed == {"field-manual.pdf": "pdf", "manual.docx": "docx"}
    hits = client.post("/collections/kb/search", json={"question": "how long to charge the battery"}).json()
    assert hits["results"][0]["source"] == "field-manual.pdf"


def test_a_guide_page_outranks_the_changelog_that_names_the_same_feature(runtime: Runtime, tmp_path: Path):
    folder = tmp_path / "site"
    (folder / "tutorial").mkdir(parents=True)
    (folder / "tutorial" / "testing.md").write_text(
        "# Testing\n\nUse TestClient to call your app in tests. TestClient needs the httpx package.\n"
    )
    (folder / "release-notes.md").write_text(
        "# Release Notes\n\n## 0.87.0\n\nTestClient now uses the httpx package: install httpx to use TestClient.\n"
        "\n## 0.88.0\n\nThe widget cache drops stale entries after an upgrade.\n"
    )
    ingestion.ingest_folder(runtime, LOCAL, "site", folder)
    hits = retrieval.search(runtime, LOCAL, "site", "TestClient httpx package install", top_k=2)
    assert [h.source for h in hits] == ["tutorial/testing.md", "release-notes.md"]
    # A question about changes is what a changelog is for: it keeps its place.
    changes = retrieval.search(
        runtime, LOCAL, "site", "what changed about TestClient and httpx in 0.87?", top_k=2
    )
    assert changes[0].source == "release-notes.md"
