"""Reindex: re-embed a collection's stored chunks with another model into a new index, then switch to it in
one step; the old index serves every query until then."""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel

from indexes.engine import ChunkPoint, Filter, Hit
from indexes.errors import InvalidRequest, RagsvcError
from indexes.payload import ChunkPayload
from indexes.registry import CollectionRecord, EmbeddingIdentity, index_name
from indexes.sparse import bm25_document
from ingest.embed import Embedder, EmbeddingSpec
from ingest.pipeline import Progress
from ingest.progress import IngestProgress
from ragsvc.jobs.queue import JobHandler
from ragsvc.jobs.records import Job
from ragsvc.service.access import Principal, Right, require
from ragsvc.service.documents import document_key
from ragsvc.service.embeddings import chosen_embedder, same_model
from ragsvc.service.ingestion import build_index, submitter
from ragsvc.service.repair import drop_replaced, point_live_alias, repair
from ragsvc.service.runtime import Runtime

log = logging.getLogger("ragsvc.reindex")

# Chunks read, embedded and written per step of a reindex.
REINDEX_BATCH = 256


class ChunksTooLong(RagsvcError):
    """A reindex onto a model that reads fewer tokens than the stored chunks hold: it would cut them."""

    code = "chunks_too_long"


class AlreadyEmbedded(RagsvcError):
    """A reindex onto the embedding the collection already has: a state conflict, not a malformed request
    (the same body is valid for another collection)."""

    code = "already_embedded"


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


def _check(
    runtime: Runtime, name: str, embedding: EmbeddingSpec
) -> tuple[CollectionRecord, Embedder, EmbeddingIdentity]:
    """The collection, the new model's embedder and identity; raises what a reindex would fail on at once."""
    record = runtime.registry.get(name)
    embedder = chosen_embedder(runtime, embedding)
    identity = embedder.identity(record.embedding.chunking)
    if identity == record.embedding:
        raise AlreadyEmbedded(f"collection {name!r} is already embedded with {identity.describe()}")
    return record, embedder, identity


def check_reindex(
    runtime: Runtime, caller: Principal, name: str, embedding: EmbeddingSpec
) -> tuple[CollectionRecord, Embedder, EmbeddingIdentity]:
    """What a reindex of `name` onto `embedding` would start from and make: its record, the new model's
    embedder and identity; raises at once what the reindex would fail on."""
    require(caller, name, Right.admin)
    return _check(runtime, name, embedding)


def reindex(
    runtime: Runtime,
    caller: Principal,
    name: str,
    embedding: EmbeddingSpec,
    *,
    keep_old: bool = False,
    build: bool = False,
    progress: Progress | None = None,
    batch: int = REINDEX_BATCH,
) -> ReindexSummary:
    """Re-embed the collection's stored chunks with another model into a new index, then switch to it, in
    this process.

    The old index serves every query until the registry's one atomic write switches the collection; on any
    failure it stays live and the half-built index is dropped. The collection's write lock is held
    throughout, so ingests into it wait and no chunk is missed by the copy. `build` builds the new index
    before the switch (`build_index`'s policy), so that it goes live with its HNSW graph.

    The registry is the truth and switches first, for every replica at once; the engine follows: the
    collection's alias (Qdrant server) is pointed at the new index, then the old index is dropped once no
    search in any process reads it. A crash between these steps is repaired from the registry
    (`ragsvc.service.repair`) at the next start-up or the collection's next write.
    """
    require(caller, name, Right.admin)
    started = time.perf_counter()
    with runtime.write_locks.hold(name):
        repair(runtime, name)
        record, embedder, identity = _check(runtime, name, embedding)
        target = index_name(name, identity)
        if runtime.engine.has_index(target):
            # Left by a reindex that died, or kept by --keep-old and stale since: rebuilt from the live one.
            runtime.engine.drop_index(target)
        runtime.registry.start_build(name, target)
        try:
            total = _copy_chunks(runtime, record, embedder, target, progress, batch)
            total -= _drop_deleted_during_copy(runtime, record, target)
            if build and progress:
                progress(IngestProgress(phase="building index", chunks_written=total, chunks_total=total))
            # A failed build fails nothing: the new index serves by brute force until a later build.
            index_build = build_index(runtime, target) if build else None
            switched, old = runtime.registry.switch(
                name,
                identity,
                target,
                embedding_url=getattr(embedder, "url", None),
                keep_old=keep_old,
            )
        except BaseException:
            runtime.registry.abandon_build(name)
            try:
                runtime.engine.drop_index(target)
            except Exception:  # the first error is the one to report; this one is logged
                log.exception("could not drop the half-built index %s", target)
            raise
        point_live_alias(runtime, switched)
        if not keep_old:
            # Searches that picked up the old record before the switch finish on the old index first.
            drop_replaced(runtime, name, old)
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
    runtime: Runtime,
    record: CollectionRecord,
    embedder: Embedder,
    target: str,
    progress: Progress | None,
    batch_size: int,
) -> int:
    """Every chunk of the live index, with its payload and id, re-embedded into `target`; BM25 vectors are
    made again from the same text by the same deterministic tokenizer, so they equal the stored ones."""
    engine = runtime.engine
    total = engine.count(record.live_index)
    engine.create_index(target, embedder.dimensions)
    done = 0
    batch: list[Hit] = []

    def flush() -> None:
        nonlocal done
        texts = [ChunkPayload.of(hit.payload).embed_text for hit in batch]
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


def _drop_deleted_during_copy(runtime: Runtime, record: CollectionRecord, target: str) -> int:
    """Drop from `target` the documents deleted from the live index while the copy ran (a delete that read the
    record before the build started deletes from the live index only); returns how many chunks went. A
    later delete finds `target` in the record and deletes there too."""
    engine = runtime.engine
    copied = {hit.payload["source"] for hit in engine.scroll(target, batch=1024)}
    live = {hit.payload["source"] for hit in engine.scroll(record.live_index, batch=1024)}
    dropped = 0
    for source in sorted(copied - live):
        with runtime.document_locks.hold(document_key(record.name, source)):
            where = Filter(must={"source": source})
            if not engine.count(record.live_index, where):
                dropped += engine.count(target, where)
                engine.delete(target, where)
    return dropped


def submit_reindex(
    runtime: Runtime,
    caller: Principal,
    name: str,
    embedding: EmbeddingSpec,
    *,
    keep_old: bool = False,
    build: bool = True,
    wait: bool = False,
) -> Job:
    """Start a reindex job; the model is opened first, so an unknown model or a dead endpoint is this call's
    error, not the job's. With `wait`, return the job once it has finished."""
    check_reindex(runtime, caller, name, embedding)
    params: dict[str, Any] = {"embedding": embedding.model_dump(exclude_none=True), "keep_old": keep_old}
    if not build:
        params["build"] = False
    job = runtime.jobs.submit("reindex", name, caller, **params)
    return runtime.jobs.wait(job.id) if wait else job


def job_handlers(runtime: Runtime) -> dict[str, JobHandler]:
    def reindex_job(job: Job, progress: Progress) -> dict[str, Any]:
        raw = job.params.get("embedding")
        if not raw:
            raise InvalidRequest("a reindex job needs an embedding model")
        spec = EmbeddingSpec.model_validate(raw)
        caller = submitter(job)
        record = runtime.registry.get(job.collection)
        if record.building_index is None and same_model(record, spec):
            # The collection is on this model already: a rerun after a crash that came after the switch (the
            # work is done, but for what follows it), or another reindex queued earlier got there first. What
            # the job asks for holds, so it is done; only a request made on that state is refused (409).
            require(caller, job.collection, Right.admin)
            with runtime.write_locks.hold(job.collection):
                repair(runtime, job.collection)
            return {
                "collection": job.collection,
                "embedding": record.embedding.model_dump(),
                "resumed": job.attempts > 1,
                "unchanged": True,
            }
        # The new index is built before the switch, in a process of its own (Edge): queries go on meanwhile.
        summary = reindex(
            runtime,
            caller,
            job.collection,
            spec,
            keep_old=bool(job.params.get("keep_old")),
            build=job.params.get("build", True),
            progress=progress,
        )
        return summary.model_dump(mode="json")

    return {"reindex": reindex_job}
