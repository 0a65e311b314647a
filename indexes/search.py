"""Retrieval over a collection's live index: dense, BM25 sparse, or both fused by reciprocal rank.

Results can be kept to a few chunks per source page, so that the top k covers more pages.
"""

from __future__ import annotations

from indexes.engine import Filter, Hit, SearchMode, VectorEngine
from indexes.registry import CollectionRecord
from indexes.sparse import bm25_query

# How many more candidates to fetch when results are kept to a few chunks per page.
DIVERSITY_FACTOR = 4
MAX_CANDIDATES = 200


def search(
    engine: VectorEngine,
    record: CollectionRecord,
    *,
    question: str,
    query_vector: list[float] | None,
    top_k: int,
    mode: SearchMode = "hybrid",
    where: Filter | None = None,
    per_source: int = 0,
) -> list[Hit]:
    """The top_k best chunks; with per_source > 0, no more than that many from any one source."""
    sparse = bm25_query(question) if mode in ("sparse", "hybrid") else None
    limit = min(top_k * DIVERSITY_FACTOR, MAX_CANDIDATES) if per_source > 0 else top_k
    hits = engine.query(
        record.live_index, dense=query_vector, sparse=sparse, mode=mode, limit=limit, where=where
    )
    hits = newest_versions(hits)
    if per_source <= 0:
        return hits
    kept: list[Hit] = []
    taken: dict[str, int] = {}
    for hit in hits:
        source = hit.payload.get("source", "")
        if taken.get(source, 0) < per_source:
            kept.append(hit)
            taken[source] = taken.get(source, 0) + 1
            if len(kept) == top_k:
                break
    return kept


def newest_versions(hits: list[Hit]) -> list[Hit]:
    """Each document in one version: while a re-ingest has written a document's new chunks and not yet
    dropped its old ones (for a moment, or until a killed job is rerun), hits of the older version are left out.
    """

    def document(hit: Hit) -> tuple[str, str]:
        return hit.payload.get("origin", ""), hit.payload.get("source", "")

    newest: dict[tuple[str, str], tuple[float, str]] = {}
    for hit in hits:
        written = hit.payload.get("written_at")
        if written is not None and written > newest.get(document(hit), (float("-inf"), ""))[0]:
            newest[document(hit)] = (written, hit.payload.get("doc_hash", ""))
    return [
        h for h in hits if document(h) not in newest or h.payload.get("doc_hash") == newest[document(h)][1]
    ]
