"""Search speed at scale on the embedded engine (Qdrant Edge): ingest rate, build time, memory, latency.

Usage: python bench/search.py [--sizes 10000,100000] [--million] [--queries 300] [--data-dir DIR]

Each size runs in a child process of its own (so resident memory is that size's alone) and prints, in one
run: ingest rate into the engine, index build time (engine.build), resident memory, and p50/p95 of dense,
filtered (one source file) and hybrid search through ragsvc's `indexes.search.search` next to the bare
`qdrant_edge` `EdgeShard.query` call with the same request, so that ragsvc's overhead is a figure.

The chunks are synthetic, made with a fixed seed: 384-d vectors are 256 topic centroids (standard normal)
plus normal noise of half their scale, L2-normalised, each chunk drawn from one topic. Texts are ~100 words
(80-120) drawn from an 8,000-word vocabulary of made-up pronounceable words with Zipf-distributed
frequencies (rank r with weight 1/r^1.1); BM25 sparse vectors are made from them with ragsvc's own
`indexes.sparse.bm25_document`. Payloads look like ingested docs: source paths of ~40 chunks per file in
nested folders, section headings and trails, doc and chunk hashes, file type, position, token count. A query
is a chunk's vector with noise added (renormalised) and six words of that chunk's text; the filtered query
keeps that chunk's source file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import qdrant_edge as q

from indexes.edge import PREFETCH_FACTOR, RRF_K, EdgeEngine
from indexes.engine import DENSE, SPARSE, ChunkPoint, Filter
from indexes.registry import CollectionRecord, EmbeddingIdentity, index_name
from indexes.search import search
from indexes.sparse import bm25_document, bm25_query

DIM = 384
TOPICS = 256
VOCABULARY = 8_000
ZIPF_EXPONENT = 1.1
CHUNKS_PER_FILE = 40
UPSERT_BATCH = 1_000
TOP_K = 5
WARMUP = 20
MODES = ("dense", "filtered", "hybrid")
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))))
    return np.array(sorted(words, key=lambda w: (len(w), w)))  # short words are the frequent ones


class Corpus:
    """Deterministic synthetic chunks, generated batch by batch so that 1M texts never sit in memory."""

    def __init__(self, size: int, seed: int = 12) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.words = vocabulary(self.rng)
        weights = 1.0 / np.arange(1, VOCABULARY + 1) ** ZIPF_EXPONENT
        self.word_cdf = np.cumsum(weights / weights.sum())
        self.centroids = self.rng.standard_normal((TOPICS, DIM)).astype(np.float32)
        self.topic = self.rng.integers(0, TOPICS, size=size)
        vectors = self.centroids[self.topic] + 0.5 * self.rng.standard_normal((size, DIM), dtype=np.float32)
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.files = max(1, size // CHUNKS_PER_FILE)
        folders = ["guides", "reference", "howto", "triton", "apps", "data", "training", "admin"]
        self.sources = [
            f"{folders[f % len(folders)]}/part-{f % 97:02d}/page-{f:06d}.{'rst' if f % 3 else 'md'}"
            for f in range(self.files)
        ]

    def source_of(self, i: int) -> str:
        return self.sources[i % self.files]

    def text(self, i: int) -> str:
        rng = np.random.default_rng((self.size, i))
        ranks = np.searchsorted(self.word_cdf, rng.random(int(rng.integers(80, 121))))
        return " ".join(self.words[np.minimum(ranks, VOCABULARY - 1)])

    def point(self, i: int) -> ChunkPoint:
        text = self.text(i)
        source = self.source_of(i)
        section = f"Section {i % 7 + 1}.{i % 5 + 1}"
        return ChunkPoint(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{self.size}/{i}")),
            dense=self.vectors[i].tolist(),
            sparse=bm25_document(text),
            payload={
                "source": source,
                "origin": "bench",
                "title": source.rsplit("/", 1)[-1],
                "section": section,
                "section_trail": ["Manual", f"Chapter {i % 11 + 1}", section],
                "anchor": f"section-{i % 7 + 1}-{i % 5 + 1}",
                "link": None,
                "position": i // self.files,
                "text": text,
                "tokens": len(text.split()) * 4 // 3,
                "doc_hash": hashlib.sha256(source.encode()).hexdigest()[:16],
                "chunk_hash": hashlib.sha256(text.encode()).hexdigest()[:16],
                "file_type": source.rsplit(".", 1)[-1],
            },
        )

    def batches(self) -> Iterator[list[ChunkPoint]]:
        for start in range(0, self.size, UPSERT_BATCH):
            yield [self.point(i) for i in range(start, min(start + UPSERT_BATCH, self.size))]

    def queries(self, count: int) -> list[tuple[list[float], str, str]]:
        """(vector, question, source) per query, near chunks picked at random."""
        rng = np.random.default_rng(99)
        picked = []
        for i in rng.choice(self.size, size=count, replace=False):
            vector = self.vectors[i] + 0.05 * rng.standard_normal(DIM, dtype=np.float32)
            words = self.text(int(i)).split()
            question = " ".join(rng.choice(words, size=6, replace=False))
            picked.append(((vector / np.linalg.norm(vector)).tolist(), question, self.source_of(int(i))))
        return picked


def memory_mb() -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM), in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def bare_request(mode: str, vector: list[float], question: str, source: str) -> q.QueryRequest:
    """The request EdgeEngine.query sends for the same search, built by hand."""
    if mode == "dense":
        return q.QueryRequest(limit=TOP_K, query=q.Query.Nearest(vector, using=DENSE), with_payload=True)
    if mode == "filtered":
        source_filter = q.Filter(must=[q.FieldCondition("source", match=q.MatchValue(source))])
        return q.QueryRequest(
            limit=TOP_K, query=q.Query.Nearest(vector, using=DENSE), filter=source_filter, with_payload=True
        )
    sparse = bm25_query(question)
    branch = max(TOP_K * PREFETCH_FACTOR, 20)
    return q.QueryRequest(
        limit=TOP_K,
        prefetches=[
            q.Prefetch(limit=branch, query=q.Query.Nearest(vector, using=DENSE)),
            q.Prefetch(
                limit=branch,
                query=q.Query.Nearest(q.SparseVector(sparse.indices, sparse.values), using=SPARSE),
            ),
        ],
        query=q.Fusion.Rrf(k=RRF_K),
        with_payload=True,
    )


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000


def timed(call: Callable[[], list]) -> tuple[float, list[float]]:
    """Seconds the call took, and the scores of what it found."""
    started = time.perf_counter()
    hits = call()
    seconds = time.perf_counter() - started
    return seconds, [round(hit.score, 5) for hit in hits]


def run_one(size: int, queries: int, data_dir: Path) -> dict[str, object]:
    corpus = Corpus(size)
    identity = EmbeddingIdentity(
        provider="synthetic", model="bench/synthetic-384", dimensions=DIM, chunking="bench"
    )
    record = CollectionRecord(name="bench", embedding=identity, live_index=index_name("bench", identity))
    engine = EdgeEngine(data_dir / "indexes")
    result: dict[str, object] = {"size": size, "rss_before_mb": memory_mb()["VmRSS"]}
    engine.create_index(record.live_index, DIM)

    engine_seconds = 0.0
    started = time.perf_counter()
    for batch in corpus.batches():
        engine_seconds += timed(lambda batch=batch: engine.upsert(record.live_index, batch) or [])[0]
    result["ingest_points_per_s"] = size / engine_seconds
    result["ingest_with_bm25_points_per_s"] = size / (time.perf_counter() - started)
    result["rss_after_ingest_mb"] = memory_mb()["VmRSS"]

    result["build_s"] = timed(lambda: engine.build(record.live_index) or [])[0]
    assert engine.count(record.live_index) == size
    mem = memory_mb()
    result["rss_after_build_mb"], result["rss_peak_mb"] = mem["VmRSS"], mem["VmHWM"]

    shard = engine._shard(record.live_index)  # the bare engine call: the same shard ragsvc searches
    asked = corpus.queries(queries + WARMUP)
    latencies: dict[str, dict[str, list[float]]] = {m: {"ragsvc": [], "bare": []} for m in MODES}
    for n, (vector, question, source) in enumerate(asked):
        for mode in MODES:
            where = Filter(must={"source": source}) if mode == "filtered" else None
            search_mode = "dense" if mode == "filtered" else mode

            def through_ragsvc(
                vector: list[float] = vector,
                question: str = question,
                search_mode: str = search_mode,
                where=where,
            ) -> list:
                return search(
                    engine,
                    record,
                    question=question,
                    query_vector=vector,
                    top_k=TOP_K,
                    mode=search_mode,
                    where=where,
                )

            request = bare_request(mode, vector, question, source)
            bare_call = lambda request=request: shard.query(request)  # noqa: E731
            # alternate which goes first: the second call of a pair finds the same vectors in cache
            if n % 2:
                bare_s, bare_scores = timed(bare_call)
                ragsvc_s, ragsvc_scores = timed(through_ragsvc)
            else:
                ragsvc_s, ragsvc_scores = timed(through_ragsvc)
                bare_s, bare_scores = timed(bare_call)
            # the same request must score the same hits, or the comparison means nothing (scores, not ids:
            # rank fusion gives the 2nd dense and the 2nd sparse hit equal scores, in either order)
            assert ragsvc_scores == bare_scores, (mode, question, ragsvc_scores, bare_scores)
            if mode == "filtered":
                assert ragsvc_scores, "a chunk's own source filter finds at least that chunk"
            if n >= WARMUP:
                latencies[mode]["ragsvc"].append(ragsvc_s)
                latencies[mode]["bare"].append(bare_s)
    for mode in MODES:
        for path in ("ragsvc", "bare"):
            p50, p95 = percentiles(latencies[mode][path])
            result[f"{mode}_{path}_p50_ms"], result[f"{mode}_{path}_p95_ms"] = p50, p95
    engine.close()
    return result


def print_report(results: list[dict[str, object]]) -> None:
    print()
    print(
        f"{'chunks':>9} {'ingest pts/s':>12} {'(with BM25)':>11} {'build s':>8} {'RSS MB':>8} {'peak MB':>8}"
    )
    for r in results:
        print(
            f"{r['size']:>9,} {r['ingest_points_per_s']:>12,.0f} {r['ingest_with_bm25_points_per_s']:>11,.0f} "
            f"{r['build_s']:>8.1f} {r['rss_after_build_mb']:>8.0f} {r['rss_peak_mb']:>8.0f} "
            f"{r['rss_before_mb']:>8.0f}"
        )
    print()
    print(
        f"{'chunks':>9} {'search':>9} {'ragsvc p50':>10} {'p95':>7} {'bare p50':>9} {'p95':>7} "
        f"{'overhead p50':>12} {'ratio':>6}   (ms, top {TOP_K})"
    )
    for r in results:
        for mode in MODES:
            ragsvc_p50, bare_p50 = r[f"{mode}_ragsvc_p50_ms"], r[f"{mode}_bare_p50_ms"]
            print(
                f"{r['size']:>9,} {mode:>9} {ragsvc_p50:>10.3f} {r[f'{mode}_ragsvc_p95_ms']:>7.3f} "
                f"{bare_p50:>9.3f} {r[f'{mode}_bare_p95_ms']:>7.3f} {ragsvc_p50 - bare_p50:>12.3f} "
                f"{ragsvc_p50 / bare_p50:>6.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument(
        "--million", action="store_true", help="also 1,000,000 chunks (about 12 min to build)"
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, help="where the shards go (default: a temp dir)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size, JSON out
    args = parser.parse_args()

    if args.one:
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            print(json.dumps(run_one(args.one, args.queries, Path(tmp))))
        return

    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    results = []
    for size in sizes:
        print(f"{size:,} chunks ...", flush=True)
        command = [sys.executable, __file__, "--one", str(size), "--queries", str(args.queries)]
        if args.data_dir:
            command += ["--data-dir", str(args.data_dir)]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print_report(results)


if __name__ == "__main__":
    main()
