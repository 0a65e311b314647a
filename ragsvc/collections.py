"""Collection operations shared by the REST API and the CLI: list, describe, ingest a folder, delete."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from indexes.registry import EmbeddingIdentity
from ingest.pipeline import IngestSummary, Progress, ingest_folder
from ragsvc.services import Services

# One writer per collection at a time; searches never wait on it.
_write_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


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


def delete_collection(services: Services, name: str) -> None:
    with _write_locks[name]:
        record = services.registry.remove(name)
        for index in filter(None, (record.live_index, record.building_index)):
            services.engine.drop_index(index)
