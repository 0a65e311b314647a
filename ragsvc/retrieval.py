"""Retrieval as users see it: a question in, cited sources out (file, section, link, score, text)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel

from indexes.engine import Filter, Hit, SearchMode
from indexes.registry import CollectionRecord
from indexes.search import search
from ragsvc.logs import question_fields
from ragsvc.metrics import RETRIEVAL_SECONDS
from ragsvc.services import Services

log = logging.getLogger("ragsvc.retrieval")


class Source(BaseModel):
    source: str
    section: str
    score: float
    text: str
    title: str | None = None
    link: str | None = None


def to_source(hit: Hit) -> Source:
    p = hit.payload
    return Source(
        source=p["source"],
        section=p.get("section", ""),
        score=round(hit.score, 6),
        text=p.get("text", ""),
        title=p.get("title"),
        link=p.get("link"),
    )


@contextmanager
def live_record(services: Services, collection: str) -> Iterator[CollectionRecord]:
    """The collection's current record, its live index kept from being dropped until the block ends.

    A reindex switches the record and then waits for the old index's readers before it drops it; a
    search that read the record just before the switch is seen as a reader or sees the new record.
    """
    while True:
        record = services.registry.get(collection)
        with services.readers.reading(record.live_index):
            if services.registry.get(collection) is record:
                yield record
                return


def retrieve(
    services: Services,
    collection: str,
    question: str,
    *,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    source_prefix: str | None = None,
    documents: list[str] | None = None,
) -> list[Source]:
    """The best chunks for the question; `source_prefix` (one document's path) or `documents` (any of these
    paths) keep the search inside those documents."""
    started = time.perf_counter()
    mode = mode or services.settings.search_mode
    must: dict[str, str | list[str]] = {}
    if source_prefix:
        must["source"] = source_prefix
    if documents is not None:
        must["source"] = [d for d in documents if not source_prefix or d == source_prefix]
    if must.get("source") == []:
        services.registry.get(collection)  # a missing collection is still an error
        return []
    where = Filter(must=must) if must else None
    with live_record(services, collection) as record:
        # The record is one version: its model embeds the question, its live index answers it.
        embedder = services.embedder_for(record)
        vector = embedder.embed_query(question) if mode in ("dense", "hybrid") else None
        hits = search(
            services.engine,
            record,
            question=question,
            query_vector=vector,
            top_k=top_k or services.settings.top_k,
            per_source=services.settings.chunks_per_source,
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
