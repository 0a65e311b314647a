"""Retrieval over a collection's live index: dense, BM25 sparse, or both fused by reciprocal rank."""

from __future__ import annotations

from indexes.engine import Filter, Hit, SearchMode, VectorEngine
from indexes.registry import CollectionRecord
from indexes.sparse import bm25_query


def search(
    engine: VectorEngine,
    record: CollectionRecord,
    *,
    question: str,
    query_vector: list[float] | None,
    top_k: int,
    mode: SearchMode = "hybrid",
    where: Filter | None = None,
) -> list[Hit]:
    sparse = bm25_query(question) if mode in ("sparse", "hybrid") else None
    return engine.query(
        record.live_index, dense=query_vector, sparse=sparse, mode=mode, limit=top_k, where=where
    )
