"""Where a CLI command runs: in this process on the service layer when it can take the data dir, else
through the `ragsvc serve` that owns it, with the typed client. Both answer the same calls with the same
models and raise the same errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexes.engine import SearchMode
from indexes.errors import StoreBusy
from ingest.embed import EmbeddingSpec
from ingest.progress import Progress
from ragsvc.answer import Answer, Turn
from ragsvc.client import Client
from ragsvc.jobs.records import Job
from ragsvc.owner import DataDirLock, owner_token, running_server
from ragsvc.service import answers, collections, documents, ingestion, jobs, reindex, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.collections import CollectionInfo
from ragsvc.service.documents import DocumentDeleted
from ragsvc.service.factory import open_runtime
from ragsvc.service.ingestion import IngestResult
from ragsvc.service.reindex import ReindexSummary
from ragsvc.service.retrieval import Source
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings


class Inline:
    """The service layer in this process, as the local user: `ragsvc.client.Client`'s calls, one each."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def close(self) -> None:
        self.runtime.close()

    def list_collections(self) -> list[CollectionInfo]:
        return collections.list_collections(self.runtime, LOCAL)

    def describe(self, name: str) -> CollectionInfo:
        return collections.describe(self.runtime, LOCAL, name)

    def delete_collection(self, name: str) -> None:
        collections.delete_collection(self.runtime, LOCAL, name)

    def delete_document(self, name: str, source: str) -> DocumentDeleted:
        return documents.delete_document(self.runtime, LOCAL, name, source)

    def create_collection(
        self, name: str, *, docs_base_url: str | None = None, embedding: EmbeddingSpec | None = None
    ) -> CollectionInfo:
        return ingestion.create_collection(
            self.runtime, LOCAL, name, docs_base_url=docs_base_url, embedding=embedding
        )

    def ingest_folder(
        self,
        name: str,
        path: Path | str,
        *,
        docs_base_url: str | None = None,
        embedding: EmbeddingSpec | None = None,
        build: bool = True,
        progress: Progress | None = None,
    ) -> IngestResult:
        return ingestion.ingest_folder(
            self.runtime,
            LOCAL,
            name,
            path,
            docs_base_url=docs_base_url,
            embedding=embedding,
            build=build,
            progress=progress,
        )

    def reindex(
        self,
        name: str,
        embedding: EmbeddingSpec,
        *,
        keep_old: bool = False,
        build: bool = True,
        progress: Progress | None = None,
    ) -> ReindexSummary:
        return reindex.reindex(
            self.runtime, LOCAL, name, embedding, keep_old=keep_old, build=build, progress=progress
        )

    def search(
        self,
        name: str,
        question: str,
        *,
        top_k: int | None = None,
        mode: SearchMode | None = None,
        source_prefix: str | None = None,
    ) -> list[Source]:
        return retrieval.search(
            self.runtime, LOCAL, name, question, top_k=top_k, mode=mode, source_prefix=source_prefix
        )

    def ask(
        self,
        name: str,
        question: str,
        *,
        history: list[Turn] | None = None,
        top_k: int | None = None,
        mode: SearchMode | None = None,
    ) -> Answer:
        return answers.ask(self.runtime, LOCAL, name, question, history=history, top_k=top_k, mode=mode)

    def get_job(self, job_id: str) -> Job:
        return jobs.get_job(self.runtime, LOCAL, job_id)

    def list_jobs(self, collection: str | None = None) -> list[Job]:
        return jobs.list_jobs(self.runtime, LOCAL, collection)


Backend = Inline | Client


@contextmanager
def open_backend(settings: Settings) -> Iterator[Backend]:
    """Inline if this process can take the data dir, else through the server that holds it."""
    data_dir = Path(settings.data_dir)
    lock = DataDirLock(data_dir)
    backend: Backend
    if lock.try_acquire():
        backend = Inline(open_runtime(settings, lock))
    else:
        url = running_server(data_dir)
        if url is None:
            raise StoreBusy(
                f"data dir {settings.data_dir} is in use by another ragsvc command; try again when it ends"
            )
        backend = Client(url, owner_token=owner_token(data_dir))
    try:
        yield backend
    finally:
        backend.close()
