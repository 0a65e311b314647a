"""The CLI: documented shapes, inline use, and use while `ragsvc serve` owns the same data dir."""

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import RAGSVC, run_cli


@pytest.mark.slow
def test_cli_ingest_then_search_json_inline(sample_docs: Path):
    ingest = run_cli("ingest", str(sample_docs), "--collection", "docs", "--json")
    assert ingest.returncode == 0, ingest.stderr
    summary = json.loads(ingest.stdout)
    assert summary["files"] == len(summary["added"]) > 5
    assert summary["failed"] == []

    search = run_cli(
        "search", "--collection", "docs", "--top-k", "3", "--json", "How many dimensions are the vectors?"
    )
    assert search.returncode == 0, search.stderr
    results = json.loads(search.stdout)
    assert len(results) == 3
    assert set(results[0]) >= {"source", "section", "score", "text"}
    assert results[0]["source"] == "concepts/embedding-models.md"

    again = run_cli("ingest", str(sample_docs), "--collection", "docs", "--json")
    assert json.loads(again.stdout)["chunks_written"] == 0

    # A delete says what it removed, and that it matched nothing the second time
    deleted = run_cli("documents", "delete", "docs", "concepts/embedding-models.md")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith("deleted concepts/embedding-models.md from docs: ")
    assert int(deleted.stdout.split(": ")[1].split()[0]) > 0
    again = run_cli("documents", "delete", "docs", "concepts/embedding-models.md")
    assert again.returncode == 1
    assert "has no document 'concepts/embedding-models.md'" in again.stderr


@pytest.mark.slow
def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path):
    missing = run_cli("search", "--collection", "nope", "anything")
    assert missing.returncode == 1
    assert "collection 'nope' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    not_a_folder = run_cli("ingest", str(tmp_path / "absent"), "--collection", "x")
    assert not_a_folder.returncode == 2
    assert "is not a folder" in not_a_folder.stderr


@pytest.mark.slow
def test_cli_goes_through_the_server_that_owns_the_data_dir(
    running_server: str, sample_docs: Path, data_dir: Path
):
    ingest = run_cli("ingest", str(sample_docs), "--collection", "docs", "--json")
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["files"] > 5

    search = run_cli("search", "--collection", "docs", "--json", "How many dimensions are the vectors?")
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)[0]["source"] == "concepts/embedding-models.md"

    # Structured logs: JSON lines that record the search but never the question at the default level.
    (log_file,) = data_dir.parent.glob("server-*.log")
    events = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    assert any(e["message"] == "retrieved" and e["collection"] == "docs" for e in events)
    assert "How many dimensions" not in log_file.read_text()

    # The server sees what the CLI ingested through it: one owner, one store.
    assert httpx.get(f"{running_server}/collections/docs").json()["chunks"] > 50

    listed = run_cli("collections", "list", "--json")
    assert [c["name"] for c in json.loads(listed.stdout)] == ["docs"]

    deleted = run_cli("documents", "delete", "docs", "concepts/embedding-models.md")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith("deleted concepts/embedding-models.md from docs: ")
    again = run_cli("documents", "delete", "docs", "concepts/embedding-models.md")
    assert again.returncode == 1 and "has no document" in again.stderr

    ask = run_cli("ask", "--collection", "docs", "--json", "How many dimensions are the vectors?")
    assert ask.returncode == 1  # no LLM runs in this test: a clear error, not a traceback
    assert "unreachable" in ask.stderr and "Traceback" not in ask.stderr


@pytest.mark.slow
def test_a_second_server_on_the_same_data_dir_refuses_clearly(running_server: str):
    second = run_cli("serve", "--port", "1")
    assert second.returncode == 1
    assert "in use by another process" in second.stderr
    assert running_server in second.stderr
    assert "Traceback" not in second.stderr


@pytest.mark.slow
def test_cli_ingest_at_a_terminal_shows_chunks_and_failures_beside_the_bar(tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"page{i}.md").write_text(f"# Page {i}\n\nPage {i} explains topic {i} in some detail.\n")
    (folder / "junk.md").write_bytes(b"\x00\x01\x02binary\x00" * 100)
    terminal, stderr = os.openpty()  # the bar is drawn only for a terminal
    command = [RAGSVC, "ingest", str(folder), "-c", "kb"]
    env = {**os.environ, "COLUMNS": "200"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env) as process:
        os.close(stderr)
        drawn = b""
        while True:
            try:
                frame = os.read(terminal, 65536)
            except OSError:  # the command closed the terminal: it has ended
                break
            if not frame:
                break
            drawn += frame
        summary = process.stdout.read().decode() if process.stdout else ""
    os.close(terminal)
    assert process.returncode == 1  # a file failed
    assert "3 added" in summary and "1 failed" in summary
    shown = drawn.decode(errors="replace")
    assert "ingesting" in shown and "4/4" in shown
    assert "chunks written" in shown and "1 failed" in shown, shown
