"""Collections as users see them: list, describe, delete. (Creating one is ingestion's: ragsvc.service.ingestion.)"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from indexes.errors import RagsvcError
from indexes.registry import CollectionRecord, EmbeddingIdentity
from ragsvc.service.access import Principal, Right, readable, require
from ragsvc.service.documents import delete_uploads
from ragsvc.service.runtime import Runtime


class CollectionExists(RagsvcError):
    code = "collection_exists"


class CollectionInfo(BaseModel):
    name: str
    embedding: EmbeddingIdentity
    embedding_url: str | None = None
    live_index: str
    building_index: str | None = None
    chunks: int
    docs_base_url: str | None
    created_at: datetime
    updated_at: datetime


def _info(runtime: Runtime, name: str) -> CollectionInfo:
    record = runtime.registry.get(name)
    engine = runtime.engine
    chunks = engine.count(record.live_index) if engine.has_index(record.live_index) else 0
    return CollectionInfo(
        name=record.name,
        embedding=record.embedding,
        embedding_url=record.embedding_url,
        live_index=record.live_index,
        building_index=record.building_index,
        chunks=chunks,
        docs_base_url=record.docs_base_url,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def describe(runtime: Runtime, caller: Principal, name: str) -> CollectionInfo:
    require(caller, name, Right.read)
    return _info(runtime, name)


def list_collections(runtime: Runtime, caller: Principal) -> list[CollectionInfo]:
    """The collections the caller may read."""
    names = readable(caller, [record.name for record in runtime.registry.list()])
    return [_info(runtime, name) for name in names]


def list_records(runtime: Runtime, caller: Principal) -> list[CollectionRecord]:
    """The registry's records of the collections the caller may read, without asking the engine."""
    return [r for r in runtime.registry.list() if caller.holds(r.name, Right.read)]


def get_record(runtime: Runtime, caller: Principal, name: str) -> CollectionRecord:
    require(caller, name, Right.read)
    return runtime.registry.get(name)


def delete_collection(runtime: Runtime, caller: Principal, name: str) -> None:
    """Wipe the collection: its vectors, every index built for it, and its stored uploads."""
    require(caller, name, Right.admin)
    with runtime.write_locks.hold(name):
        record = runtime.registry.remove(name)
        old = {record.building_index, *record.retired_indexes, *record.dropping_indexes}
        for index in {record.live_index, *old} - {None}:
            runtime.engine.drop_index(index)
        delete_uploads(runtime, name)
