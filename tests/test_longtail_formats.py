"""The long tail parsed by unstructured (ingest/longtail.py): Excel workbooks, from a folder or uploaded,
ingest one section a sheet and are searchable; a hostile workbook is refused before unstructured opens it;
nothing is downloaded."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import openpyxl
from fastapi.testclient import TestClient

from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.runtime import Runtime
from tests.conftest import wait_for_job
from tests.document_builders import with_dtd, zip_bomb_docx

REPO = Path(__file__).resolve().parent.parent


def make_xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


INVENTORY = {
    "Spare parts": [
        ["Part", "Stock", "Shelf"],
        ["Rotor blade", 14, "B7"],
        ["Lithium battery pack", 3, "C2"],
    ],
    "Suppliers": [
        ["Supplier", "Contact"],
        ["Nordic Propellers Oy", "orders@nordicprop.example"],
    ],
}


def test_xlsx_sheets_become_sections_and_their_cells_are_searchable(runtime: Runtime, tmp_path: Path):
    folder = tmp_path / "sheets"
    folder.mkdir()
    (folder / "drone-inventory.xlsx").write_bytes(make_xlsx(INVENTORY))
    (folder / "notes.md").write_text("# Flight notes\n\nFly only in daylight and below 120 metres.\n")

    summary = ingestion.ingest_folder(runtime, LOCAL, "kb", folder)

    assert summary.failed == [] and sorted(summary.added) == ["drone-inventory.xlsx", "notes.md"]
    hit = retrieval.search(runtime, LOCAL, "kb", "which shelf holds the lithium battery pack", top_k=1)[0]
    assert hit.source == "drone-inventory.xlsx"
    assert hit.section == "Drone inventory > Spare parts"
    assert "Part: Lithium battery pack; Stock: 3; Shelf: C2" in hit.text  # a row says what its cells are
    hit = retrieval.search(runtime, LOCAL, "kb", "propeller supplier contact e-mail", top_k=1)[0]
    assert hit.source == "drone-inventory.xlsx" and hit.section == "Drone inventory > Suppliers"
    assert "orders@nordicprop.example" in hit.text

    again = ingestion.ingest_folder(runtime, LOCAL, "kb", folder)
    assert sorted(again.unchanged) == ["drone-inventory.xlsx", "notes.md"] and again.chunks_written == 0


def test_uploaded_xlsx_is_ingested_and_searchable(client: TestClient):
    client.post("/collections", json={"name": "kb"})
    upload = [("files", ("drone-inventory.xlsx", make_xlsx(INVENTORY)))]
    response = client.post("/collections/kb/documents", files=upload)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job"]["id"])
    assert job["status"] == "done" and job["summary"]["added"] == ["drone-inventory.xlsx"]
    listed = {d["source"]: d["file_type"] for d in client.get("/collections/kb/documents").json()}
    assert listed == {"drone-inventory.xlsx": "xlsx"}
    hits = client.post(
        "/collections/kb/search", json={"question": "how many rotor blades are in stock"}
    ).json()
    assert hits["results"][0]["source"] == "drone-inventory.xlsx"


def test_hostile_xlsx_is_refused_before_unstructured_opens_it(runtime: Runtime, tmp_path: Path):
    workbook = make_xlsx(INVENTORY)
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "bomb.xlsx").write_bytes(zip_bomb_docx(workbook, megabytes=2048))
    (folder / "bomb-lying.xlsx").write_bytes(zip_bomb_docx(workbook, megabytes=2048, declared=1000))
    (folder / "xxe.xlsx").write_bytes(
        with_dtd(workbook, "/etc/passwd", "Rotor blade", "xl/worksheets/sheet1.xml", "worksheet")
    )
    (folder / "report.xlsx").write_bytes(b"%PDF-1.7\n%%EOF\n")
    (folder / "good.xlsx").write_bytes(workbook)

    summary = ingestion.ingest_folder(runtime, LOCAL, "kb", folder)

    failed = {issue.source: issue.reason for issue in summary.failed}
    assert summary.added == ["good.xlsx"]
    assert failed["bomb.xlsx"].startswith("compression bomb: its parts claim to inflate to 2,14")
    assert "corrupt zip part 'word/media/image1.png'" in failed["bomb-lying.xlsx"]
    assert "declares a DTD" in failed["xxe.xlsx"]
    assert failed["report.xlsx"] == "not a .xlsx file: its content is a PDF"


# The network cannot be switched off for one process on demand, so this test stands in for it: the child
# process records and refuses every socket connect, DNS look-up and subprocess start (unstructured swallows
# the errors of its telemetry ping, so an attempt is caught by the record, not by a failure).
_OFFLINE_CHILD = """
import socket, subprocess, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:3])[:80])
    raise OSError("attempted while offline")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
subprocess.Popen.__init__ = refuse
from ingest.extract import extract_document
document = extract_document("inventory.xlsx", sys.stdin.buffer.read())
print([" > ".join(s.trail) for s in document.sections])
print("spacy model loaded:", any(name.startswith("en_core_web") for name in sys.modules))
print("network or subprocess attempts:", attempts)
"""


def test_xlsx_parses_offline_with_no_download_or_telemetry():
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_CHILD],
        input=make_xlsx(INVENTORY),
        capture_output=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    out = result.stdout.decode().splitlines()
    assert out == [
        "['Inventory > Spare parts', 'Inventory > Suppliers']",
        "spacy model loaded: False",
        "network or subprocess attempts: []",
    ]
