"""Retrieval quality on a doc folder and a question set: hit@5 and MRR@10 per search mode, counted on the
chunks `ragsvc search` returns (the issue's bar: the gold page among the top 5 results). `ragsvc eval run`
scores distinct pages instead, with ranx, and writes reports.

Usage: python bench/retrieval.py DOCS_FOLDER QUESTIONS.jsonl [--data-dir DIR] [--modes dense,sparse,hybrid]
Ingests the folder into a fresh collection (or reuses DIR), then asks every answerable question.
"""

# ruff: noqa: E402 - sys.path is fixed before the project's imports

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, where bench/ingest.py would shadow the `ingest` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from eval.questions import load_questions
from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings


def first_gold_rank(ranked: list[str], gold: set[str]) -> int | None:
    """Rank of the first result (a chunk, as `ragsvc search` returns them) from a gold page."""
    return next((rank for rank, source in enumerate(ranked, 1) if source in gold), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("docs", type=Path)
    parser.add_argument("questions", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--modes", default="dense,sparse,hybrid")
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ragsvc-bench-"))
    runtime = open_runtime(Settings(data_dir=data_dir))
    try:
        started = time.perf_counter()
        summary = ingestion.ingest_folder(runtime, LOCAL, "bench", args.docs)
        print(
            f"ingest: {summary.files} files, {summary.chunks_total} chunks, {time.perf_counter() - started:.1f} s"
        )
        questions = [q for q in load_questions(args.questions) if q.answerable]
        print(f"{len(questions)} answerable questions from {args.questions}")
        for mode in args.modes.split(","):
            hits, mrrs, latencies = [], [], []
            for q in questions:
                t0 = time.perf_counter()
                results = retrieval.search(runtime, LOCAL, "bench", q.question, top_k=10, mode=mode)
                latencies.append((time.perf_counter() - t0) * 1000)
                ranked = [r.source for r in results]
                gold = set(q.sources)
                rank = first_gold_rank(ranked, gold)
                hits.append(1.0 if rank is not None and rank <= 5 else 0.0)
                mrrs.append(1.0 / rank if rank is not None else 0.0)
                if args.show_misses and not hits[-1]:
                    print(f"  miss [{mode}] {q.question!r} gold={q.sources} got={ranked[:5]}")
            print(
                f"{mode:>7}: hit@5 {statistics.mean(hits):.3f}  MRR@10 {statistics.mean(mrrs):.3f}  "
                f"p50 {statistics.median(latencies):.1f} ms"
            )
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
