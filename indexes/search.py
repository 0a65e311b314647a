"""Retrieval over a collection's live index: dense, BM25 sparse, or both fused by score (indexes.fusion).

Results can be kept to a few chunks per source page, so that the top k covers more pages.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from indexes.engine import Filter, Hit, SearchMode, SparseVector, VectorEngine
from indexes.payload import ChunkPayload
from indexes.registry import CollectionRecord
from indexes.sparse import bm25_query

# How many more candidates to fetch when results are kept to a few chunks per page.
DIVERSITY_FACTOR = 4
MAX_CANDIDATES = 200
# A changelog names every feature it ever touched, so its chunks match nearly any question by its words (on
# fastapi-docs its 700 kB release notes ranked first over the guide page for 4 of 87 questions). Unless the
# question asks about versions or changes, a changelog hit counts as if ranked this many places lower: still
# among the results, behind the pages that explain the feature.
CHANGELOG_DEMOTION = 3
_CHANGELOG = re.compile(r"(changelog|changes|release[-_ ]?notes|whats[-_ ]?new)", re.IGNORECASE)
_ASKS_ABOUT_CHANGES = re.compile(
    r"\b(versions?|releases?|release notes|changelog|changed|changes|new in|since|upgrad\w*)\b|\d+\.\d+",
    re.IGNORECASE,
)


def is_changelog(source: str) -> bool:
    return _CHANGELOG.fullmatch(PurePosixPath(source).stem) is not None


def demote_changelogs(question: str, hits: list[Hit]) -> list[Hit]:
    if _ASKS_ABOUT_CHANGES.search(question):
        return hits
    places = [
        (rank + (CHANGELOG_DEMOTION if is_changelog(ChunkPayload.of(hit.payload).source) else 0), rank)
        for rank, hit in enumerate(hits)
    ]
    return [hits[rank] for _, rank in sorted(places)]


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
    limit = min(top_k * DIVERSITY_FACTOR, MAX_CANDIDATES) if per_source > 0 else top_k + CHANGELOG_DEMOTION
    hits = engine.query(
        record.live_index, dense=query_vector, sparse=sparse, mode=mode, limit=limit, where=where
    )
    hits = demote_changelogs(question, newest_versions(hits))
    if per_source <= 0:
        return hits[:top_k]
    kept: list[Hit] = []
    taken: dict[str, int] = {}
    for hit in hits:
        source = ChunkPayload.of(hit.payload).source
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

    payloads = [ChunkPayload.of(hit.payload) for hit in hits]
    newest: dict[tuple[str, str], tuple[float, str]] = {}
    for p in payloads:
        document = (p.origin, p.source)
        if p.written_at is not None and p.written_at > newest.get(document, (float("-inf"), ""))[0]:
            newest[document] = (p.written_at, p.doc_hash)
    return [
        hit
        for hit, p in zip(hits, payloads, strict=True)
        if (p.origin, p.source) not in newest or p.doc_hash == newest[(p.origin, p.source)][1]
    ]


def unseen_terms(engine: VectorEngine, record: CollectionRecord, question: str) -> tuple[int, int]:
    """How many of the question's BM25 terms no chunk of the collection holds, and how many terms it has: a
    question that names what the documentation never mentions (a product, a tool, a protocol) is seldom one it
    answers. One single-term BM25 search a term, each answered from the inverted index."""
    terms = bm25_query(question).indices
    unseen = sum(
        not engine.query(
            record.live_index, dense=None, sparse=SparseVector([term], [1.0]), mode="sparse", limit=1
        )
        for term in terms
    )
    return unseen, len(terms)
