"""Collection operations shared by the REST API and the CLI: list, describe, ingest a folder, delete."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from indexes.errors import RagsvcError
from indexes.registry import EmbeddingIdentity, validate_name
from ingest.jobs import Job, JobHandler
from ingest.pipeline import IngestSummary, Progress, ingest_folder
from ragsvc.documents import delete_uploads, uploads_dir
from ragsvc.services import Services

# One writer per collection at a time; searches never wait on it.
_write_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


class CollectionExists(RagsvcError):
    code = "collection_exists"


class CollectionInfo(BaseModel):
    name: str
    embedding: EmbeddingIdentity
    live_index: str
    chunks: int
    docs_base_url: str | None
    created_at: datetime
    updated_at: datetime


def describe(services: Services, name: str) -> CollectionInfo:
    record = services.registry.get(name)
    chunks = services.engine.count(record.live_index) if services.engine.has_index(record.live_index) else 0
    return CollectionInfo(
        name=record.name,
        embedding=record.embedding,
        live_index=record.live_index,
        chunks=chunks,
        docs_base_url=record.docs_base_url,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def list_collections(services: Services) -> list[CollectionInfo]:
    return [describe(services, record.name) for record in services.registry.list()]


def ingest_path(
    services: Services,
    name: str,
    path: Path,
    *,
    docs_base_url: str | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    with _write_locks[name]:
        return ingest_folder(
            path,
            name,
            engine=services.engine,
            registry=services.registry,
            embedder=services.embedder,
            params=services.chunking,
            docs_base_url=docs_base_url,
            progress=progress,
        )


def create_collection(services: Services, name: str, *, docs_base_url: str | None = None) -> CollectionInfo:
    """An empty collection on this server's embedding model, ready for uploads."""
    validate_name(name)
    with _write_locks[name]:
        if any(r.name == name for r in services.registry.list()):
            raise CollectionExists(f"collection {name!r} already exists")
        identity = services.embedder.identity(services.chunking.label())
        record, _ = services.registry.ensure(name, identity, docs_base_url)
        if not services.engine.has_index(record.live_index):
            services.engine.create_index(record.live_index, services.embedder.dimensions)
    return describe(services, name)


def delete_collection(services: Services, name: str) -> None:
    """Wipe the collection: its vectors, every index built for it, and its stored uploads."""
    with _write_locks[name]:
        record = services.registry.remove(name)
        for index in filter(None, (record.live_index, record.building_index)):
            services.engine.drop_index(index)
        delete_uploads(services, name)


def job_handlers(services: Services) -> dict[str, JobHandler]:
    def ingest_folder_job(job: Job, progress: Progress) -> dict[str, Any]:
        path = Path(job.params["path"])
        docs_base_url = job.params.get("docs_base_url")
        return ingest_path(
            services, job.collection, path, docs_base_url=docs_base_url, progress=progress
        ).model_dump()

    def ingest_uploads_job(job: Job, progress: Progress) -> dict[str, Any]:
        folder = uploads_dir(services, job.collection)
        folder.mkdir(parents=True, exist_ok=True)
        return ingest_path(services, job.collection, folder, progress=progress).model_dump()

    return {"ingest_folder": ingest_folder_job, "ingest_uploads": ingest_uploads_job}
