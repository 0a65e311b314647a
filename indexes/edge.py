"""Qdrant Edge engine: Qdrant's Rust engine in-process, one shard directory per physical index.

A shard opens in one process only; the caller (the process that owns the data dir) keeps them open.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import qdrant_edge as q

from indexes.engine import (
    DENSE,
    SPARSE,
    ChunkPoint,
    Filter,
    Hit,
    SearchMode,
    SparseVector,
    check_delete_filter,
    check_dense_size,
    check_index_name,
    check_points,
    check_query,
)
from indexes.errors import IndexExists, IndexNotFound, StoreBusy, VectorSizeMismatch

# Payload fields that filters and deletions use; keyword indexes keep those fast at any size.
KEYWORD_FIELDS = ("source", "origin", "doc_hash", "file_type")
# How many candidates each branch of a hybrid query hands to rank fusion.
PREFETCH_FACTOR = 4
RRF_K = 60
# Dense first, sparse second. Equal weights make exact ties common (rank 1 + rank 3 against rank 3 + rank 1),
# and tied points come back in varying order; a hair's preference for the dense list makes the order fixed.
RRF_WEIGHTS = [1.0, 0.999]
# ragsvc's own record of a shard's dense size, next to Edge's files, so sizes are checked before a call.
INDEX_META = "ragsvc-index.json"
# The binding raises bare Exceptions; this one is translated for shards made before INDEX_META existed.
_DIMENSION_ERROR = re.compile(r"Vector dimension error: expected dim: (\d+), got (\d+)")


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


@contextmanager
def _dimension_errors(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # the binding raises a bare Exception
        found = _DIMENSION_ERROR.search(str(exc))
        if found is None:
            raise
        raise VectorSizeMismatch(name, int(found[1]), int(found[2])) from exc


def _write_meta(path: Path, dense_size: int) -> None:
    tmp = path / f"{INDEX_META}.tmp"
    tmp.write_text(json.dumps({"dense_size": dense_size}))
    os.replace(tmp, path / INDEX_META)


def _read_dense_size(path: Path) -> int | None:
    try:
        return int(json.loads((path / INDEX_META).read_text())["dense_size"])
    except FileNotFoundError:
        return None


class EdgeEngine:
    """Physical indexes as Qdrant Edge shards under `root`, opened lazily and kept open until `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, q.EdgeShard] = {}
        # None: a shard made before INDEX_META; the binding's own dimension error is translated then.
        self._dense_sizes: dict[str, int | None] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / name

    def _shard(self, name: str) -> q.EdgeShard:
        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                check_index_name(name)
                if not self._exists(name):
                    raise IndexNotFound(name)
                try:
                    shard = q.EdgeShard.load(str(self._path(name)))
                except Exception as exc:  # the binding raises a bare Exception
                    if "WouldBlock" in str(exc):
                        raise StoreBusy(
                            f"index {name!r} is open in another process; stop it or go through it"
                        ) from exc
                    raise
                self._shards[name] = shard
                self._dense_sizes[name] = _read_dense_size(self._path(name))
            return shard

    def _exists(self, name: str) -> bool:
        return name in self._shards or (self._path(name) / "wal").exists()

    def create_index(self, name: str, dense_size: int) -> None:
        check_index_name(name)
        check_dense_size(dense_size)
        config = q.EdgeConfig(
            vectors={DENSE: q.EdgeVectorParams(size=dense_size, distance=q.Distance.Cosine)},
            sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        )
        with self._lock:
            if self._exists(name):
                raise IndexExists(name)
            path = self._path(name)
            shard: q.EdgeShard | None = None
            try:
                shard = q.EdgeShard.create(str(path), config)
                for key in KEYWORD_FIELDS:
                    shard.update(q.UpdateOperation.create_field_index(key, q.PayloadSchemaType.Keyword))
                _write_meta(path, dense_size)
            except BaseException:
                # never leave a half-made shard behind: has_index would call it an index
                if shard is not None:
                    shard.close()
                shutil.rmtree(path, ignore_errors=True)
                raise
            self._shards[name] = shard
            self._dense_sizes[name] = dense_size

    def drop_index(self, name: str) -> None:
        """Drop the index and its files; dropping one that does not exist does nothing."""
        check_index_name(name)
        with self._lock:
            shard = self._shards.pop(name, None)
            self._dense_sizes.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._path(name), ignore_errors=True)

    def has_index(self, name: str) -> bool:
        check_index_name(name)
        return self._exists(name)

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        shard = self._shard(name)
        check_points(name, self._dense_sizes.get(name), points)
        if not points:
            return
        edge_points = [q.Point(p.id, {DENSE: p.dense, SPARSE: _sparse(p.sparse)}, p.payload) for p in points]
        with _dimension_errors(name):
            shard.update(q.UpdateOperation.upsert_points(edge_points))

    def delete(self, name: str, where: Filter) -> None:
        shard = self._shard(name)
        check_delete_filter(where)
        shard.update(q.UpdateOperation.delete_points_by_filter(_edge_filter(where)))

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
        shard = self._shard(name)
        check_query(name, self._dense_sizes.get(name), dense=dense, sparse=sparse, mode=mode, limit=limit)
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
                query=q.Fusion.Rrf(k=RRF_K, weights=RRF_WEIGHTS),
                with_payload=True,
            )
        with _dimension_errors(name):
            points = shard.query(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def count(self, name: str, where: Filter | None = None) -> int:
        return self._shard(name).count(q.CountRequest(exact=True, filter=_edge_filter(where)))

    def scroll(self, name: str, where: Filter | None = None, batch: int = 256) -> Iterator[Hit]:
        # the shard is opened here, not in the generator, so a missing index raises at the call
        return self._scroll(self._shard(name), _edge_filter(where), batch)

    @staticmethod
    def _scroll(shard: q.EdgeShard, edge_filter: q.Filter | None, batch: int) -> Iterator[Hit]:
        offset: str | uuid.UUID | None = None
        while True:
            records, offset = shard.scroll(
                q.ScrollRequest(
                    offset=offset, limit=batch, filter=edge_filter, with_payload=True, with_vector=False
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
            self._dense_sizes.clear()
