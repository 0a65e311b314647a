"""BM25 sparse vectors, made with Qdrant's own BM25 tokenizer so that every engine sees the same terms.

IDF is applied by the engine (the sparse vector is stored with the IDF modifier), so only term
frequencies are computed here.
"""

from functools import lru_cache

import qdrant_edge

from indexes.engine import SparseVector

# Chunks are sized to at most ~250 model tokens, about 150 BM25 terms.
AVERAGE_CHUNK_TERMS = 150.0


@lru_cache(maxsize=1)
def _bm25() -> qdrant_edge.Bm25:
    return qdrant_edge.Bm25(qdrant_edge.Bm25Config(avg_len=AVERAGE_CHUNK_TERMS))


def bm25_document(text: str) -> SparseVector:
    vector = _bm25().embed_document(text)
    return SparseVector(list(vector.indices), list(vector.values))


def bm25_query(text: str) -> SparseVector:
    vector = _bm25().embed_query(text)
    return SparseVector(list(vector.indices), list(vector.values))
