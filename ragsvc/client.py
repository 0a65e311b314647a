"""A typed client of ragsvc's REST API: the service layer's calls over HTTP, returning its models and raising
the ragsvc errors the server raised. The CLI uses it while `ragsvc serve` owns the data dir."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from indexes.engine import SearchMode
from indexes.errors import RagsvcError, StoreBusy
from ingest.embed import EmbeddingSpec
from ingest.progress import Progress
from ragsvc.answer import Answer, Turn
from ragsvc.jobs.records import Job
from ragsvc.owner import OWNER_TOKEN_HEADER
from ragsvc.service.collections import CollectionInfo
from ragsvc.service.documents import DocumentDeleted
from ragsvc.service.ingestion import IngestResult
from ragsvc.service.reindex import ReindexSummary
from ragsvc.service.retrieval import Source

# How often a followed job is asked where it stands.
POLL_SECONDS = 0.3

Model = TypeVar("Model")


class Client:
    def __init__(
        self,
        url: str,
        *,
        http: httpx.Client | None = None,
        key: str | None = None,
        owner_token: str | None = None,
    ) -> None:
        """`key`: an API key; `owner_token`: the data dir's owner token, for the CLI on the server's own
        machine (ragsvc.owner)."""
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if owner_token:
            headers[OWNER_TOKEN_HEADER] = owner_token
        self.http = http or httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(30.0, read=None), headers=headers
        )

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise StoreBusy(f"the ragsvc server at {self.url} does not answer: {exc}") from exc
        if response.status_code >= 400:
            try:
                problem = response.json()["error"]
                code, message = str(problem["code"]), str(problem["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", f"{response.status_code}: {response.text[:200]}"
            raise error_from(code, message)
        return response.json() if response.content else None

    def _get(self, kind: type[Model], method: str, path: str, body: dict[str, Any] | None = None) -> Model:
        return TypeAdapter(kind).validate_python(self._call(method, path, body))

    def _follow(self, job: Job, progress: Progress | None) -> dict[str, Any]:
        """Poll the job until it ends; its summary, or the error it failed with raised as that error."""
        while not job.finished:
            time.sleep(POLL_SECONDS)
            job = self.get_job(job.id)
            if progress:
                progress(job.progress)
        if job.error is not None:
            raise error_from(job.error.code, job.error.message)
        return job.summary or {}

    # Collections

    def list_collections(self) -> list[CollectionInfo]:
        return self._get(list[CollectionInfo], "GET", "/collections")

    def describe(self, name: str) -> CollectionInfo:
        return self._get(CollectionInfo, "GET", f"/collections/{name}")

    def delete_collection(self, name: str) -> None:
        self._call("DELETE", f"/collections/{name}")

    def delete_document(self, name: str, source: str) -> DocumentDeleted:
        """DocumentNotFound when the delete matched nothing."""
        return self._get(DocumentDeleted, "DELETE", f"/collections/{name}/documents/{quote(source)}")

    # Ingestion and reindex: jobs on the server, followed to their end

    def create_collection(
        self, name: str, *, docs_base_url: str | None = None, embedding: EmbeddingSpec | None = None
    ) -> CollectionInfo:
        body = {"name": name, "docs_base_url": docs_base_url, "embedding": _spec(embedding)}
        return self._get(CollectionInfo, "POST", "/collections", body)

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
        """Ingest a folder that the server reads; a relative path is taken from this process's folder."""
        body = {
            "path": str(Path(path).expanduser().resolve()),
            "docs_base_url": docs_base_url,
            "embedding": _spec(embedding),
            "build": build,
        }
        job = self._get(Job, "POST", f"/collections/{name}/ingest", body)
        return IngestResult.model_validate(self._follow(job, progress))

    def reindex(
        self,
        name: str,
        embedding: EmbeddingSpec,
        *,
        keep_old: bool = False,
        build: bool = True,
        progress: Progress | None = None,
    ) -> ReindexSummary:
        body = {"embedding": _spec(embedding), "keep_old": keep_old, "build": build}
        job = self._get(Job, "POST", f"/collections/{name}/reindex", body)
        return ReindexSummary.model_validate(self._follow(job, progress))

    # Retrieval and answers

    def search(
        self,
        name: str,
        question: str,
        *,
        top_k: int | None = None,
        mode: SearchMode | None = None,
        source_prefix: str | None = None,
    ) -> list[Source]:
        body = {"question": question, "top_k": top_k, "mode": mode, "source_prefix": source_prefix}
        found = self._call("POST", f"/collections/{name}/search", body)
        return TypeAdapter(list[Source]).validate_python(found["results"])

    def ask(
        self,
        name: str,
        question: str,
        *,
        history: list[Turn] | None = None,
        top_k: int | None = None,
        mode: SearchMode | None = None,
    ) -> Answer:
        body = {
            "question": question,
            "history": [t.model_dump() for t in history or []],
            "top_k": top_k,
            "mode": mode,
        }
        return self._get(Answer, "POST", f"/collections/{name}/query", body)

    # Jobs

    def get_job(self, job_id: str) -> Job:
        return self._get(Job, "GET", f"/jobs/{job_id}")

    def list_jobs(self, collection: str | None = None) -> list[Job]:
        return self._get(list[Job], "GET", "/jobs" + (f"?collection={collection}" if collection else ""))


class RemoteError(RagsvcError):
    """An error body whose code this ragsvc does not know (a newer server's, or a proxy's)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _known(classes: list[type[RagsvcError]]) -> dict[str, type[RagsvcError]]:
    found: dict[str, type[RagsvcError]] = {}
    for cls in classes:
        found.setdefault(cls.code, cls)
        found |= {k: v for k, v in _known(cls.__subclasses__()).items() if k not in found}
    return found


def error_from(code: str, message: str) -> RagsvcError:
    """The ragsvc error an error body names, of its own class when one of the errors this process knows has
    that code, made without its constructor so that the message is the body's; else a RemoteError with
    that code (front ends key their tables by code, so it is handled the same)."""
    cls = _known(RagsvcError.__subclasses__()).get(code)
    if cls is None:
        return RemoteError(code, message)
    error = cls.__new__(cls)
    RagsvcError.__init__(error, message)
    return error


def _spec(embedding: EmbeddingSpec | None) -> dict[str, Any] | None:
    return embedding.model_dump(exclude_none=True) if embedding else None
