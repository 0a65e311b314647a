"""Retrieval metrics at page level: a question is answered by its gold source files."""

from __future__ import annotations


def first_relevant_rank(retrieved: list[str], gold: set[str]) -> int | None:
    for rank, source in enumerate(retrieved, 1):
        if source in gold:
            return rank
    return None


def hit_at(retrieved: list[str], gold: set[str], k: int) -> float:
    rank = first_relevant_rank(retrieved[:k], gold)
    return 1.0 if rank is not None else 0.0


def mrr_at(retrieved: list[str], gold: set[str], k: int = 10) -> float:
    rank = first_relevant_rank(retrieved[:k], gold)
    return 1.0 / rank if rank is not None else 0.0
