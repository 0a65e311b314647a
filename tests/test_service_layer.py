"""The service layer's contract: every entry point checks the caller's scope before it touches data, a
collection the caller may not read is exactly a missing one, and the front ends reach data only through it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from indexes.errors import CollectionNotFound, RagsvcError
from ingest.embed import MINILM, EmbeddingSpec
from ragsvc.cli_backend import Inline
from ragsvc.client import Client
from ragsvc.jobs.records import JobNotFound
from ragsvc.service import answers, collections, documents, ingestion, jobs, retrieval
from ragsvc.service import reindex as reindexing
from ragsvc.service.access import LOCAL, AccessDenied, Grant, Principal, Right
from ragsvc.service.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
STRANGER = Principal(user="stranger", grants=(Grant(collection="other", right=Right.admin),))
READER = Principal(user="reader", grants=(Grant(collection="kb", right=Right.read),))


@pytest.fixture
def kb(runtime: Runtime, tmp_path: Path) -> Runtime:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "guide.md").write_text("# Guide\n\nThe widget is calibrated with widgetctl calibrate.\n")
    ingestion.ingest_folder(runtime, LOCAL, "kb", folder)
    return runtime


def _error(call) -> tuple[type, str, str]:  # noqa: ANN001 - any zero-argument call
    with pytest.raises(RagsvcError) as raised:
        call()
    return type(raised.value), raised.value.code, raised.value.message


def test_a_collection_the_caller_may_not_read_answers_as_a_missing_one(kb: Runtime, tmp_path: Path):
    calls = {
        "describe": lambda name, who: collections.describe(kb, who, name),
        "search": lambda name, who: retrieval.search(kb, who, name, "widget"),
        "ask": lambda name, who: answers.ask(kb, who, name, "widget?"),
        "documents": lambda name, who: documents.list_documents(kb, who, name),
        "document": lambda name, who: documents.get_document(kb, who, name, "guide.md"),
        "delete": lambda name, who: collections.delete_collection(kb, who, name),
        "reindex": lambda name, who: reindexing.reindex(
            kb, who, name, EmbeddingSpec(model=f"{MINILM}#torch")
        ),
    }
    for operation, call in calls.items():
        hidden = _error(lambda call=call: call("kb", STRANGER))
        missing = _error(lambda call=call: call("absent", LOCAL))
        assert hidden[:2] == missing[:2] == (CollectionNotFound, "collection_not_found"), operation
        assert hidden[2] == missing[2].replace("absent", "kb"), operation
    # Ingesting makes a missing collection, but never reaches one the caller may not read.
    hidden = _error(lambda: ingestion.ingest_folder(kb, STRANGER, "kb", tmp_path / "kb"))
    assert hidden == (CollectionNotFound, "collection_not_found", "collection 'kb' does not exist")
    assert collections.list_collections(kb, STRANGER) == []
    assert [c.name for c in collections.list_collections(kb, LOCAL)] == ["kb"]
    assert kb.registry.find("kb") is not None  # nothing was deleted or changed by the stranger


def test_a_reader_may_search_but_not_change_the_collection(kb: Runtime, tmp_path: Path):
    assert retrieval.search(kb, READER, "kb", "how is the widget calibrated")[0].source == "guide.md"
    for change in (
        lambda: collections.delete_collection(kb, READER, "kb"),
        lambda: ingestion.ingest_folder(kb, READER, "kb", tmp_path / "kb"),
        lambda: documents.delete_document(kb, READER, "kb", "guide.md"),
        lambda: ingestion.build_now(kb, READER, "kb"),
    ):
        assert _error(change)[:2] == (AccessDenied, "forbidden")
    assert [d.source for d in documents.list_documents(kb, READER, "kb")] == ["guide.md"]


def test_jobs_of_a_collection_the_caller_may_not_read_do_not_exist_for_them(kb: Runtime, tmp_path: Path):
    job = ingestion.submit_ingest(kb, LOCAL, "kb", tmp_path / "kb")
    assert jobs.get_job(kb, READER, job.id).id == job.id
    assert kb.jobs.store.get(job.id).principal == LOCAL  # the job runs with its submitter's rights
    with pytest.raises(JobNotFound):
        jobs.get_job(kb, STRANGER, job.id)
    assert jobs.list_jobs(kb, STRANGER) == [] and [j.id for j in jobs.list_jobs(kb, READER)] == [job.id]


def test_inline_and_the_http_client_offer_the_same_calls():
    def calls(cls: type) -> dict[str, inspect.Signature]:
        return {
            n: inspect.signature(f) for n, f in inspect.getmembers(cls, inspect.isfunction) if n[0] != "_"
        }

    assert calls(Inline).keys() == calls(Client).keys()
    for name, signature in calls(Inline).items():
        assert str(signature) == str(calls(Client)[name]), name


def test_routes_reach_data_only_through_service_calls():
    """No route module touches the runtime's parts itself: each hands the runtime to a service call."""
    routes = [p for p in sorted((REPO / "ragsvc" / "api").glob("*.py")) if "APIRouter(" in p.read_text()]
    assert len(routes) >= 4
    for path in routes:
        tree = ast.parse(path.read_text())
        touched = [
            f"{path.name}:{node.lineno} runtime.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "runtime"
        ]
        assert touched == []
