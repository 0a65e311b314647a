"""Collection operations shared by the REST API and the CLI: list, describe, create, ingest a folder,
reindex with another embedding model, delete."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from indexes.build import build_after_ingest
from indexes.engine import ChunkPoint, Hit
from indexes.errors import EmbeddingMismatch, InvalidRequest, RagsvcError
from indexes.registry import CollectionRecord, EmbeddingIdentity, index_name, validate_name
from indexes.sparse import bm25_document
from ingest import faults
from ingest.embed import Embedder, EmbeddingSpec, canonical_model
from ingest.jobs import Job, JobHandler, JobQueue, open_job_queue
from ingest.pipeline import IngestLimits, IngestSummary, Progress, ingest_folder
from ingest.progress import IngestProgress
from ragsvc.documents import delete_uploads, uploads_dir
from ragsvc.services import Services

log = logging.getLogger("ragsvc.collections")

# Chunks read, embedded and written per step of a reindex.
REINDEX_BATCH = 256


class CollectionExists(RagsvcError):
    code = "collection_exists"


class ChunksTooLong(RagsvcError):
    """A reindex onto a model that reads fewer tokens than the stored chunks hold: it would cut them."""

    code = "chunks_too_long"


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


class ReindexSummary(BaseModel):
    collection: str
    previous: EmbeddingIdentity
    embedding: EmbeddingIdentity
    previous_index: str
    live_index: str
    kept_old: bool
    chunks: int
    seconds: float
    index_build: dict[str, Any] | None = None


def describe(services: Services, name: str) -> CollectionInfo:
    record = services.registry.get(name)
    chunks = services.engine.count(record.live_index) if services.engine.has_index(record.live_index) else 0
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


def list_collections(services: Services) -> list[CollectionInfo]:
    return [describe(services, record.name) for record in services.registry.list()]


def _same_model(record: CollectionRecord, spec: EmbeddingSpec) -> bool:
    e = record.embedding
    return (
        (spec.provider is None or spec.provider == e.provider)
        and (spec.model is None or canonical_model(spec.model) == e.model)
        and (spec.dimensions is None or spec.dimensions == e.dimensions)
    )


def _embedding_for(
    services: Services, name: str, embedding: EmbeddingSpec | None
) -> tuple[Embedder, CollectionRecord | None]:
    """The collection's own embedder; for a new collection, the asked-for one (opened, so it is known to
    work before anything is created)."""
    record = services.registry.find(name)
    if record is None:
        return services.open_embedder(embedding), None
    if embedding is not None and not _same_model(record, services.resolve(embedding)):
        raise EmbeddingMismatch(
            f"collection {name!r} is embedded with {record.embedding.describe()}; to switch it to "
            f"{embedding.model}, run `ragsvc collections reindex {name} --embedding-model {embedding.model}`"
        )
    return services.embedder_for(record), record


def ingest_path(
    services: Services,
    name: str,
    path: Path,
    *,
    docs_base_url: str | None = None,
    progress: Progress | None = None,
    embedding: EmbeddingSpec | None = None,
) -> IngestSummary:
    """Ingest a folder; a new collection is made on `embedding` (or the default model), an existing one
    keeps its own model."""
    validate_name(name)
    # One writer per collection at a time, in this process or (shared registry) in any; searches never wait.
    with services.write_locks.hold(name):
        services.repair(name)
        embedder, record = _embedding_for(services, name, embedding)
        if record is None:
            if not path.expanduser().is_dir():
                raise InvalidRequest(f"{path} is not a folder")
            params = services.chunking_for_model(embedder)
            record, _ = services.registry.ensure(
                name,
                embedder.identity(params.label()),
                docs_base_url,
                embedding_url=getattr(embedder, "url", None),
            )
            _open_live_index(services, record, embedder.dimensions)
        else:
            params = services.chunking_for(record)
        return ingest_folder(
            path,
            name,
            engine=services.engine,
            registry=services.registry,
            embedder=embedder,
            params=params,
            docs_base_url=docs_base_url,
            progress=progress,
            limits=IngestLimits(
                max_file_bytes=services.settings.max_file_bytes,
                parse_timeout=services.settings.parse_timeout,
                parse_memory_bytes=services.settings.parse_memory_mb << 20,
                batch_chunks=services.settings.ingest_batch_chunks,
            ),
        )


def create_collection(
    services: Services,
    name: str,
    *,
    docs_base_url: str | None = None,
    embedding: EmbeddingSpec | None = None,
) -> CollectionInfo:
    """An empty collection on the asked-for embedding model (else the server's default), ready for uploads."""
    validate_name(name)
    with services.write_locks.hold(name):
        if services.registry.find(name) is not None:
            raise CollectionExists(f"collection {name!r} already exists")
        embedder = services.open_embedder(embedding)
        identity = embedder.identity(services.chunking_for_model(embedder).label())
        record, _ = services.registry.ensure(
            name, identity, docs_base_url, embedding_url=getattr(embedder, "url", None)
        )
        _open_live_index(services, record, embedder.dimensions)
    return describe(services, name)


def _open_live_index(services: Services, record: CollectionRecord, dimensions: int) -> None:
    """A new collection's live index, reachable by the collection's name where the engine keeps aliases;
    on failure the collection is removed again: never a half-created collection."""
    created = False
    try:
        if not services.engine.has_index(record.live_index):
            services.engine.create_index(record.live_index, dimensions)
            created = True
        services.point_live_alias(record, new=True)
    except BaseException:
        services.registry.remove(record.name)
        if created:
            services.engine.drop_index(record.live_index)
        raise


def delete_collection(services: Services, name: str) -> None:
    """Wipe the collection: every index built for it (their document keys destroyed), its stored uploads and
    its job records."""
    with services.write_locks.hold(name):
        record = services.registry.remove(name)
        for index in record.every_index():
            services.engine.drop_index(index)
        delete_uploads(services, name)
        if services.jobs is not None:
            services.jobs.store.forget(name)


def _embed_text(payload: dict[str, Any]) -> str:
    """What the model read when the chunk was ingested (ingest.chunk.Chunk.embed_text), from its payload."""
    return f"{' > '.join(payload.get('section_trail') or [])}\n\n{payload.get('text', '')}"


def check_reindex(
    services: Services, name: str, embedding: EmbeddingSpec
) -> tuple[CollectionRecord, Embedder, EmbeddingIdentity]:
    """The collection, the new model's embedder and identity; raises what a reindex would fail on at once."""
    record = services.registry.get(name)
    embedder = services.open_embedder(embedding)
    identity = embedder.identity(record.embedding.chunking)
    if identity == record.embedding:
        raise InvalidRequest(f"collection {name!r} is already embedded with {identity.describe()}")
    return record, embedder, identity


def reindex(
    services: Services,
    name: str,
    embedding: EmbeddingSpec,
    *,
    keep_old: bool = False,
    build: bool = False,
    progress: Progress | None = None,
    batch: int = REINDEX_BATCH,
) -> ReindexSummary:
    """Re-embed the collection's stored chunks with another model into a new index, then switch to it.

    The old index serves every query until the registry's one atomic write switches the collection; on any
    failure it stays live and the half-built index is dropped. The collection's write lock is held
    throughout, so ingests into it wait and no chunk is missed by the copy. `build` builds the new index
    before the switch, so that it goes live with its HNSW graph.

    The registry is the truth and switches first, for every replica at once; the engine follows: the
    collection's alias (Qdrant server) is pointed at the new index, then the old index is dropped once no
    search in any process reads it. A crash between these steps is repaired from the registry
    (`Services.repair`) at the next start-up or the collection's next write.
    """
    started = time.perf_counter()
    with services.write_locks.hold(name):
        services.repair(name)
        record, embedder, identity = check_reindex(services, name, embedding)
        target = index_name(name, identity)
        if services.engine.has_index(target):
            # Left by a reindex that died, or kept by --keep-old and stale since: rebuilt from the live one.
            services.engine.drop_index(target)
        services.registry.start_build(name, target)
        try:
            total = _copy_chunks(services, record, embedder, target, progress, batch)
            if build and progress:
                progress(IngestProgress(phase="building index", chunks_written=total, chunks_total=total))
            # A failed build fails nothing: the new index serves by brute force until a later build.
            index_build = build_after_ingest(services.engine, target) if build else None
            switched, old = services.registry.switch(
                name,
                identity,
                target,
                embedding_url=getattr(embedder, "url", None),
                keep_old=keep_old,
            )
        except BaseException:
            services.registry.abandon_build(name)
            try:
                services.engine.drop_index(target)
            except Exception:  # the first error is the one to report; this one is logged
                log.exception("could not drop the half-built index %s", target)
            raise
        services.point_live_alias(switched)
        if not keep_old:
            # Searches that picked up the old record before the switch finish on the old index first.
            services.drop_replaced(name, old)
    log.info("reindexed %s: %s -> %s (%d chunks)", name, record.embedding.model, identity.model, total)
    return ReindexSummary(
        collection=name,
        previous=record.embedding,
        embedding=identity,
        previous_index=old,
        live_index=target,
        kept_old=keep_old,
        chunks=total,
        seconds=round(time.perf_counter() - started, 3),
        index_build=index_build,
    )


def _copy_chunks(
    services: Services,
    record: CollectionRecord,
    embedder: Embedder,
    target: str,
    progress: Progress | None,
    batch_size: int,
) -> int:
    """Every chunk of the live index, with its payload and id, re-embedded into `target`; BM25 vectors are
    made again from the same text by the same deterministic tokenizer, so they equal the stored ones."""
    engine = services.engine
    total = engine.count(record.live_index)
    engine.create_index(target, embedder.dimensions)
    done = 0
    batch: list[Hit] = []

    def flush() -> None:
        nonlocal done
        texts = [_embed_text(hit.payload) for hit in batch]
        too_long = sum(t > embedder.max_tokens for t in embedder.count_tokens(texts))
        if too_long:
            raise ChunksTooLong(
                f"{too_long} chunks of collection {record.name!r} are longer than the "
                f"{embedder.max_tokens} tokens {embedder.model} reads; ingest the documents into a new "
                "collection on that model instead"
            )
        vectors = embedder.embed_documents(texts)
        points = [
            ChunkPoint(id=hit.id, dense=vector, sparse=bm25_document(text), payload=hit.payload)
            for hit, vector, text in zip(batch, vectors, texts, strict=True)
        ]
        engine.upsert(target, points)
        done += len(points)
        batch.clear()
        if progress:
            progress(IngestProgress(phase="embedding", chunks_written=done, chunks_total=total))

    for hit in engine.scroll(record.live_index, batch=batch_size):
        batch.append(hit)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return done


def _spec(params: dict[str, Any]) -> EmbeddingSpec | None:
    raw = params.get("embedding")
    return EmbeddingSpec.model_validate(raw) if raw else None


def job_handlers(services: Services) -> dict[str, JobHandler]:
    def ingest_folder_job(job: Job, progress: Progress) -> dict[str, Any]:
        path = Path(job.params["path"])
        docs_base_url = job.params.get("docs_base_url")
        summary = ingest_path(
            services,
            job.collection,
            path,
            docs_base_url=docs_base_url,
            progress=progress,
            embedding=_spec(job.params),
        )
        progress(summary.progress("building index"))
        # built in a process of its own (Edge): queries go on meanwhile; a no-op below Edge's threshold
        live_index = services.registry.get(job.collection).live_index
        return summary.model_dump() | {"index_build": build_after_ingest(services.engine, live_index)}

    def reindex_job(job: Job, progress: Progress) -> dict[str, Any]:
        spec = _spec(job.params)
        if spec is None:
            raise InvalidRequest("a reindex job needs an embedding model")
        keep_old = bool(job.params.get("keep_old"))
        record = services.registry.get(job.collection)
        if job.attempts > 1 and record.building_index is None and _same_model(record, spec):
            # Rerun after a crash that came after the switch: the work is done, but for what follows it.
            with services.write_locks.hold(job.collection):
                services.repair(job.collection)
            return {"collection": job.collection, "embedding": record.embedding.model_dump(), "resumed": True}
        # The new index is built before the switch, in a process of its own (Edge): queries go on meanwhile.
        summary = reindex(services, job.collection, spec, keep_old=keep_old, build=True, progress=progress)
        return summary.model_dump(mode="json")

    def ingest_uploads_job(job: Job, progress: Progress) -> dict[str, Any]:
        folder = uploads_dir(services, job.collection)
        folder.mkdir(parents=True, exist_ok=True)
        summary = ingest_path(services, job.collection, folder, progress=progress)
        progress(summary.progress("building index"))
        live_index = services.registry.get(job.collection).live_index
        return summary.model_dump() | {"index_build": build_after_ingest(services.engine, live_index)}

    return {
        "ingest_folder": ingest_folder_job,
        "ingest_uploads": ingest_uploads_job,
        "reindex": reindex_job,
    }


def open_jobs(services: Services, workers: int = 1) -> JobQueue:
    """The job queue this process runs ragsvc's jobs from, on the backend the settings name."""
    settings = services.settings
    faults.arm(settings.test_crash_at)
    return open_job_queue(
        Path(settings.data_dir),
        job_handlers(services),
        redis_url=settings.redis_url,
        name=settings.job_queue,
        lease_seconds=settings.job_lease_seconds,
        workers=workers,
    )
