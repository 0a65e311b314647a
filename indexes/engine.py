"""The contract ragsvc needs from a vector engine, and the value types that cross it.

Engines store chunks as points with one dense vector, one sparse BM25 vector and a JSON payload.
Both engines check their input with the functions below, so the same bad input raises the same ragsvc error.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from indexes.errors import InvalidCollectionName, InvalidRequest, VectorSizeMismatch

SearchMode = Literal["dense", "sparse", "hybrid"]

DENSE = "dense"
SPARSE = "bm25"
SEARCH_MODES = ("dense", "sparse", "hybrid")

# Physical index names every engine can hold: a directory name for Qdrant Edge, a collection name for a
# Qdrant server. Both engines check it, so a name is valid on both or on neither.
INDEX_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
MAX_DENSE_SIZE = 65_536


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    dense: list[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass
class BuildReport:
    """What a `build` did; `built` False when there was nothing to build. Seconds are wall time."""

    index: str
    built: bool
    reason: str
    points: int = 0
    copy_s: float = 0.0  # Edge: writers wait while the flushed shard is copied
    optimize_s: float = 0.0  # Edge: in a build process of its own; queries and writes go on
    switch_s: float = 0.0  # Edge: writers wait while the copy is loaded, caught up and switched in
    flush_s: float = 0.0  # Edge: of copy_s, the live shard's flush (it holds the GIL: queries wait too)
    load_s: float = 0.0  # Edge: of switch_s, loading the built copy (queries go on)
    close_s: float = 0.0  # Edge: closing the old shard after its last query (queries go on)
    replayed_writes: int = 0
    segments: int = 0


@dataclass(frozen=True)
class Filter:
    """Payload conditions: `must` keys equal (or, for a list, are one of) the value; `must_not` likewise."""

    must: dict[str, Any] = field(default_factory=dict)
    must_not: dict[str, Any] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.must and not self.must_not


class VectorEngine(Protocol):
    def create_index(self, name: str, dense_size: int) -> None: ...

    def drop_index(self, name: str) -> None: ...

    def has_index(self, name: str) -> bool: ...

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None: ...

    def delete(self, name: str, where: Filter) -> None: ...

    def query(
        self,
        name: str,
        *,
        dense: list[float] | None,
        sparse: SparseVector | None,
        mode: SearchMode,
        limit: int,
        where: Filter | None = None,
    ) -> list[Hit]: ...

    def count(self, name: str, where: Filter | None = None) -> int: ...

    def scroll(self, name: str, where: Filter | None = None, batch: int = 256) -> Iterator[Hit]: ...

    def build(self, name: str) -> BuildReport: ...

    def close(self) -> None: ...


@runtime_checkable
class LiveAliases(Protocol):
    """An optional capability: an engine that can also reach each collection's live index by the
    collection's own name, for readers outside ragsvc. A Qdrant server has it (Qdrant aliases, switched
    atomically for every client); Qdrant Edge has no aliases and does not claim it."""

    def point_alias(self, alias: str, index: str) -> None: ...

    def aliases(self) -> dict[str, str]: ...


def check_index_name(name: str) -> None:
    if not isinstance(name, str) or not INDEX_NAME_PATTERN.fullmatch(name):
        raise InvalidCollectionName(
            f"invalid index name {name!r}: use 1-200 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def check_dense_size(size: int) -> None:
    if not 1 <= size <= MAX_DENSE_SIZE:
        raise InvalidRequest(f"dense vector size {size} is out of range 1-{MAX_DENSE_SIZE}")


def _check_sparse(vector: SparseVector) -> None:
    if len(vector.indices) != len(vector.values):
        raise InvalidRequest(
            f"sparse vector has {len(vector.indices)} indices but {len(vector.values)} values"
        )


def check_points(name: str, dense_size: int | None, points: Sequence[ChunkPoint]) -> None:
    """Refuse the whole batch before anything is written. `dense_size` None: the engine checks sizes itself."""
    for point in points:
        try:
            uuid.UUID(point.id)
        except (ValueError, TypeError, AttributeError):
            raise InvalidRequest(f"point id {point.id!r} is not a UUID") from None
        if dense_size is not None and len(point.dense) != dense_size:
            raise VectorSizeMismatch(name, dense_size, len(point.dense))
        _check_sparse(point.sparse)


def check_query(
    name: str,
    dense_size: int | None,
    *,
    dense: list[float] | None,
    sparse: SparseVector | None,
    mode: str,
    limit: int,
) -> None:
    if mode not in SEARCH_MODES:
        raise InvalidRequest(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, got {limit}")
    if mode in ("dense", "hybrid"):
        if dense is None:
            raise InvalidRequest(f"{mode} search needs a dense query vector")
        if dense_size is not None and len(dense) != dense_size:
            raise VectorSizeMismatch(name, dense_size, len(dense))
    if mode in ("sparse", "hybrid"):
        if sparse is None:
            raise InvalidRequest(f"{mode} search needs a sparse query vector")
        _check_sparse(sparse)


def check_delete_filter(where: Filter) -> None:
    if where.is_empty():
        raise InvalidRequest("refusing to delete with an empty filter: drop the index instead")
