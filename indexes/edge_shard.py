"""One Qdrant Edge shard as ragsvc keeps chunks in it: how a shard is made (vectors, keyword indexes, ragsvc's
record of its vector size), how ragsvc's points, filters and queries become Edge requests, and the binding's
errors as ragsvc's. Which shards exist and when they are opened, built or switched is indexes/edge.py's."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import qdrant_edge as q

from indexes.engine import DENSE, SPARSE, ChunkPoint, Filter, Hit, SearchMode, SparseVector
from indexes.errors import StoreBusy, VectorSizeMismatch
from indexes.fusion import branch_limit, fuse, with_payloads

# Payload fields that filters and deletions use; keyword indexes keep those fast at any size. They are made
# without HNSW subgraphs (enable_hnsw=False): filters on them select few points and need none. (Reported:
# 43 s instead of 27 s to build 100k points with subgraphs. bench/search.py --payload-hnsw found no
# difference here: 48.0 against 46.5 CPU seconds at 100k, 4.2 against 4.4 at 20k.)
KEYWORD_FIELDS = ("source", "origin", "doc_hash", "file_type")
# ragsvc's own record of a shard's dense size, next to Edge's files, so sizes are checked before a call.
# It is written last into a shard folder: a folder without it is a build that did not finish.
INDEX_META = "ragsvc-index.json"
# The binding raises bare Exceptions; this one is translated for shards made before INDEX_META existed.
_DIMENSION_ERROR = re.compile(r"Vector dimension error: expected dim: (\d+), got (\d+)")


def keyword_index() -> q.KeywordIndexParams:
    """A keyword index kept on disk (memory-mapped; the page cache holds what filters read). In RAM (Edge's
    default) loading a shard rebuilds its maps while holding the GIL: 1.9 s at 100k chunks against 0.3-0.4 s
    on disk, and that load happens in the serving process at every build's switch."""
    return q.KeywordIndexParams(enable_hnsw=False, memory=q.Memory.Cold)


def keyword_indexes_to_move(shard: q.EdgeShard) -> list[str]:
    """KEYWORD_FIELDS whose index is not as `keyword_index()` makes it (shards made before it was on disk)."""
    schema = shard.info().payload_schema
    return [key for key in KEYWORD_FIELDS if key not in schema or schema[key].params.memory != q.Memory.Cold]


def create_shard(folder: Path, dense_size: int) -> q.EdgeShard:
    """A new, empty shard in `folder`: dense vectors of `dense_size` (cosine), BM25 sparse vectors, keyword
    indexes on KEYWORD_FIELDS; ragsvc's record of its size is written last (a folder without it is a shard
    that was never finished)."""
    config = q.EdgeConfig(
        vectors={DENSE: q.EdgeVectorParams(size=dense_size, distance=q.Distance.Cosine)},
        # The BM25 index on disk too (memory-mapped), for the same reason as the keyword indexes.
        sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf, memory=q.Memory.Cold)},
    )
    shard = q.EdgeShard.create(str(folder), config)
    try:
        for key in KEYWORD_FIELDS:
            shard.update(q.UpdateOperation.create_field_index(key, keyword_index()))
        write_meta(folder, dense_size)
    except BaseException:
        shard.close()
        raise
    return shard


def _condition(key: str, value: object) -> q.FieldCondition:
    if isinstance(value, list | tuple | set):
        return q.FieldCondition(key, match=q.MatchAny(list(value)))
    return q.FieldCondition(key, match=q.MatchValue(value))


def edge_filter(where: Filter | None) -> q.Filter | None:
    if where is None or where.is_empty():
        return None
    return q.Filter(
        must=[_condition(k, v) for k, v in where.must.items()] or None,
        must_not=[_condition(k, v) for k, v in where.must_not.items()] or None,
    )


def edge_sparse(vector: SparseVector) -> q.SparseVector:
    return q.SparseVector(vector.indices, vector.values)


@contextmanager
def dimension_errors(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # the binding raises a bare Exception
        found = _DIMENSION_ERROR.search(str(exc))
        if found is None:
            raise
        raise VectorSizeMismatch(name, int(found[1]), int(found[2])) from exc


def write_meta(path: Path, dense_size: int) -> None:
    tmp = path / f"{INDEX_META}.tmp"
    tmp.write_text(json.dumps({"dense_size": dense_size}))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path / INDEX_META)


def read_dense_size(path: Path) -> int | None:
    try:
        return int(json.loads((path / INDEX_META).read_text())["dense_size"])
    except FileNotFoundError:
        return None


def configured_dense_size(path: Path) -> int:
    """The dense size in Edge's own config file, for shards made before INDEX_META existed."""
    return int(json.loads((path / "edge_config.json").read_text())["vectors"][DENSE]["size"])


def edge_points(points: Sequence[ChunkPoint]) -> list[q.Point]:
    return [q.Point(p.id, {DENSE: p.dense, SPARSE: edge_sparse(p.sparse)}, p.payload) for p in points]


def query_request(
    *,
    dense: list[float] | None,
    sparse: SparseVector | None,
    limit: int,
    where: Filter | None,
    with_payload: bool = True,
) -> q.QueryRequest:
    """A dense query (given `dense`) or a BM25 one (given `sparse`); a hybrid search asks both and fuses them
    (indexes.fusion)."""
    using, vector = (DENSE, dense) if dense is not None else (SPARSE, edge_sparse(sparse))
    return q.QueryRequest(
        limit=limit,
        query=q.Query.Nearest(vector, using=using),
        filter=edge_filter(where),
        with_payload=with_payload,
    )


def shard_hits(
    shard: q.EdgeShard,
    *,
    dense: list[float] | None,
    sparse: SparseVector | None,
    mode: SearchMode,
    limit: int,
    where: Filter | None,
) -> list[Hit]:
    """A query's hits with their payloads. A hybrid one asks both lists in one batch without payloads, fuses
    them (indexes.fusion) and then reads the fused hits' payloads."""
    if mode != "hybrid":
        only = dense if mode == "dense" else None
        return hits(shard.query(query_request(dense=only, sparse=sparse, limit=limit, where=where)))
    branch = branch_limit(limit)
    batch = q.QueryBatchRequest(
        [
            query_request(dense=dense, sparse=None, limit=branch, where=where, with_payload=False),
            query_request(dense=None, sparse=sparse, limit=branch, where=where, with_payload=False),
        ]
    )
    fused = fuse(*(hits(found) for found in shard.query_batch(batch)), limit)
    return with_payloads(fused, shard.retrieve([hit.id for hit in fused], True, False))


def hits(points: Sequence[q.ScoredPoint]) -> list[Hit]:
    return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]


def load_shard(folder: Path, name: str) -> q.EdgeShard:
    try:
        return q.EdgeShard.load(str(folder))
    except Exception as exc:  # the binding raises a bare Exception
        if "WouldBlock" in str(exc):
            raise StoreBusy(f"index {name!r} is open in another process; stop it or go through it") from exc
        raise
