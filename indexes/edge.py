"""Qdrant Edge engine: Qdrant's Rust engine in-process, one shard directory per physical index.

A shard opens in one process only; the caller (the process that owns the data dir) keeps them open.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import qdrant_edge as q

from indexes.engine import DENSE, SPARSE, ChunkPoint, Filter, Hit, SearchMode, SparseVector
from indexes.errors import StoreBusy

# Payload fields that filters and deletions use; keyword indexes keep those fast at any size.
KEYWORD_FIELDS = ("source", "origin", "doc_hash", "file_type")
# How many candidates each branch of a hybrid query hands to rank fusion.
PREFETCH_FACTOR = 4
RRF_K = 60


def _condition(key: str, value: object) -> q.FieldCondition:
    if isinstance(value, list | tuple | set):
        return q.FieldCondition(key, match=q.MatchAny(list(value)))
    return q.FieldCondition(key, match=q.MatchValue(value))


def _edge_filter(where: Filter | None) -> q.Filter | None:
    if where is None or where.is_empty():
        return None
    return q.Filter(
        must=[_condition(k, v) for k, v in where.must.items()] or None,
        must_not=[_condition(k, v) for k, v in where.must_not.items()] or None,
    )


def _sparse(vector: SparseVector) -> q.SparseVector:
    return q.SparseVector(vector.indices, vector.values)


class EdgeEngine:
    """Physical indexes as Qdrant Edge shards under `root`, opened lazily and kept open until `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, q.EdgeShard] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / name

    def _shard(self, name: str) -> q.EdgeShard:
        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                try:
                    shard = q.EdgeShard.load(str(self._path(name)))
                except Exception as exc:  # the binding raises a bare Exception
                    if "WouldBlock" in str(exc):
                        raise StoreBusy(
                            f"index {name!r} is open in another process; stop it or go through it"
                        ) from exc
                    raise
                self._shards[name] = shard
            return shard

    def create_index(self, name: str, dense_size: int) -> None:
        config = q.EdgeConfig(
            vectors={DENSE: q.EdgeVectorParams(size=dense_size, distance=q.Distance.Cosine)},
            sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        )
        with self._lock:
            shard = q.EdgeShard.create(str(self._path(name)), config)
            for key in KEYWORD_FIELDS:
                shard.update(q.UpdateOperation.create_field_index(key, q.PayloadSchemaType.Keyword))
            self._shards[name] = shard

    def drop_index(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._path(name), ignore_errors=True)

    def has_index(self, name: str) -> bool:
        return name in self._shards or (self._path(name) / "wal").exists()

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        edge_points = [q.Point(p.id, {DENSE: p.dense, SPARSE: _sparse(p.sparse)}, p.payload) for p in points]
        self._shard(name).update(q.UpdateOperation.upsert_points(edge_points))

    def delete(self, name: str, where: Filter) -> None:
        edge_filter = _edge_filter(where)
        if edge_filter is None:
            raise ValueError("refusing to delete with an empty filter")
        self._shard(name).update(q.UpdateOperation.delete_points_by_filter(edge_filter))

    def query(
        self,
        name: str,
        *,
        dense: list[float] | None,
        sparse: SparseVector | None,
        mode: SearchMode,
        limit: int,
        where: Filter | None = None,
    ) -> list[Hit]:
        edge_filter = _edge_filter(where)
        if mode == "dense":
            request = q.QueryRequest(
                limit=limit, query=q.Query.Nearest(dense, using=DENSE), filter=edge_filter, with_payload=True
            )
        elif mode == "sparse":
            request = q.QueryRequest(
                limit=limit,
                query=q.Query.Nearest(_sparse(sparse), using=SPARSE),
                filter=edge_filter,
                with_payload=True,
            )
        else:
            branch = max(limit * PREFETCH_FACTOR, 20)
            request = q.QueryRequest(
                limit=limit,
                prefetches=[
                    q.Prefetch(limit=branch, query=q.Query.Nearest(dense, using=DENSE), filter=edge_filter),
                    q.Prefetch(
                        limit=branch, query=q.Query.Nearest(_sparse(sparse), using=SPARSE), filter=edge_filter
                    ),
                ],
                query=q.Fusion.Rrf(k=RRF_K),
                with_payload=True,
            )
        points = self._shard(name).query(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def count(self, name: str, where: Filter | None = None) -> int:
        return self._shard(name).count(q.CountRequest(exact=True, filter=_edge_filter(where)))

    def scroll(self, name: str, where: Filter | None = None, batch: int = 256) -> Iterator[Hit]:
        shard = self._shard(name)
        offset: str | uuid.UUID | None = None
        while True:
            records, offset = shard.scroll(
                q.ScrollRequest(
                    offset=offset,
                    limit=batch,
                    filter=_edge_filter(where),
                    with_payload=True,
                    with_vector=False,
                )
            )
            for record in records:
                yield Hit(str(record.id), 1.0, dict(record.payload or {}))
            if offset is None:
                return

    def build(self, name: str) -> None:
        """Build the HNSW index. Holds the GIL for its whole run: never call it in a process that serves."""
        self._shard(name).optimize()

    def flush(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
