"""Retrieval as users see it: a question in, cited sources out (file, section, link, score, text).

`search` is the entry point (it checks the caller's right); `retrieve` serves callers that already did
(the answer pipeline).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from pydantic import BaseModel

from indexes.engine import Filter, Hit, SearchMode
from indexes.payload import ChunkPayload
from indexes.registry import CollectionRecord
from indexes.search import search as search_index
from indexes.search import unseen_terms as count_unseen
from ragsvc.logs import question_fields
from ragsvc.metrics import RETRIEVAL_SECONDS
from ragsvc.service.access import Principal, Right, require
from ragsvc.service.embeddings import embedder_for
from ragsvc.service.metering import Meter, Spent, charged
from ragsvc.service.runtime import Runtime

log = logging.getLogger("ragsvc.retrieval")


class Source(BaseModel):
    source: str
    section: str
    score: float
    text: str
    title: str | None = None
    link: str | None = None


def to_source(hit: Hit) -> Source:
    p = ChunkPayload.of(hit.payload)
    return Source(
        source=p.source, section=p.section, score=round(hit.score, 6), text=p.text, title=p.title, link=p.link
    )


@contextmanager
def live_record(runtime: Runtime, collection: str) -> Iterator[CollectionRecord]:
    """The collection's current record, its live index kept from being dropped until the block ends.

    A reindex switches the record and then waits for the old index's readers before it drops it; a
    search that read the record just before the switch is seen as a reader or sees the new record.
    """
    while True:
        record = runtime.registry.get(collection)
        with runtime.readers.reading(record.live_index):
            if runtime.registry.get(collection) is record:
                yield record
                return


def search(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    question: str,
    *,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    source_prefix: str | None = None,
    documents: list[str] | None = None,
) -> list[Source]:
    """The chunks that best answer `question`, as cited sources."""
    require(caller, collection, Right.read)
    mode = mode or runtime.settings.search_mode
    with question_charge(runtime, caller, collection, question, mode):
        return retrieve(
            runtime,
            collection,
            question,
            top_k=top_k,
            mode=mode,
            source_prefix=source_prefix,
            documents=documents,
        )


def question_charge(
    runtime: Runtime, caller: Principal, collection: str, question: str, mode: SearchMode
) -> AbstractContextManager[Meter | Spent]:
    """The request of a caller who asks or searches `collection`, admitted before anything runs: it counts
    once against their requests per minute, and the question's tokens are charged at the price of the
    collection's embedding model (none when the search is sparse only)."""
    record = runtime.registry.get(collection)
    tokens = 0
    if mode in ("dense", "hybrid"):
        embedder = embedder_for(runtime, record)
        tokens = min(embedder.count_tokens([question])[0], embedder.max_tokens)
    return charged(runtime, caller, collection, record.embedding.model, embedding_tokens=tokens)


def retrieve(
    runtime: Runtime,
    collection: str,
    question: str,
    *,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    source_prefix: str | None = None,
    documents: list[str] | None = None,
    per_source: int | None = None,
) -> list[Source]:
    """The best chunks for the question; `source_prefix` (one document's path) or `documents` (any of these
    paths) keep the search inside those documents; `per_source` caps the chunks of one page (default: the
    search setting)."""
    started = time.perf_counter()
    mode = mode or runtime.settings.search_mode
    must: dict[str, str | list[str]] = {}
    if source_prefix:
        must["source"] = source_prefix
    if documents is not None:
        must["source"] = [d for d in documents if not source_prefix or d == source_prefix]
    if must.get("source") == []:
        runtime.registry.get(collection)  # a missing collection is still an error
        return []
    where = Filter(must=must) if must else None
    with live_record(runtime, collection) as record:
        # The record is one version: its model embeds the question, its live index answers it.
        embedder = embedder_for(runtime, record)
        vector = embedder.embed_query(question) if mode in ("dense", "hybrid") else None
        hits = search_index(
            runtime.engine,
            record,
            question=question,
            query_vector=vector,
            top_k=top_k or runtime.settings.top_k,
            per_source=runtime.settings.chunks_per_source if per_source is None else per_source,
            mode=mode,
            where=where,
        )
    elapsed = time.perf_counter() - started
    RETRIEVAL_SECONDS.observe(elapsed)
    log.info(
        "retrieved",
        extra={"collection": collection, "mode": mode, "hits": len(hits), "ms": round(elapsed * 1000, 2)}
        | question_fields(log, question),
    )
    return [to_source(hit) for hit in hits]


def unseen_terms(runtime: Runtime, collection: str, question: str) -> tuple[int, int]:
    """How many of the question's BM25 terms appear in no chunk of the collection, of how many."""
    with live_record(runtime, collection) as record:
        return count_unseen(runtime.engine, record, question)
