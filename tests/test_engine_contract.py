"""The vector-engine contract, run against both engines: the same results and the same ragsvc errors.

EdgeEngine runs on Qdrant Edge shards in a temp dir. QdrantServerEngine runs on qdrant-client's local mode
in a temp dir, which stands in for a Qdrant server (no server binary runs here) and speaks the same client
API; it ignores payload indexes and is not safe under concurrent writes from threads, so the engine
serialises every call there (test_concurrent_upserts_all_land checks that writes from threads all land).
"""

from __future__ import annotations

import math
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from indexes.edge import EdgeEngine
from indexes.engine import ChunkPoint, Filter, Hit, SparseVector, VectorEngine
from indexes.errors import (
    EngineUnavailable,
    IndexExists,
    IndexNotFound,
    InvalidCollectionName,
    InvalidRequest,
    VectorSizeMismatch,
)
from indexes.keys import SqliteDocumentKeys
from indexes.qdrant_server import QdrantServerEngine
from indexes.sealed import SealedEngine
from indexes.sparse import bm25_document, bm25_query

INDEX = "docs--test-model-8-0123456789"
DIM = 8

# (key, source, file type, text): the texts make BM25 order "gpu" as p0 > p1 > p2, and nothing else.
CHUNKS = [
    ("p0", "guides/gpu.md", "md", "gpu gpu gpu nodes on the cluster"),
    ("p1", "guides/gpu.md", "md", "jobs need a gpu partition and a gpu"),
    ("p2", "guides/inference.md", "md", "a single gpu is enough for small inference"),
    ("p3", "guides/storage.md", "md", "storage quotas on the work filesystem"),
    ("p4", "guides/python.md", "md", "conda environments and python modules"),
    ("p5", "reference/ssh.md", "rst", "ssh keys and login nodes"),
    ("p6", "reference/array.md", "rst", "array jobs run many tasks at once"),
    ("p7", "reference/interactive.md", "rst", "interactive sessions with sinteractive"),
]
# Chunk pN's dense vector is the N-th unit axis, so its cosine to this query is QUERY_DENSE[N] / |QUERY_DENSE|.
QUERY_DENSE = [0.9, 0.1, 0.5, 0.2, 0.03, 0.05, 0.02, 0.01]
DENSE_ORDER = ["p0", "p2", "p3", "p1", "p5", "p4", "p6", "p7"]
SPARSE_ORDER = ["p0", "p1", "p2"]
# The two lists above fused by their scores (indexes.fusion): p0 first in both, p2 2nd dense and 3rd in BM25
# ahead of p1 4th dense and 2nd in BM25, then p3 and p5, which BM25 does not find.
HYBRID_ORDER = ["p0", "p2", "p1", "p3", "p5"]

BAD_NAMES = ["", "../escape", "a/b", "has space", ".hidden", "x" * 201, "semi;colon"]


def point_id(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ragsvc-test/{key}"))


KEY_OF = {point_id(key): key for key, *_ in CHUNKS}


def axis(n: int, size: int = DIM) -> list[float]:
    return [1.0 if i == n else 0.0 for i in range(size)]


def chunk_point(n: int, key: str, source: str, file_type: str, text: str) -> ChunkPoint:
    return ChunkPoint(
        id=point_id(key),
        dense=axis(n),
        sparse=bm25_document(text),
        payload={
            "source": source,
            "origin": "docs",
            "file_type": file_type,
            "section": key.upper(),
            "text": text,
        },
    )


POINTS = [chunk_point(n, *chunk) for n, chunk in enumerate(CHUNKS)]

ENGINES: dict[str, Callable[[Path], VectorEngine]] = {
    "edge": lambda path: EdgeEngine(path / "indexes"),
    "qdrant-local": lambda path: QdrantServerEngine(path=path / "qdrant"),
    # what ragsvc runs: every chunk's text sealed with its document's key (tests/test_deletion.py)
    "sealed-edge": lambda path: SealedEngine(EdgeEngine(path / "indexes"), SqliteDocumentKeys(path / "k.db")),
}


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorEngine]:
    opened = ENGINES[request.param](tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def filled(engine: VectorEngine) -> VectorEngine:
    """An engine holding INDEX with the eight chunks above."""
    engine.create_index(INDEX, DIM)
    engine.upsert(INDEX, POINTS)
    return engine


def keys(hits: list[Hit]) -> list[str]:
    return [KEY_OF[hit.id] for hit in hits]


def dense_query(engine: VectorEngine, limit: int = 8, where: Filter | None = None) -> list[Hit]:
    return engine.query(INDEX, dense=QUERY_DENSE, sparse=None, mode="dense", limit=limit, where=where)


def sparse_query(engine: VectorEngine, limit: int = 8, where: Filter | None = None) -> list[Hit]:
    return engine.query(INDEX, dense=None, sparse=bm25_query("gpu"), mode="sparse", limit=limit, where=where)


def hybrid_query(engine: VectorEngine, limit: int = 5, where: Filter | None = None) -> list[Hit]:
    return engine.query(
        INDEX, dense=QUERY_DENSE, sparse=bm25_query("gpu"), mode="hybrid", limit=limit, where=where
    )


def all_modes(engine: VectorEngine) -> dict[str, list[tuple[str, float]]]:
    return {
        mode: [(KEY_OF[hit.id], hit.score) for hit in run(engine)]
        for mode, run in (("dense", dense_query), ("sparse", sparse_query), ("hybrid", hybrid_query))
    }


# --- create, has, drop ---------------------------------------------------------------------------------


def test_created_index_exists_until_dropped(engine: VectorEngine) -> None:
    assert not engine.has_index(INDEX)
    engine.create_index(INDEX, DIM)
    assert engine.has_index(INDEX)
    assert engine.count(INDEX) == 0
    engine.drop_index(INDEX)
    assert not engine.has_index(INDEX)


def test_dropping_a_missing_index_does_nothing(engine: VectorEngine) -> None:
    engine.drop_index(INDEX)
    assert not engine.has_index(INDEX)


def test_creating_an_existing_index_raises_index_exists_and_keeps_its_points(filled: VectorEngine) -> None:
    with pytest.raises(IndexExists):
        filled.create_index(INDEX, DIM)
    with pytest.raises(IndexExists):
        filled.create_index(INDEX, DIM * 2)
    assert filled.count(INDEX) == len(POINTS)


def test_dropped_index_can_be_created_again_empty(filled: VectorEngine) -> None:
    filled.drop_index(INDEX)
    filled.create_index(INDEX, DIM * 2)
    assert filled.count(INDEX) == 0
    with pytest.raises(VectorSizeMismatch):
        filled.upsert(INDEX, POINTS[:1])


def test_two_indexes_are_independent(filled: VectorEngine) -> None:
    other = "docs--other-model-4-abcdef0123"
    filled.create_index(other, 4)
    filled.upsert(other, [ChunkPoint(point_id("q"), axis(1, 4), bm25_document("gpu"), {"source": "x.md"})])
    assert filled.count(other) == 1
    assert filled.count(INDEX) == len(POINTS)
    filled.drop_index(other)
    assert filled.count(INDEX) == len(POINTS)


# --- upsert, count, delete ------------------------------------------------------------------------------


def test_upsert_then_count(filled: VectorEngine) -> None:
    assert filled.count(INDEX) == 8
    assert filled.count(INDEX, Filter(must={"file_type": "rst"})) == 3
    assert filled.count(INDEX, Filter(must={"source": ["guides/gpu.md", "guides/storage.md"]})) == 3
    assert filled.count(INDEX, Filter(must_not={"file_type": "rst"})) == 5


def test_upserting_the_same_id_replaces_the_point(filled: VectorEngine) -> None:
    replaced = ChunkPoint(POINTS[7].id, axis(0), bm25_document("gpu gpu gpu gpu"), {"source": "moved.md"})
    filled.upsert(INDEX, [replaced])
    assert filled.count(INDEX) == 8
    assert filled.count(INDEX, Filter(must={"source": "moved.md"})) == 1
    assert keys(sparse_query(filled, limit=1)) == ["p7"]


def test_upserting_nothing_is_allowed(filled: VectorEngine) -> None:
    filled.upsert(INDEX, [])
    assert filled.count(INDEX) == 8


def test_delete_by_must_filter(filled: VectorEngine) -> None:
    filled.delete(INDEX, Filter(must={"file_type": "rst"}))
    assert filled.count(INDEX) == 5
    assert filled.count(INDEX, Filter(must={"file_type": "rst"})) == 0


def test_delete_by_list_value_removes_any_of_them(filled: VectorEngine) -> None:
    filled.delete(INDEX, Filter(must={"origin": "docs", "source": ["guides/gpu.md", "reference/ssh.md"]}))
    assert sorted(keys(list(filled.scroll(INDEX)))) == ["p2", "p3", "p4", "p6", "p7"]


def test_delete_by_must_not_filter_keeps_the_listed_sources(filled: VectorEngine) -> None:
    filled.delete(INDEX, Filter(must={"origin": "docs"}, must_not={"source": ["guides/gpu.md"]}))
    assert sorted(keys(list(filled.scroll(INDEX)))) == ["p0", "p1"]


def test_delete_matching_nothing_changes_nothing(filled: VectorEngine) -> None:
    filled.delete(INDEX, Filter(must={"source": "nowhere.md"}))
    assert filled.count(INDEX) == 8


# --- queries --------------------------------------------------------------------------------------------


def test_dense_query_orders_by_cosine(filled: VectorEngine) -> None:
    hits = dense_query(filled)
    assert keys(hits) == DENSE_ORDER
    norm = math.sqrt(sum(x * x for x in QUERY_DENSE))
    for hit, key in zip(hits, DENSE_ORDER, strict=True):
        assert hit.score == pytest.approx(QUERY_DENSE[int(key[1])] / norm, abs=1e-5)


def test_sparse_query_orders_by_bm25_and_returns_only_matching_chunks(filled: VectorEngine) -> None:
    hits = sparse_query(filled)
    assert keys(hits) == SPARSE_ORDER
    assert hits[0].score > hits[1].score > hits[2].score > 0


def test_hybrid_query_fuses_both_rankings(filled: VectorEngine) -> None:
    hits = hybrid_query(filled)
    assert keys(hits) == HYBRID_ORDER
    # Half of each list's score scaled to 0..1, summed. The dense list's best is 1 and its last 0; the BM25 list
    # holds every chunk with the word (it is shorter than asked for), so its 0 is the score of all others.
    low, high = min(QUERY_DENSE), max(QUERY_DENSE)  # cosines are these over one norm: the scale cancels

    def dense_half(key: str) -> float:
        return 0.5 * (QUERY_DENSE[int(key[1])] - low) / (high - low)

    bm25 = [hit.score for hit in sparse_query(filled)]  # p0, p1, p2
    assert hits[0].score == pytest.approx(1.0)
    assert hits[1].score == pytest.approx(dense_half("p2") + 0.5 * bm25[2] / bm25[0])
    assert hits[2].score == pytest.approx(dense_half("p1") + 0.5 * bm25[1] / bm25[0])
    assert hits[3].score == pytest.approx(dense_half("p3"))
    # the lists are fetched without payloads; the fused hits get theirs after
    assert [hit.payload for hit in hits] == [POINTS[int(key[1])].payload for key in HYBRID_ORDER]


def test_query_returns_payloads(filled: VectorEngine) -> None:
    top = dense_query(filled, limit=1)[0]
    assert top.payload == POINTS[0].payload


def test_limit_caps_the_hits(filled: VectorEngine) -> None:
    assert keys(dense_query(filled, limit=2)) == DENSE_ORDER[:2]
    assert keys(sparse_query(filled, limit=2)) == SPARSE_ORDER[:2]
    assert keys(hybrid_query(filled, limit=2)) == HYBRID_ORDER[:2]


def test_filters_apply_to_every_mode(filled: VectorEngine) -> None:
    gpu_or_storage = Filter(must={"source": ["guides/gpu.md", "guides/storage.md"]})
    assert keys(dense_query(filled, where=gpu_or_storage)) == ["p0", "p3", "p1"]
    assert keys(sparse_query(filled, where=gpu_or_storage)) == ["p0", "p1"]
    assert keys(hybrid_query(filled, where=gpu_or_storage)) == ["p0", "p1", "p3"]
    not_gpu_guide = Filter(must_not={"source": "guides/gpu.md"})
    assert keys(dense_query(filled, where=not_gpu_guide)) == ["p2", "p3", "p5", "p4", "p6", "p7"]
    assert keys(sparse_query(filled, where=not_gpu_guide)) == ["p2"]
    markdown_not_inference = Filter(must={"file_type": "md"}, must_not={"source": ["guides/inference.md"]})
    assert keys(dense_query(filled, where=markdown_not_inference)) == ["p0", "p3", "p1", "p4"]


def test_filter_matching_nothing_returns_no_hits(filled: VectorEngine) -> None:
    nothing = Filter(must={"source": "nowhere.md"})
    assert dense_query(filled, where=nothing) == []
    assert sparse_query(filled, where=nothing) == []
    assert hybrid_query(filled, where=nothing) == []


# --- scroll ---------------------------------------------------------------------------------------------


def test_scroll_returns_every_point_once(filled: VectorEngine) -> None:
    hits = list(filled.scroll(INDEX, batch=3))
    assert len(hits) == 8
    assert sorted(keys(hits)) == sorted(KEY_OF.values())
    assert {hit.id: hit.payload for hit in hits} == {p.id: p.payload for p in POINTS}


def test_scroll_with_filter(filled: VectorEngine) -> None:
    hits = list(filled.scroll(INDEX, Filter(must={"file_type": "rst"}), batch=2))
    assert sorted(keys(hits)) == ["p5", "p6", "p7"]


def test_scroll_of_an_empty_index_yields_nothing(engine: VectorEngine) -> None:
    engine.create_index(INDEX, DIM)
    assert list(engine.scroll(INDEX)) == []


# --- build, reopen --------------------------------------------------------------------------------------


def test_results_are_the_same_before_and_after_build(filled: VectorEngine) -> None:
    before = all_modes(filled)
    filled.build(INDEX)
    after = all_modes(filled)
    assert [key for key, _ in after["dense"]] == [key for key, _ in before["dense"]]
    for mode in before:
        assert [key for key, _ in after[mode]] == [key for key, _ in before[mode]]
        assert [score for _, score in after[mode]] == pytest.approx([score for _, score in before[mode]])
    assert filled.count(INDEX) == 8


def test_a_built_index_keeps_taking_writes_and_building_again_is_harmless(filled: VectorEngine) -> None:
    report = filled.build(INDEX)
    assert report.index == INDEX
    filled.upsert(INDEX, [chunk_point(1, "p8", "guides/new.md", "md", "a new gpu page")])
    assert filled.count(INDEX) == 9
    filled.build(INDEX)
    filled.delete(INDEX, Filter(must={"source": "guides/new.md"}))
    assert keys(dense_query(filled)) == DENSE_ORDER


def test_building_an_empty_index_does_nothing(engine: VectorEngine) -> None:
    engine.create_index(INDEX, DIM)
    engine.build(INDEX)
    assert engine.count(INDEX) == 0


@pytest.mark.parametrize("kind", list(ENGINES))
def test_reopened_engine_keeps_points_and_sizes(kind: str, tmp_path: Path) -> None:
    first = ENGINES[kind](tmp_path)
    first.create_index(INDEX, DIM)
    first.upsert(INDEX, POINTS)
    first.close()
    reopened = ENGINES[kind](tmp_path)
    try:
        assert reopened.has_index(INDEX)
        assert keys(dense_query(reopened)) == DENSE_ORDER
        with pytest.raises(VectorSizeMismatch):
            reopened.query(INDEX, dense=[1.0] * 3, sparse=None, mode="dense", limit=3)
    finally:
        reopened.close()


def test_both_engines_return_the_same_hits_and_scores(tmp_path: Path) -> None:
    results = {}
    for kind, open_engine in ENGINES.items():
        opened = open_engine(tmp_path / kind)
        try:
            opened.create_index(INDEX, DIM)
            opened.upsert(INDEX, POINTS)
            results[kind] = all_modes(opened)
        finally:
            opened.close()
    edge, local = results["edge"], results["qdrant-local"]
    for mode in edge:
        assert [key for key, _ in local[mode]] == [key for key, _ in edge[mode]], mode
        assert [score for _, score in local[mode]] == pytest.approx(
            [score for _, score in edge[mode]], rel=1e-4
        )


def test_concurrent_upserts_all_land(engine: VectorEngine) -> None:
    engine.create_index(INDEX, DIM)

    def write(worker: int) -> None:
        for batch in range(5):
            engine.upsert(
                INDEX,
                [
                    ChunkPoint(
                        point_id(f"w{worker}-{batch}-{i}"),
                        axis(i % DIM),
                        bm25_document(f"worker {worker} batch {batch}"),
                        {"source": f"w{worker}.md"},
                    )
                    for i in range(10)
                ],
            )

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.count(INDEX) == 4 * 5 * 10
    assert len({hit.id for hit in engine.scroll(INDEX)}) == 200


# --- errors: the same ragsvc error from both engines -----------------------------------------------------

MISSING_INDEX_CALLS: dict[str, Callable[[VectorEngine], object]] = {
    "upsert": lambda e: e.upsert(INDEX, POINTS),
    "upsert nothing": lambda e: e.upsert(INDEX, []),
    "count": lambda e: e.count(INDEX),
    "delete": lambda e: e.delete(INDEX, Filter(must={"source": "a.md"})),
    "dense query": dense_query,
    "sparse query": sparse_query,
    "hybrid query": hybrid_query,
    "scroll": lambda e: e.scroll(INDEX),
    "build": lambda e: e.build(INDEX),
}


@pytest.mark.parametrize("call", list(MISSING_INDEX_CALLS))
def test_using_a_missing_index_raises_index_not_found(engine: VectorEngine, call: str) -> None:
    with pytest.raises(IndexNotFound) as raised:
        MISSING_INDEX_CALLS[call](engine)
    assert raised.value.name == INDEX
    assert not engine.has_index(INDEX)


def test_using_a_dropped_index_raises_index_not_found(filled: VectorEngine) -> None:
    filled.drop_index(INDEX)
    with pytest.raises(IndexNotFound):
        dense_query(filled)
    with pytest.raises(IndexNotFound):
        filled.upsert(INDEX, POINTS)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_the_engine_cannot_hold_raises_invalid_collection_name(
    engine: VectorEngine, name: str
) -> None:
    with pytest.raises(InvalidCollectionName):
        engine.create_index(name, DIM)
    with pytest.raises(InvalidCollectionName):
        engine.has_index(name)
    with pytest.raises(InvalidCollectionName):
        engine.query(name, dense=QUERY_DENSE, sparse=None, mode="dense", limit=3)
    with pytest.raises(InvalidCollectionName):
        engine.count(name)
    with pytest.raises(InvalidCollectionName):
        engine.drop_index(name)


def test_upserting_a_vector_of_the_wrong_size_raises_and_writes_nothing(filled: VectorEngine) -> None:
    wrong = ChunkPoint(point_id("wrong"), [0.5] * (DIM - 1), bm25_document("gpu"), {"source": "w.md"})
    with pytest.raises(VectorSizeMismatch) as raised:
        filled.upsert(INDEX, [chunk_point(0, "fresh", "f.md", "md", "fresh text"), wrong])
    assert (raised.value.expected, raised.value.given) == (DIM, DIM - 1)
    assert "8" in raised.value.message and "7" in raised.value.message
    assert filled.count(INDEX) == 8


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_querying_with_a_vector_of_the_wrong_size_raises(filled: VectorEngine, mode: str) -> None:
    with pytest.raises(VectorSizeMismatch) as raised:
        filled.query(INDEX, dense=[0.1] * 384, sparse=bm25_query("gpu"), mode=mode, limit=3)
    assert (raised.value.expected, raised.value.given) == (DIM, 384)


def test_deleting_with_an_empty_filter_is_refused(filled: VectorEngine) -> None:
    with pytest.raises(InvalidRequest):
        filled.delete(INDEX, Filter())
    assert filled.count(INDEX) == 8


@pytest.mark.parametrize(
    "request_",
    [
        {"dense": None, "sparse": None, "mode": "dense", "limit": 3},
        {"dense": QUERY_DENSE, "sparse": None, "mode": "sparse", "limit": 3},
        {"dense": QUERY_DENSE, "sparse": None, "mode": "hybrid", "limit": 3},
        {"dense": QUERY_DENSE, "sparse": None, "mode": "dense", "limit": 0},
        {"dense": QUERY_DENSE, "sparse": None, "mode": "semantic", "limit": 3},
        {"dense": None, "sparse": SparseVector([1, 2], [0.5]), "mode": "sparse", "limit": 3},
    ],
    ids=[
        "dense-without-vector",
        "sparse-without-vector",
        "hybrid-without-sparse",
        "zero-limit",
        "bad-mode",
        "bad-sparse",
    ],
)
def test_malformed_queries_raise_invalid_request(filled: VectorEngine, request_: dict) -> None:
    with pytest.raises(InvalidRequest):
        filled.query(INDEX, **request_)


def test_a_point_id_that_is_not_a_uuid_is_refused(filled: VectorEngine) -> None:
    with pytest.raises(InvalidRequest):
        filled.upsert(INDEX, [ChunkPoint("chunk-1", axis(0), bm25_document("gpu"), {})])
    assert filled.count(INDEX) == 8


@pytest.mark.parametrize("size", [0, -1, 70_000])
def test_creating_an_index_of_impossible_size_is_refused(engine: VectorEngine, size: int) -> None:
    with pytest.raises(InvalidRequest):
        engine.create_index(INDEX, size)
    assert not engine.has_index(INDEX)


# --- server only: aliases, an unreachable server ----------------------------------------------------------


@pytest.fixture
def server_engine(tmp_path: Path) -> Iterator[QdrantServerEngine]:
    opened = QdrantServerEngine(path=tmp_path / "qdrant")
    try:
        yield opened
    finally:
        opened.close()


def test_alias_switches_to_the_new_index_at_once(server_engine: QdrantServerEngine) -> None:
    old, new = "docs--a-8-0000000000", "docs--b-8-1111111111"
    for index, chunks in ((old, POINTS[:4]), (new, POINTS[4:])):
        server_engine.create_index(index, DIM)
        server_engine.upsert(index, chunks)
    server_engine.point_alias("docs", old)
    assert server_engine.count("docs") == 4
    assert keys(server_engine.query("docs", dense=QUERY_DENSE, sparse=None, mode="dense", limit=1)) == ["p0"]
    server_engine.point_alias("docs", new)
    assert keys(server_engine.query("docs", dense=QUERY_DENSE, sparse=None, mode="dense", limit=1)) == ["p5"]
    server_engine.drop_index(old)
    assert server_engine.count("docs") == 4


def test_alias_to_a_missing_index_raises_and_keeps_the_old_target(server_engine: QdrantServerEngine) -> None:
    server_engine.create_index(INDEX, DIM)
    server_engine.upsert(INDEX, POINTS)
    server_engine.point_alias("docs", INDEX)
    with pytest.raises(IndexNotFound):
        server_engine.point_alias("docs", "docs--missing-8-2222222222")
    assert server_engine.count("docs") == 8
    with pytest.raises(InvalidCollectionName):
        server_engine.point_alias("../docs", INDEX)


def test_an_unreachable_server_raises_engine_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # no version check: it runs in a thread of its own and would warn during a later test
    engine = QdrantServerEngine(f"http://127.0.0.1:{port}", timeout=2, check_compatibility=False)
    try:
        with pytest.raises(EngineUnavailable):
            engine.has_index(INDEX)
        with pytest.raises(EngineUnavailable):
            engine.count(INDEX)
    finally:
        engine.close()
