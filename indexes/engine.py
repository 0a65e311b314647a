"""The contract ragsvc needs from a vector engine, and the value types that cross it.

Engines store chunks as points with one dense vector, one sparse BM25 vector and a JSON payload.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SearchMode = Literal["dense", "sparse", "hybrid"]

DENSE = "dense"
SPARSE = "bm25"


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

    def build(self, name: str) -> None: ...

    def close(self) -> None: ...
