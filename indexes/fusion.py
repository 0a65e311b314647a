"""Hybrid search's fusion: a query's dense and BM25 lists merged into one ranking by a weighted sum of their
scores, each scaled to its own list. Both engines fuse with this, so a hybrid query ranks alike on each.

The lists are fetched without payloads and only the fused hits' payloads read after: with both lists' (2 x
160 chunks for a search's 40 candidates) a hybrid search on Aalto took 9.5-11.5 ms p50 on 2 cores, 4.2-4.7
without."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from indexes.engine import Hit

# How many candidates each list hands to fusion, per hit asked for (at least MIN_BRANCH).
PREFETCH_FACTOR = 4
MIN_BRANCH = 20
# The dense list's share of a fused score, the BM25 list's the rest. Against reciprocal rank fusion on seven
# doc sets (README, "Hybrid fusion"), equal shares gained the most with MiniLM and with e5, whose cosines
# differ.
DENSE_WEIGHT = 0.5


def branch_limit(limit: int) -> int:
    return max(limit * PREFETCH_FACTOR, MIN_BRANCH)


def scaled(hits: Sequence[Hit], floor: float) -> list[float]:
    """Scores mapped onto 0..1 within their list, the best 1 and `floor` 0. Only the shape of a list counts,
    not its model's range (a cosine of 0.8 is high for MiniLM and low for e5; BM25 has no ceiling)."""
    if not hits:
        return []
    best = hits[0].score
    if best <= floor:
        return [1.0] * len(hits)
    return [(hit.score - floor) / (best - floor) for hit in hits]


def fuse(dense: Sequence[Hit], sparse: Sequence[Hit], limit: int) -> list[Hit]:
    """The `limit` best hits of both lists (each best first, branch_limit(limit) long) by DENSE_WEIGHT x
    scaled dense score + the rest x scaled BM25 score; a hit missing from a list scores 0 there. Each list's
    floor is its last score: the next chunk, not fetched, scores about that. A shorter BM25 list holds every
    chunk with a word of the question, and every other chunk scores 0. Ties keep dense order first."""
    fused: dict[str, float] = {}
    payloads: dict[str, dict] = {}
    complete = len(sparse) < branch_limit(limit)
    for weight, hits, floor in (
        (DENSE_WEIGHT, dense, dense[-1].score if dense else 0.0),
        (1.0 - DENSE_WEIGHT, sparse, 0.0 if complete or not sparse else sparse[-1].score),
    ):
        for hit, score in zip(hits, scaled(hits, floor), strict=True):
            fused[hit.id] = fused.get(hit.id, 0.0) + weight * score
            payloads.setdefault(hit.id, hit.payload)
    ranked = sorted(fused, key=lambda point: -fused[point])  # stable: equal scores stay in insertion order
    return [Hit(point, fused[point], payloads[point]) for point in ranked[:limit]]


class StoredPoint(Protocol):
    """A point read back by id with its payload (Edge's and qdrant-client's records both are)."""

    @property
    def id(self) -> Any: ...

    @property
    def payload(self) -> dict[str, Any] | None: ...


def with_payloads(fused: Sequence[Hit], records: Iterable[StoredPoint]) -> list[Hit]:
    """The fused hits with their payloads, read after fusion; a point deleted in between is left out."""
    payloads = {str(r.id): dict(r.payload or {}) for r in records}
    return [Hit(hit.id, hit.score, payloads[hit.id]) for hit in fused if hit.id in payloads]
