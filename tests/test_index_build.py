"""Building an embedded (Qdrant Edge) index: in a child process, on a copy, while queries keep answering.

Edge's optimize() holds the GIL for its whole run, so EdgeEngine.build runs it in a child process on a copy
of the shard and then switches to the copy. The index here is big enough to be built (Edge leaves shards
under ~10 MB of vectors unindexed: 6,667 points at 384-d) and small enough to build in seconds. The vectors
are synthetic: 64 topic centroids plus noise, so that a query near a chunk has a clear nearest neighbour.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as q
from fastapi.testclient import TestClient

from indexes.edge import EdgeEngine
from indexes.edge_shard import INDEX_META, KEYWORD_FIELDS, keyword_indexes_to_move
from indexes.engine import ChunkPoint, Filter
from indexes.errors import IndexBuildFailed
from indexes.sparse import bm25_document, bm25_query

pytestmark = pytest.mark.slow

INDEX = "docs--synthetic-384-0123456789"
DIM = 384
POINTS = 8_000
TOPICS = 64
CHUNKS_PER_PAGE = 40
QUERIES = 24
MODES = ("dense", "hybrid", "filtered", "sparse")
# A generous bound on how long a child process may take to appear; only a hung machine reaches it.
CHILD_START_LIMIT_S = 300.0


def source_of(i: int) -> str:
    return f"docs/page-{i // CHUNKS_PER_PAGE:04d}.md"


class Corpus:
    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        centroids = rng.standard_normal((TOPICS, DIM)).astype(np.float32)
        self.topic = rng.integers(0, TOPICS, size=POINTS)
        vectors = centroids[self.topic] + 0.5 * rng.standard_normal((POINTS, DIM), dtype=np.float32)
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.rng = rng

    def text(self, i: int) -> str:
        words = [f"topic{self.topic[i]}word{(i * 7 + k) % 30}" for k in range(10)]
        return " ".join(words + [f"chunk{i}", "cluster", "guide"])

    def point(self, i: int, prefix: str = "chunk", source: str | None = None) -> ChunkPoint:
        return ChunkPoint(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}")),
            dense=self.vectors[i].tolist(),
            sparse=bm25_document(self.text(i)),
            payload={"source": source or source_of(i), "file_type": "md", "text": self.text(i)},
        )

    def queries(self) -> list[tuple[list[float], str, str]]:
        picked = []
        for i in self.rng.choice(POINTS, size=QUERIES, replace=False):
            vector = self.vectors[i] + 0.05 * self.rng.standard_normal(DIM, dtype=np.float32)
            question = f"chunk{i} topic{self.topic[i]}word{(i * 7) % 30}"
            picked.append(((vector / np.linalg.norm(vector)).tolist(), question, source_of(int(i))))
        return picked


CORPUS = Corpus()
QUERY_SET = CORPUS.queries()
Answer = list[tuple[str, float]]


def answer(engine: EdgeEngine, mode: str, query: tuple[list[float], str, str]) -> Answer:
    vector, question, source = query
    hits = engine.query(
        INDEX,
        dense=vector if mode != "sparse" else None,
        sparse=bm25_query(question) if mode in ("hybrid", "sparse") else None,
        mode="dense" if mode == "filtered" else mode,
        limit=5,
        where=Filter(must={"source": source}) if mode == "filtered" else None,
    )
    return [(hit.id, round(hit.score, 4)) for hit in hits]


def answers(engine: EdgeEngine) -> dict[str, list[Answer]]:
    return {mode: [answer(engine, mode, query) for query in QUERY_SET] for mode in MODES}


def fill(engine: EdgeEngine) -> None:
    engine.create_index(INDEX, DIM)
    for start in range(0, POINTS, 1_000):
        engine.upsert(INDEX, [CORPUS.point(i) for i in range(start, min(start + 1_000, POINTS))])


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EdgeEngine]:
    opened = EdgeEngine(tmp_path / "indexes")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def filled(engine: EdgeEngine) -> EdgeEngine:
    fill(engine)
    return engine


@contextmanager
def building(engine: EdgeEngine) -> Iterator[dict[str, BaseException]]:
    """Run engine.build(INDEX) in a thread; inside the block its child process is running."""
    failure: dict[str, BaseException] = {}

    def build() -> None:
        try:
            engine.build(INDEX)
        except BaseException as exc:  # handed to the test
            failure["error"] = exc

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.monotonic() + CHILD_START_LIMIT_S
    while engine.building_pid(INDEX) is None:
        assert thread.is_alive(), f"the build ended before its child process was seen: {failure}"
        assert time.monotonic() < deadline, "no build process appeared"
        time.sleep(0.01)
    try:
        yield failure
    finally:
        thread.join()


def entries(engine: EdgeEngine) -> list[str]:
    return sorted(os.listdir(engine.root))


def same_ranking(after: list[Answer], before: list[Answer]) -> bool:
    """The same scores in the same order, and the same chunk at every score no other hit shares (tied
    chunks come back in segment order, which a build changes)."""
    for new, old in zip(after, before, strict=True):
        if [score for _, score in new] != [score for _, score in old]:
            return False
        scores = [score for _, score in old]
        if any(n != o for (n, score), (o, _) in zip(new, old, strict=True) if scores.count(score) == 1):
            return False
    return True


def top1(results: list[Answer]) -> list[str | None]:
    return [hits[0][0] if hits else None for hits in results]


def test_queries_keep_answering_while_an_index_is_built(filled: EdgeEngine) -> None:
    before = answers(filled)
    during: list[bool] = []  # per query finished while the child process was building: same as before?
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask_in_a_loop() -> None:
        n = 0
        while not stop.is_set():
            mode, q = MODES[n % len(MODES)], n % QUERIES
            n += 1
            child_was_running = filled.building_pid(INDEX) is not None
            try:
                got = answer(filled, mode, QUERY_SET[q])
            except BaseException as exc:  # every query must succeed, during the switch too
                errors.append(exc)
                continue
            if child_was_running and filled.building_pid(INDEX) is not None:
                during.append(got == before[mode][q])

    asking = threading.Thread(target=ask_in_a_loop)
    asking.start()
    try:
        filled.build(INDEX)
    finally:
        stop.set()
        asking.join()

    report = filled.builds[INDEX]
    assert report.built, report
    assert errors == []
    # The child held its own GIL for seconds; this process answered queries all along, from the old shard.
    assert len(during) >= 10, f"only {len(during)} queries answered while the index was being built"
    assert all(during), f"{during.count(False)} of {len(during)} answers changed during the build"

    after = answers(filled)
    # Sparse and filtered search are exact before and after (up to the order of tied chunks); dense search is now HNSW, which is approximate,
    # but finds the same nearest chunk for a query near a chunk.
    assert same_ranking(after["sparse"], before["sparse"])
    assert same_ranking(after["filtered"], before["filtered"])
    assert top1(after["dense"]) == top1(before["dense"])
    assert top1(after["hybrid"]) == top1(before["hybrid"])
    assert filled.count(INDEX) == POINTS
    # one link and the one shard folder it leads to; the old folder is gone
    assert entries(filled) == sorted([INDEX, f".{INDEX}@2"])
    assert os.readlink(filled.root / INDEX) == f".{INDEX}@2"


def test_writes_during_a_build_land_in_the_built_index(filled: EdgeEngine, tmp_path: Path) -> None:
    added = [CORPUS.point(i, prefix="added", source="new/added.md") for i in range(50)]
    with building(filled) as failure:
        # writes do not wait for the build: they go to the live shard and are replayed onto the copy
        filled.upsert(INDEX, added)
        filled.delete(INDEX, Filter(must={"source": source_of(0)}))
    assert failure == {}
    report = filled.builds[INDEX]
    assert report.built and report.replayed_writes == 2, report

    def check(engine: EdgeEngine) -> None:
        assert engine.count(INDEX) == POINTS + len(added) - CHUNKS_PER_PAGE
        assert engine.count(INDEX, Filter(must={"source": "new/added.md"})) == len(added)
        assert engine.count(INDEX, Filter(must={"source": source_of(0)})) == 0

    check(filled)
    filled.close()
    reopened = EdgeEngine(tmp_path / "indexes")
    try:
        check(reopened)  # the replayed writes were flushed into the built shard before it was switched in
        reopened.build(INDEX)  # after a restart it cannot know what is built: it checks on a copy
        assert reopened.builds[INDEX].reason == "already built"
        assert entries(reopened) == sorted([INDEX, f".{INDEX}@2"])
    finally:
        reopened.close()


def signal_the_build(signum: signal.Signals) -> Callable[[EdgeEngine], None]:
    def send(engine: EdgeEngine) -> None:
        pid = engine.building_pid(INDEX)
        assert pid is not None
        os.kill(pid, signum)

    return send


FAILURES: dict[str, Callable[[EdgeEngine], None]] = {
    "killed": signal_the_build(signal.SIGKILL),
    # A stopped process is a build that hangs: it cannot finish, however fast this machine is.
    "timed out": signal_the_build(signal.SIGSTOP),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_build_leaves_the_index_serving_unchanged(failure: str, tmp_path: Path) -> None:
    # "killed": a real SIGKILL to the real build process (as the OOM killer would send);
    # "timed out": a build that hangs (SIGSTOP), under a short build limit
    engine = EdgeEngine(tmp_path / "indexes", build_timeout=600.0 if failure == "killed" else 1.0)
    try:
        fill(engine)
        before = answers(engine)
        with building(engine) as failed:
            FAILURES[failure](engine)
        assert isinstance(failed.get("error"), IndexBuildFailed), failed
        assert "keeps serving" in str(failed["error"])
        assert engine.builds[INDEX].reason == "failed"
        assert answers(engine) == before
        assert engine.count(INDEX) == POINTS
        assert entries(engine) == sorted([INDEX, f".{INDEX}@1"])  # the copy is gone
        engine.upsert(INDEX, [CORPUS.point(0, prefix="later")])  # and the index takes writes
        assert engine.count(INDEX) == POINTS + 1
    finally:
        engine.close()


def test_a_small_index_is_not_built(engine: EdgeEngine) -> None:
    engine.create_index(INDEX, DIM)
    engine.upsert(INDEX, [CORPUS.point(i) for i in range(100)])
    engine.build(INDEX)
    assert engine.builds[INDEX].reason == "below the indexing threshold"
    assert entries(engine) == sorted([INDEX, f".{INDEX}@1"])


def test_a_plain_index_folder_from_before_is_built_and_switched(tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    made = EdgeEngine(root)
    fill(made)
    before = answers(made)
    made.close()
    # the layout before builds switched folders: the shard folder under the index's own name
    (root / INDEX).unlink()
    os.replace(root / f".{INDEX}@1", root / INDEX)
    engine = EdgeEngine(root)
    try:
        assert answers(engine) == before
        engine.build(INDEX)
        assert engine.builds[INDEX].built
        assert entries(engine) == sorted([INDEX, f".{INDEX}@1"])
        assert os.readlink(root / INDEX) == f".{INDEX}@1"
        assert top1(answers(engine)["dense"]) == top1(before["dense"])
        assert engine.count(INDEX) == POINTS
    finally:
        engine.close()


def test_a_build_moves_keyword_indexes_made_in_ram_to_disk(engine: EdgeEngine) -> None:
    fill(engine)
    before = answers(engine)
    live = engine._index(INDEX).live.shard
    # as shards were made before: the keyword indexes in RAM, which made loading the built copy slow
    for key in KEYWORD_FIELDS:
        live.update(q.UpdateOperation.delete_field_index(key))
        live.update(q.UpdateOperation.create_field_index(key, q.KeywordIndexParams(enable_hnsw=False)))
    assert keyword_indexes_to_move(live) == list(KEYWORD_FIELDS)
    engine.build(INDEX)
    assert engine.builds[INDEX].built
    assert keyword_indexes_to_move(engine._index(INDEX).live.shard) == []
    after = answers(engine)
    assert after["filtered"] == before["filtered"]
    assert top1(after["dense"]) == top1(before["dense"])


# --- a crash at any step leaves one loadable shard under the index's name ------------------------------
# A crash cannot be produced on demand at a chosen step, so these tests lay out the folders each step
# leaves behind (with real shards) and open an engine on them, as a restart would.

SMALL = [CORPUS.point(i) for i in range(20)]


def shard_folder(root: Path, generation: int, complete: bool = True) -> Path:
    """A real shard folder `.INDEX@generation` holding SMALL (or SMALL[:10]: generation 1 is 'older')."""
    scratch = root.parent / f"scratch-{generation}"
    engine = EdgeEngine(scratch)
    engine.create_index(INDEX, DIM)
    engine.upsert(INDEX, SMALL if generation != 1 else SMALL[:10])
    engine.close()
    folder = root / f".{INDEX}@{generation}"
    shutil.move(scratch / f".{INDEX}@1", folder)
    shutil.rmtree(scratch)
    if not complete:
        (folder / INDEX_META).unlink()
    return folder


def link(root: Path, generation: int) -> None:
    os.symlink(f".{INDEX}@{generation}", root / INDEX)


def recovered(root: Path) -> tuple[list[str], int]:
    engine = EdgeEngine(root)
    try:
        return entries(engine), engine.count(INDEX)
    finally:
        engine.close()


def test_a_crash_while_the_copy_is_built_keeps_the_old_shard(tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    root.mkdir()
    shard_folder(root, 1)
    link(root, 1)
    shard_folder(root, 2, complete=False)  # copied, maybe optimised, not caught up
    os.symlink(f".{INDEX}@2", root / f".{INDEX}@link")  # the next link, not yet renamed into place
    assert recovered(root) == (sorted([INDEX, f".{INDEX}@1"]), 10)


def test_a_crash_before_the_link_moves_keeps_the_old_shard(tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    root.mkdir()
    shard_folder(root, 1)
    link(root, 1)
    shard_folder(root, 2)  # complete, but writers were held: the old shard has every write too
    assert recovered(root) == (sorted([INDEX, f".{INDEX}@1"]), 10)


def test_a_crash_after_the_link_moved_keeps_the_new_shard(tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    root.mkdir()
    shard_folder(root, 1)
    shard_folder(root, 2)
    link(root, 2)  # switched; the old folder was not removed yet
    assert recovered(root) == (sorted([INDEX, f".{INDEX}@2"]), 20)


@pytest.mark.parametrize("moved_aside", [False, True])
def test_a_crash_while_a_plain_folder_is_switched_finishes_the_switch(
    moved_aside: bool, tmp_path: Path
) -> None:
    root = tmp_path / "indexes"
    root.mkdir()
    old = shard_folder(root, 1)
    # the plain folder under the index's own name (or already moved aside to generation 0)
    os.replace(old, root / (f".{INDEX}@0" if moved_aside else INDEX))
    shard_folder(root, 2)
    (root / f".{INDEX}@switch").write_text(f".{INDEX}@2")
    assert recovered(root) == (sorted([INDEX, f".{INDEX}@2"]), 20)
    assert os.readlink(root / INDEX) == f".{INDEX}@2"


def test_a_crash_while_dropping_does_not_bring_the_index_back(tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    root.mkdir()
    shard_folder(root, 1)  # the link was removed, the folder not yet
    engine = EdgeEngine(root)
    try:
        assert not engine.has_index(INDEX)
        assert entries(engine) == []
    finally:
        engine.close()


# --- the server builds: after an ingestion job, and on demand ----------------------------------------


def test_an_ingestion_job_and_the_build_route_report_the_build(client: TestClient, sample_docs: Path) -> None:
    job = client.post("/collections/docs/ingest", json={"path": str(sample_docs), "wait": True}).json()
    assert job["status"] == "done", job
    # a few hundred chunks: under Edge's indexing threshold, searched exhaustively, nothing to build
    assert job["summary"]["index_build"]["reason"] == "below the indexing threshold"
    built = client.post("/collections/docs/build")
    assert built.status_code == 200
    assert built.json()["built"] is False
    missing = client.post("/collections/absent/build")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "collection_not_found"
