"""Search speed at scale on the embedded engine (Qdrant Edge): ingest rate, build time, memory, latency.

Usage: python bench/search.py [--sizes 10000,100000] [--million] [--queries 300] [--data-dir DIR]
                              [--payload-hnsw]

Each size runs in a child process of its own (so resident memory is that size's alone) and prints, in one
run: ingest rate into the engine, index build time (engine.build: a copy of the shard is optimised in a
build process of its own and switched in; the time is split into copy, optimise and switch), how many
searches this process answered while the build ran and how slow they were then, resident memory of the
serving process and the build process's peak, and p50/p95 of dense, filtered (one source file) and hybrid
search through ragsvc's `indexes.search.search` next to the same shard calls made bare
(`indexes.edge_shard.shard_hits`, what EdgeEngine.query runs inside its locks; for hybrid: both lists in one
batch, fused by `indexes.fusion`, then the fused hits' payloads), so that ragsvc's overhead is a figure. A
fourth row, per-page, is hybrid search as ragsvc serves it by default (RAGSVC_CHUNKS_PER_SOURCE=1: deeper
lists, kept to a chunk a page) next to the bare hybrid search: its results differ by design, so it is the cost
of that default, not overhead. `--payload-hnsw` makes the keyword payload indexes
with HNSW subgraphs (Qdrant's default; ragsvc makes them without), to compare build times.

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
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import qdrant_edge as q

from indexes.edge import EdgeEngine
from indexes.edge_shard import KEYWORD_FIELDS, shard_hits
from indexes.engine import ChunkPoint, Filter
from indexes.payload import ChunkPayload
from indexes.registry import CollectionRecord, EmbeddingIdentity, index_name
from indexes.search import CHANGELOG_DEMOTION, search
from indexes.sparse import bm25_document, bm25_query

DIM = 384
TOPICS = 256
VOCABULARY = 8_000
ZIPF_EXPONENT = 1.1
CHUNKS_PER_FILE = 40
UPSERT_BATCH = 1_000
TOP_K = 5
WARMUP = 20
# Searches during the build come this far apart (about 100 a second): a busy server, not a flood that
# would take the CPU from the build process.
SEARCH_PAUSE_S = 0.01
MODES = ("dense", "filtered", "hybrid", "per-page")
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
            payload=ChunkPayload(
                source=source,
                origin="bench",
                title=source.rsplit("/", 1)[-1],
                section=section,
                section_trail=["Manual", f"Chapter {i % 11 + 1}", section],
                anchor=f"section-{i % 7 + 1}-{i % 5 + 1}",
                position=i // self.files,
                text=text,
                tokens=len(text.split()) * 4 // 3,
                doc_hash=hashlib.sha256(source.encode()).hexdigest()[:16],
                chunk_hash=hashlib.sha256(text.encode()).hexdigest()[:16],
                file_type=source.rsplit(".", 1)[-1],
            ).model_dump(),
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


def bare_call(
    shard: q.EdgeShard, mode: str, vector: list[float], question: str, source: str
) -> Callable[[], list]:
    """The shard calls EdgeEngine.query makes for the same search: TOP_K and the few more that ragsvc asks
    for so that a demoted changelog hit can fall behind them (the first TOP_K are compared)."""
    limit = TOP_K + CHANGELOG_DEMOTION
    where = Filter(must={"source": source}) if mode == "filtered" else None
    sparse = bm25_query(question) if mode == "hybrid" else None
    search_mode = "hybrid" if mode == "hybrid" else "dense"
    return lambda: shard_hits(shard, dense=vector, sparse=sparse, mode=search_mode, limit=limit, where=where)[
        :TOP_K
    ]


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000


def timed(call: Callable[[], list]) -> tuple[float, list[float]]:
    """Seconds the call took, and the scores of what it found."""
    started = time.perf_counter()
    hits = call()
    seconds = time.perf_counter() - started
    return seconds, [round(hit.score, 5) for hit in hits]


def search_during_build(engine: EdgeEngine, record: CollectionRecord, corpus: Corpus) -> dict[str, object]:
    """Build the index while a thread searches through ragsvc (hybrid), as a busy server would."""
    asked = corpus.queries(50)
    latencies: list[float] = []  # while the build process runs
    in_copy: list[float] = []  # while this process flushes and copies the shard
    in_switch: list[float] = []  # while this process loads the copy, catches up, switches, closes the old
    stop = threading.Event()
    seen_child = threading.Event()

    def ask() -> None:
        n = 0
        while not stop.is_set():
            vector, question, _ = asked[n % len(asked)]
            n += 1
            child_before = engine.building_pid(record.live_index) is not None
            started = time.perf_counter()
            search(engine, record, question=question, query_vector=vector, top_k=TOP_K, mode="hybrid")
            seconds = time.perf_counter() - started
            child_after = engine.building_pid(record.live_index) is not None
            if child_before and child_after:
                latencies.append(seconds)
            else:  # before the build process started (the copy) or after it ended (the switch)
                (in_switch if seen_child.is_set() else in_copy).append(seconds)
            if child_before or child_after:
                seen_child.set()
            stop.wait(SEARCH_PAUSE_S)

    asking = threading.Thread(target=ask)
    asking.start()
    started = time.perf_counter()
    try:
        engine.build(record.live_index)
    finally:
        build_s = time.perf_counter() - started
        stop.set()
        asking.join()
    report = engine.builds[record.live_index]
    result: dict[str, object] = {
        "build_s": build_s,
        "build_built": report.built,
        "build_copy_s": report.copy_s,
        "build_optimize_s": report.optimize_s,
        "build_switch_s": report.switch_s,
        "build_flush_s": report.flush_s,
        "build_load_s": report.load_s,
        "build_close_s": report.close_s,
        "build_segments": report.segments,
        "searches_during_build": len(latencies),
    }
    if len(latencies) >= 2:
        result["during_build_p50_ms"] = percentiles(latencies)[0]
        result["during_build_max_ms"] = max(latencies) * 1000
    result["searches_in_copy_or_switch"] = len(in_copy) + len(in_switch)
    result["in_copy_or_switch_max_ms"] = max(in_copy + in_switch, default=float("nan")) * 1000
    result["in_copy_max_ms"] = max(in_copy, default=float("nan")) * 1000
    result["in_switch_max_ms"] = max(in_switch, default=float("nan")) * 1000
    return result


def run_one(size: int, queries: int, data_dir: Path, payload_hnsw: bool = False) -> dict[str, object]:
    corpus = Corpus(size)
    identity = EmbeddingIdentity(
        provider="synthetic", model="bench/synthetic-384", dimensions=DIM, chunking="bench"
    )
    record = CollectionRecord(name="bench", embedding=identity, live_index=index_name("bench", identity))
    engine = EdgeEngine(data_dir / "indexes")
    result: dict[str, object] = {"size": size, "rss_before_mb": memory_mb()["VmRSS"]}
    engine.create_index(record.live_index, DIM)
    if payload_hnsw:  # Qdrant's default keyword index: HNSW subgraphs per frequent value
        shard = engine._index(record.live_index).live.shard
        for key in KEYWORD_FIELDS:
            shard.update(q.UpdateOperation.delete_field_index(key))
            shard.update(
                q.UpdateOperation.create_field_index(key, q.KeywordIndexParams(memory=q.Memory.Cold))
            )
    result["payload_hnsw"] = payload_hnsw
    result["queries"] = queries

    engine_seconds = longest_write = 0.0
    started = time.perf_counter()
    for batch in corpus.batches():
        seconds = timed(lambda batch=batch: engine.upsert(record.live_index, batch) or [])[0]
        engine_seconds += seconds
        longest_write = max(longest_write, seconds)  # a write that flushes holds the GIL for the flush
    result["longest_write_s"] = longest_write
    result["ingest_points_per_s"] = size / engine_seconds
    result["ingest_with_bm25_points_per_s"] = size / (time.perf_counter() - started)
    result["rss_after_ingest_mb"] = memory_mb()["VmRSS"]

    result.update(search_during_build(engine, record, corpus))
    print(json.dumps(result), file=sys.stderr, flush=True)  # the build's figures, whatever happens next
    assert engine.count(record.live_index) == size
    mem = memory_mb()
    result["rss_after_build_mb"], result["rss_peak_mb"] = mem["VmRSS"], mem["VmHWM"]
    # of waited-for children, that is of the build process: peak memory (kB on Linux) and CPU time, which a
    # busy machine changes less than wall time
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["build_process_peak_mb"] = children.ru_maxrss / 1024
    result["build_process_cpu_s"] = children.ru_utime + children.ru_stime

    shard = engine._index(record.live_index).live.shard  # the bare engine call: the shard ragsvc searches
    asked = corpus.queries(queries + WARMUP)
    latencies: dict[str, dict[str, list[float]]] = {m: {"ragsvc": [], "bare": []} for m in MODES}
    mismatches = dict.fromkeys(MODES, 0)
    for n, (vector, question, source) in enumerate(asked):
        for mode in MODES:
            where = Filter(must={"source": source}) if mode == "filtered" else None
            search_mode = {"filtered": "dense", "per-page": "hybrid"}.get(mode, mode)
            per_source = 1 if mode == "per-page" else 0

            def through_ragsvc(
                vector: list[float] = vector,
                question: str = question,
                search_mode: str = search_mode,
                where=where,
                per_source: int = per_source,
            ) -> list:
                return search(
                    engine,
                    record,
                    question=question,
                    query_vector=vector,
                    top_k=TOP_K,
                    mode=search_mode,
                    where=where,
                    per_source=per_source,
                )

            bare = bare_call(shard, search_mode if mode == "per-page" else mode, vector, question, source)
            # alternate which goes first: the second call of a pair finds the same vectors in cache
            if n % 2:
                bare_s, bare_scores = timed(bare)
                ragsvc_s, ragsvc_scores = timed(through_ragsvc)
            else:
                ragsvc_s, ragsvc_scores = timed(through_ragsvc)
                bare_s, bare_scores = timed(bare)
            # the same request must score the same hits, or the comparison means nothing (scores, not ids:
            # equal fused scores may come back in either order)
            # (counted, not asserted: a run that takes half an hour must not lose its figures to that)
            if mode != "per-page" and ragsvc_scores != bare_scores:  # page fusion ranks pages, by design
                mismatches[mode] += 1
                if mismatches[mode] == 1:
                    print(
                        f"{mode}: ragsvc {ragsvc_scores} bare {bare_scores} ({question!r})", file=sys.stderr
                    )
            if mode == "filtered":
                assert ragsvc_scores, "a chunk's own source filter finds at least that chunk"
            if n >= WARMUP:
                latencies[mode]["ragsvc"].append(ragsvc_s)
                latencies[mode]["bare"].append(bare_s)
    for mode in MODES:
        for path in ("ragsvc", "bare"):
            p50, p95 = percentiles(latencies[mode][path])
            result[f"{mode}_{path}_p50_ms"], result[f"{mode}_{path}_p95_ms"] = p50, p95
        result[f"{mode}_differing"] = mismatches[mode]
    engine.close()
    return result


def print_report(results: list[dict[str, object]]) -> None:
    print()
    print(
        f"{'chunks':>9} {'ingest pts/s':>12} {'(with BM25)':>11} {'build s':>8} {'copy':>6} {'optimise':>8} "
        f"{'switch':>6} {'build CPU s':>11} {'RSS MB':>7} {'peak MB':>7} {'build MB':>8}"
    )
    for r in results:
        print(
            f"{r['size']:>9,} {r['ingest_points_per_s']:>12,.0f} {r['ingest_with_bm25_points_per_s']:>11,.0f} "
            f"{r['build_s']:>8.1f} {r['build_copy_s']:>6.1f} {r['build_optimize_s']:>8.1f} "
            f"{r['build_switch_s']:>6.1f} {r['build_process_cpu_s']:>11.1f} "
            f"{r['rss_after_build_mb']:>7.0f} {r['rss_peak_mb']:>7.0f} "
            f"{r['build_process_peak_mb']:>8.0f}"
            + ("  (payload indexes with HNSW)" if r.get("payload_hnsw") else "")
            + ("" if r["build_built"] else "  (nothing to build)")
        )
    print()
    print(
        f"{'chunks':>9} {'hybrid searches during the build':>33} {'p50 ms':>8} {'max ms':>8}"
        f" {'during copy and switch':>23} {'max ms':>8} {'copy max':>8} {'switch max':>10}"
    )
    for r in results:
        print(
            f"{r['size']:>9,} {r['searches_during_build']:>33,} "
            f"{r.get('during_build_p50_ms', float('nan')):>8.2f} {r.get('during_build_max_ms', float('nan')):>8.1f}"
            f" {r['searches_in_copy_or_switch']:>23,} {r['in_copy_or_switch_max_ms']:>8.1f}"
            f" {r['in_copy_max_ms']:>8.1f} {r['in_switch_max_ms']:>10.1f}"
        )
    print()
    print(
        f"{'chunks':>9} {'serving process (s): flush':>27} {'load copy':>10} {'close old':>10}"
        f" {'longest ingest write (its flush)':>33}"
    )
    for r in results:
        print(
            f"{r['size']:>9,} {r['build_flush_s']:>27.2f} {r['build_load_s']:>10.2f} {r['build_close_s']:>10.2f}"
            f" {r.get('longest_write_s', float('nan')):>33.2f}"
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
                + (
                    f"  ({r[f'{mode}_differing']} of {r['queries']} differ)"
                    if r.get(f"{mode}_differing")
                    else ""
                )
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
    parser.add_argument(
        "--payload-hnsw", action="store_true", help="keyword payload indexes with HNSW subgraphs"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size, JSON out
    args = parser.parse_args()
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)

    if args.one:
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            print(json.dumps(run_one(args.one, args.queries, Path(tmp), args.payload_hnsw)))
        return

    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    results = []
    for size in sizes:
        print(f"{size:,} chunks ...", flush=True)
        command = [sys.executable, __file__, "--one", str(size), "--queries", str(args.queries)]
        if args.data_dir:
            command += ["--data-dir", str(args.data_dir)]
        if args.payload_hnsw:
            command += ["--payload-hnsw"]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print_report(results)


if __name__ == "__main__":
    main()
