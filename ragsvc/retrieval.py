"""Retrieval as users see it: a question in, cited sources out (file, section, link, score, text)."""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel

from indexes.engine import Filter, Hit, SearchMode
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


def retrieve(
    services: Services,
    collection: str,
    question: str,
    *,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    source_prefix: str | None = None,
) -> list[Source]:
    record = services.registry.get(collection)
    started = time.perf_counter()
    mode = mode or services.settings.search_mode
    embedder = services.embedder_for(record)
    vector = embedder.embed_query(question) if mode in ("dense", "hybrid") else None
    where = Filter(must={"source": source_prefix}) if source_prefix else None
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
