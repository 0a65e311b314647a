"""Qdrant server engine: one Qdrant collection per physical index, reached through qdrant-client.

Serves a Qdrant server or cluster (url, optional API key); qdrant-client's local mode (a path) stands in
for a server in tests. Besides the engine contract it keeps aliases (`indexes.engine.LiveAliases`): ragsvc
points an alias named after each collection at its live index, so that readers outside ragsvc switch
with the registry, at once.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from indexes.edge_shard import KEYWORD_FIELDS
from indexes.engine import (
    DENSE,
    SPARSE,
    BuildReport,
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
from indexes.errors import EngineUnavailable, IndexBuildFailed, IndexExists, IndexNotFound, InvalidRequest
from indexes.fusion import branch_limit, fuse, with_payloads

# Points per upsert request: keeps a request well under the server's 32 MB body limit at 384-d and more.
UPSERT_BATCH = 256
BUILD_POLL_S = 0.5


def _condition(key: str, value: object) -> models.FieldCondition:
    if isinstance(value, list | tuple | set):
        return models.FieldCondition(key=key, match=models.MatchAny(any=list(value)))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _qdrant_filter(where: Filter | None) -> models.Filter | None:
    if where is None or where.is_empty():
        return None
    return models.Filter(
        must=[_condition(k, v) for k, v in where.must.items()] or None,
        must_not=[_condition(k, v) for k, v in where.must_not.items()] or None,
    )


def _sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)


class QdrantServerEngine:
    """Physical indexes as collections of a Qdrant server (`url`) or of qdrant-client's local mode (`path`)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        path: Path | None = None,
        hnsw: models.HnswConfigDiff | None = None,
        timeout: int = 30,
        build_timeout: float = 3600.0,
        check_compatibility: bool = True,
    ) -> None:
        if (url is None) == (path is None):
            raise TypeError("QdrantServerEngine needs exactly one of url (a server) or path (local mode)")
        self.location = url or str(path)
        self.hnsw = hnsw
        self.build_timeout = build_timeout
        self._local = path is not None
        if self._local:
            # Local mode keeps points in Python dicts and numpy arrays that an upsert grows in place, and
            # is not safe under concurrent writes from threads (measured): every call, reads included
            # (a scroll iterates the dict an upsert grows), is serialised by one lock. A server needs none.
            self._client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
            self._serial: AbstractContextManager[object] = threading.RLock()
        else:
            self._client = QdrantClient(
                url=url, api_key=api_key, timeout=timeout, check_compatibility=check_compatibility
            )
            self._serial = nullcontext()
        # Dense size per index, read once from the collection: sizes are checked before a request is sent.
        self._dense_sizes: dict[str, int] = {}

    @contextmanager
    def _calls(self, name: str) -> Iterator[None]:
        """Serialise in local mode, and turn qdrant-client's errors for `name` into ragsvc errors."""
        try:
            with self._serial:
                yield
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                self._dense_sizes.pop(name, None)
                raise IndexNotFound(name) from exc
            raise
        except ValueError as exc:
            # local mode raises ValueError where a server answers 404
            if self._local and str(exc) == f"Collection {name} not found":
                self._dense_sizes.pop(name, None)
                raise IndexNotFound(name) from exc
            raise
        except (ResponseHandlingException, httpx.TransportError) as exc:
            raise EngineUnavailable(f"the Qdrant server at {self.location} did not answer: {exc}") from exc

    def _dense_size(self, name: str) -> int:
        """The index's dense size; raises IndexNotFound when there is no such index."""
        check_index_name(name)
        size = self._dense_sizes.get(name)
        if size is None:
            with self._calls(name):
                vectors = self._client.get_collection(name).config.params.vectors
            if not isinstance(vectors, dict) or DENSE not in vectors:
                raise InvalidRequest(
                    f"collection {name!r} has no {DENSE!r} vector: it was not made by ragsvc"
                )
            size = self._dense_sizes[name] = vectors[DENSE].size
        return size

    def create_index(self, name: str, dense_size: int) -> None:
        check_index_name(name)
        check_dense_size(dense_size)
        with self._calls(name):
            if self._client.collection_exists(name):
                raise IndexExists(name)
            try:
                self._client.create_collection(
                    name,
                    vectors_config={
                        DENSE: models.VectorParams(size=dense_size, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                    hnsw_config=self.hnsw,
                )
            except UnexpectedResponse as exc:
                if exc.status_code == 409:  # another replica created it between the check and here
                    raise IndexExists(name) from exc
                raise
            try:
                self._create_payload_indexes(name)
            except BaseException:
                # never leave a half-made index behind
                self._client.delete_collection(name)
                raise
        self._dense_sizes[name] = dense_size

    def _create_payload_indexes(self, name: str) -> None:
        with warnings.catch_warnings():
            # local mode ignores payload indexes and warns about it; a server keeps them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for key in KEYWORD_FIELDS:
                self._client.create_payload_index(name, key, models.PayloadSchemaType.KEYWORD, wait=True)

    def drop_index(self, name: str) -> None:
        """Drop the index (and the aliases that point at it); dropping one that does not exist does nothing."""
        check_index_name(name)
        with self._calls(name):
            self._client.delete_collection(name)
        self._dense_sizes.pop(name, None)

    def has_index(self, name: str) -> bool:
        check_index_name(name)
        with self._calls(name):
            return self._client.collection_exists(name)

    def point_alias(self, alias: str, index: str) -> None:
        """Point `alias` at `index` in one atomic step: every replica sees either the old index or this one.
        A name that a Qdrant collection already holds is refused (IndexExists) and nothing changes."""
        check_index_name(alias)
        self._dense_size(index)  # IndexNotFound before anything changes
        with self._calls(index):
            current = self._aliases()
            if alias not in current and self._client.collection_exists(alias):
                raise IndexExists(alias)
            if current.get(alias) == index:
                return
            operations: list[models.CreateAliasOperation | models.DeleteAliasOperation] = []
            if alias in current:
                operations.append(
                    models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
                )
            operations.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=index, alias_name=alias)
                )
            )
            self._client.update_collection_aliases(change_aliases_operations=operations)
        self._dense_sizes.pop(alias, None)  # the alias may now name an index of another size

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self._client.get_aliases().aliases}

    def aliases(self) -> dict[str, str]:
        """Every alias on the server and the index it points at."""
        with self._calls(""):
            return self._aliases()

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        check_points(name, self._dense_size(name), points)
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                models.PointStruct(
                    id=p.id, vector={DENSE: p.dense, SPARSE: _sparse(p.sparse)}, payload=p.payload
                )
                for p in points[start : start + UPSERT_BATCH]
            ]
            with self._calls(name):
                self._client.upsert(name, points=batch, wait=True)

    def delete(self, name: str, where: Filter) -> None:
        self._dense_size(name)
        check_delete_filter(where)
        with self._calls(name):
            self._client.delete(
                name, points_selector=models.FilterSelector(filter=_qdrant_filter(where)), wait=True
            )

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
        check_query(name, self._dense_size(name), dense=dense, sparse=sparse, mode=mode, limit=limit)
        query_filter = _qdrant_filter(where)
        hybrid = mode == "hybrid"
        lists = [("dense", DENSE, dense), ("sparse", SPARSE, _sparse(sparse) if sparse is not None else None)]
        requests = [
            models.QueryRequest(
                query=vector,
                using=using,
                filter=query_filter,
                limit=branch_limit(limit) if hybrid else limit,
                with_payload=not hybrid,  # a hybrid search reads only its fused hits' payloads
            )
            for list_mode, using, vector in lists
            if mode in (list_mode, "hybrid")
        ]
        with self._calls(name):
            responses = self._client.query_batch_points(name, requests=requests)
            found = [
                [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in r.points] for r in responses
            ]
            if not hybrid:
                return found[0]
            fused = fuse(*found, limit)
            return with_payloads(
                fused, self._client.retrieve(name, [hit.id for hit in fused], with_payload=True)
            )

    def count(self, name: str, where: Filter | None = None) -> int:
        check_index_name(name)
        with self._calls(name):
            return self._client.count(name, count_filter=_qdrant_filter(where), exact=True).count

    def scroll(self, name: str, where: Filter | None = None, batch: int = 256) -> Iterator[Hit]:
        self._dense_size(name)  # a missing index raises at the call, not at the first item
        return self._scroll(name, _qdrant_filter(where), batch)

    def _scroll(self, name: str, scroll_filter: models.Filter | None, batch: int) -> Iterator[Hit]:
        offset: models.ExtendedPointId | None = None
        while True:
            with self._calls(name):
                records, offset = self._client.scroll(
                    name,
                    scroll_filter=scroll_filter,
                    limit=batch,
                    offset=offset,
                    with_payload=True,
                    with_vectors=False,
                )
            for record in records:
                yield Hit(str(record.id), 1.0, dict(record.payload or {}))
            if offset is None:
                return

    def build(self, name: str) -> BuildReport:
        """Wait until the server has indexed every segment. The server builds in its own process, so this
        holds no GIL, and queries go on meanwhile; local mode has no index to build and returns at once."""
        started = time.monotonic()
        deadline = started + self.build_timeout
        check_index_name(name)
        while True:
            with self._calls(name):
                status = self._client.get_collection(name).status
            if status == models.CollectionStatus.GREEN:
                optimize_s = time.monotonic() - started
                return BuildReport(name, True, "the server has indexed every segment", optimize_s=optimize_s)
            if status == models.CollectionStatus.GREY:
                # optimizations pending but not started (after a restart): an empty update starts them
                with self._calls(name):
                    self._client.update_collection(name, optimizers_config=models.OptimizersConfigDiff())
            if time.monotonic() > deadline:
                raise IndexBuildFailed(
                    f"index {name!r} is still being built after {self.build_timeout:.0f} s (status {status}); "
                    "it keeps serving meanwhile"
                )
            time.sleep(BUILD_POLL_S)

    def close(self) -> None:
        with self._serial:
            self._client.close()
