"""The registry shared by replicas and workers (Redis) next to the embedded one (a JSON file), collection
aliases on the Qdrant server engine, and write locks and reader leases across processes.

Real parts: a real redis-server, real MiniLM (torch and its int8 ONNX export, two vector spaces), and
qdrant-client's local mode standing in for a Qdrant server (no server binary runs here). Local mode locks
its folder per process and is not safe under concurrent writes from threads: the engine serialises every
call (see indexes/qdrant_server.py), and these tests open one engine at a time.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from indexes.errors import CollectionNotFound, EmbeddingMismatch, IndexExists, InvalidCollectionName
from indexes.qdrant_server import QdrantServerEngine
from indexes.registry import EmbeddingIdentity, JsonFileStore, RedisStore, Registry, index_name
from ingest.embed import MINILM, EmbeddingSpec
from ragsvc.locks import RedisIndexReaders, RedisWriteLocks
from ragsvc.service import collections, ingestion, retrieval
from ragsvc.service import reindex as reindexing
from ragsvc.service.access import LOCAL
from ragsvc.service.embeddings import chunking_for_model
from ragsvc.service.factory import open_runtime
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings
from tests.conftest import REPO

A = EmbeddingIdentity(provider="local", model="org/model-a", dimensions=4, chunking="v1/10/2")
B = EmbeddingIdentity(provider="openai", model="org/model-b", dimensions=8, chunking="v1/10/2")
# Two vector spaces of one local model: collections are made on torch and reindexed onto fp32 ONNX.
TORCH = EmbeddingSpec(provider="local", model=f"{MINILM}#torch")
FP32 = EmbeddingSpec(provider="local", model=f"{MINILM}#onnx")


# --- one contract, both stores ----------------------------------------------------------------------------


@pytest.fixture(params=["json", "redis"])
def open_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Registry]]:
    """Opens the test's registry; each call is a new process's view of the same stored state."""
    clients: list[redis.Redis] = []
    if request.param == "json":

        def opened() -> Registry:
            return Registry(JsonFileStore(tmp_path / "registry.json"))

    else:
        url, namespace = request.getfixturevalue("redis_server"), uuid.uuid4().hex

        def opened() -> Registry:
            clients.append(redis.Redis.from_url(url))
            return Registry(RedisStore(clients[-1], namespace))

    yield opened
    for client in clients:
        client.close()


def test_ensure_creates_once_and_refuses_another_model(open_registry: Callable[[], Registry]):
    registry = open_registry()
    record, created = registry.ensure("docs", A, "https://example.org/docs")
    assert created and record.live_index == index_name("docs", A)
    again, created_again = registry.ensure("docs", A)
    assert not created_again and again == record
    with pytest.raises(EmbeddingMismatch, match="is indexed with local:org/model-a"):
        registry.ensure("docs", B)
    with pytest.raises(InvalidCollectionName):
        registry.ensure("../docs", A)
    assert registry.get("docs") == record
    assert [r.name for r in registry.list()] == ["docs"]


def test_missing_collections_raise_collection_not_found(open_registry: Callable[[], Registry]):
    registry = open_registry()
    assert registry.find("nope") is None
    assert registry.abandon_build("nope") is None
    for call in (
        lambda: registry.get("nope"),
        lambda: registry.start_build("nope", "nope--x"),
        lambda: registry.switch("nope", B, "nope--x", embedding_url=None, keep_old=False),
        lambda: registry.touch("nope"),
        lambda: registry.remove("nope"),
    ):
        with pytest.raises(CollectionNotFound, match="collection 'nope' does not exist"):
            call()
    assert registry.list() == []


def test_switch_replaces_the_record_and_lists_the_old_index(open_registry: Callable[[], Registry]):
    registry = open_registry()
    first, _ = registry.ensure("docs", A)
    building = registry.start_build("docs", index_name("docs", B))
    assert building.building_index == index_name("docs", B) and first.building_index is None
    switched, old = registry.switch(
        "docs", B, index_name("docs", B), embedding_url="http://e/v1", keep_old=False
    )
    assert old == first.live_index
    assert (switched.embedding, switched.live_index, switched.building_index) == (
        B,
        index_name("docs", B),
        None,
    )
    assert switched.dropping_indexes == [old] and switched.retired_indexes == []
    # The record a reader held is untouched: a model and the index built with it, never half of each.
    assert (first.embedding, first.live_index) == (A, old)
    assert registry.forget_index("docs", old).dropping_indexes == []
    back, _ = registry.switch("docs", A, old, embedding_url=None, keep_old=True)
    assert back.live_index == old and back.retired_indexes == [index_name("docs", B)]
    assert back.embedding_url is None and back.created_at == first.created_at


def test_records_survive_a_restart_and_removal_is_seen(open_registry: Callable[[], Registry]):
    registry = open_registry()
    registry.ensure("b-docs", B, embedding_url="http://e/v1")
    registry.ensure("a-docs", A)
    registry.start_build("a-docs", "a-docs--next")
    reopened = open_registry()
    assert reopened.list() == registry.list()
    assert [r.name for r in reopened.list()] == ["a-docs", "b-docs"]
    assert reopened.get("a-docs").building_index == "a-docs--next"
    assert registry.remove("a-docs").name == "a-docs"
    assert [r.name for r in open_registry().list()] == ["b-docs"]


def test_concurrent_ensures_create_the_collection_exactly_once(open_registry: Callable[[], Registry]):
    registry = open_registry()
    # The file has one owner process, whose threads share it; Redis is shared by processes, one store each.
    shared = isinstance(registry.store, RedisStore)
    registries = [registry, *(open_registry() if shared else registry for _ in range(3))]
    created: list[bool] = []
    failures: list[BaseException] = []

    def create(registry: Registry) -> None:
        try:
            created.append(registry.ensure("docs", A)[1])
        except BaseException as exc:  # every failure is a test failure, reported below
            failures.append(exc)

    threads = [threading.Thread(target=create, args=(r,)) for r in registries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(created) == [False, False, False, True]


# --- Redis: two replicas ----------------------------------------------------------------------------------


def test_a_replica_sees_another_replicas_switch_on_its_next_read(redis_server: str):
    namespace = uuid.uuid4().hex
    one, two = redis.Redis.from_url(redis_server), redis.Redis.from_url(redis_server)
    try:
        replica_one, replica_two = Registry(RedisStore(one, namespace)), Registry(RedisStore(two, namespace))
        replica_one.ensure("docs", A)
        held = replica_two.get("docs")
        # Unchanged, a read gives the very same record (retrieval relies on it to see that nothing switched).
        assert replica_two.get("docs") is held
        replica_one.switch("docs", B, index_name("docs", B), embedding_url=None, keep_old=False)
        now = replica_two.get("docs")
        assert now is not held and now.live_index == index_name("docs", B) and now.embedding == B
        assert held.live_index == index_name("docs", A)
    finally:
        one.close()
        two.close()


# --- the server engine: aliases, switches, crashes --------------------------------------------------------


@pytest.fixture
def small_docs(tmp_path: Path) -> Path:
    folder = tmp_path / "small-docs"
    folder.mkdir()
    (folder / "gpus.md").write_text(
        "# GPUs\n\n## Requesting a GPU\n\nAsk for a GPU with the --gres flag of the batch system.\n"
    )
    (folder / "storage.md").write_text(
        "# Storage\n\n## Quotas\n\nEvery project gets a quota of 200 gigabytes on the scratch disk.\n"
    )
    return folder


@pytest.fixture
def server_settings(settings: Settings, redis_server: str) -> Settings:
    """Both settings of the server deployment; the Qdrant URL is never dialled: the tests hand
    `open_runtime` qdrant-client's local mode in its place."""
    return settings.model_copy(
        update={
            "redis_url": redis_server,
            "qdrant_url": "http://qdrant.invalid:6333",
            "job_queue": uuid.uuid4().hex,
        }
    )


def open_server(settings: Settings, tmp_path: Path) -> Runtime:
    return open_runtime(settings, engine=QdrantServerEngine(path=tmp_path / "qdrant"))


@pytest.fixture
def server(server_settings: Settings, tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_server(server_settings, tmp_path)
    try:
        yield runtime
    finally:
        runtime.close()


def test_settings_choose_the_store(settings: Settings, server_settings: Settings, tmp_path: Path):
    shared = open_server(server_settings, tmp_path)
    try:
        assert isinstance(shared.registry.store, RedisStore)
        assert isinstance(shared.write_locks, RedisWriteLocks)
        assert isinstance(shared.readers, RedisIndexReaders)
    finally:
        shared.close()
    # Redis without a Qdrant server carries the jobs only: the registry stays with the embedded store.
    jobs_only = open_runtime(settings.model_copy(update={"redis_url": server_settings.redis_url}))
    try:
        assert isinstance(jobs_only.registry.store, JsonFileStore)
        assert jobs_only.registry.store.path == settings.data_dir / "registry.json"
    finally:
        jobs_only.close()


def test_the_alias_follows_the_live_index_through_create_reindex_and_delete(
    server: Runtime, small_docs: Path, redis_server: str
):
    engine = server.engine
    assert isinstance(engine, QdrantServerEngine)
    empty = ingestion.create_collection(server, LOCAL, "empty")
    assert engine.aliases()["empty"] == empty.live_index

    ingestion.ingest_folder(server, LOCAL, "docs", small_docs, embedding=TORCH)
    first = server.registry.get("docs")
    assert engine.aliases()["docs"] == first.live_index
    assert engine.count("docs") == engine.count(first.live_index) == 2

    summary = reindexing.reindex(server, LOCAL, "docs", FP32)
    assert engine.aliases()["docs"] == summary.live_index != first.live_index
    assert not engine.has_index(first.live_index)
    assert server.registry.get("docs").dropping_indexes == []
    # Readers outside ragsvc reach the new index by the collection's name; another replica's registry agrees.
    assert engine.count("docs") == 2
    client = redis.Redis.from_url(redis_server)
    try:
        replica = Registry(RedisStore(client, server.settings.job_queue))
        assert replica.get("docs").live_index == summary.live_index
    finally:
        client.close()
    assert retrieval.search(server, LOCAL, "docs", "How do I get a GPU?", top_k=1)[0].source == "gpus.md"

    collections.delete_collection(server, LOCAL, "docs")
    assert "docs" not in engine.aliases() and not engine.has_index(summary.live_index)


def test_a_name_another_program_holds_on_the_server_is_refused_and_nothing_is_left(server: Runtime):
    server.engine.create_index("taken", 384)  # another program's Qdrant collection
    with pytest.raises(IndexExists, match="'taken' already exists"):
        ingestion.create_collection(server, LOCAL, "taken")
    assert server.registry.find("taken") is None
    assert server.engine.has_index("taken") and "taken" not in server.engine.aliases()
    label = chunking_for_model(server.settings, server.embedder).label()
    assert not server.engine.has_index(index_name("taken", server.embedder.identity(label)))


class Crash(BaseException):
    """The process dies here: a fault the real parts cannot produce on demand between two calls."""


def crash_between_the_switches(runtime: Runtime, small_docs: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Ingest, then reindex with the process dying after the registry switch, before the alias switch;
    returns the old live index."""
    ingestion.ingest_folder(runtime, LOCAL, "docs", small_docs, embedding=TORCH)
    old = runtime.registry.get("docs").live_index

    def die(alias: str, index: str) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(runtime.engine, "point_alias", die)
        with pytest.raises(Crash):
            reindexing.reindex(runtime, LOCAL, "docs", FP32)
    record = runtime.registry.get("docs")
    # The registry switched (every replica serves the new index); the alias and the old index lag.
    assert record.live_index != old and record.dropping_indexes == [old]
    assert runtime.engine.aliases()["docs"] == old and runtime.engine.has_index(old)
    return old


def assert_repaired(runtime: Runtime, old: str) -> None:
    record = runtime.registry.get("docs")
    assert runtime.engine.aliases()["docs"] == record.live_index != old
    assert not runtime.engine.has_index(old)
    assert record.dropping_indexes == []
    assert runtime.engine.count("docs") == 2


def test_a_crash_between_the_registry_switch_and_the_alias_switch_is_repaired_at_start_up(
    server_settings: Settings, tmp_path: Path, small_docs: Path, monkeypatch: pytest.MonkeyPatch
):
    runtime = open_server(server_settings, tmp_path)
    try:
        old = crash_between_the_switches(runtime, small_docs, monkeypatch)
    finally:
        runtime.close()
    restarted = open_server(server_settings, tmp_path)
    try:
        assert_repaired(restarted, old)
    finally:
        restarted.close()


def test_a_crash_between_the_registry_switch_and_the_alias_switch_is_repaired_by_the_next_ingest(
    server: Runtime, small_docs: Path, monkeypatch: pytest.MonkeyPatch
):
    old = crash_between_the_switches(server, small_docs, monkeypatch)
    summary = ingestion.ingest_folder(server, LOCAL, "docs", small_docs)  # on the model it was switched to
    assert summary.chunks_total == 2
    assert_repaired(server, old)


def test_the_old_index_is_dropped_only_once_another_replica_stops_reading_it(
    server: Runtime, small_docs: Path, redis_server: str
):
    ingestion.ingest_folder(server, LOCAL, "docs", small_docs, embedding=TORCH)
    old = server.registry.get("docs").live_index
    client = redis.Redis.from_url(redis_server)
    other_replica = RedisIndexReaders(client, server.settings.job_queue)
    failures: list[BaseException] = []

    def switch() -> None:
        try:
            reindexing.reindex(server, LOCAL, "docs", FP32)
        except BaseException as exc:  # a test failure, reported below
            failures.append(exc)

    try:
        with other_replica.reading(old):
            switcher = threading.Thread(target=switch)
            switcher.start()
            while server.registry.get("docs").live_index == old and switcher.is_alive():
                time.sleep(0.05)
            # Switched for everyone, but the other replica's search still holds the old index.
            assert server.registry.get("docs").live_index != old
            assert server.engine.has_index(old)
        switcher.join()
    finally:
        client.close()
    assert not failures
    assert not server.engine.has_index(old)


# --- write locks across processes -------------------------------------------------------------------------

HOLDER = """
import sys, redis
from ragsvc.locks import RedisWriteLocks
locks = RedisWriteLocks(redis.Redis.from_url(sys.argv[1]), sys.argv[2], lease_seconds=float(sys.argv[3]))
with locks.hold("docs"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_write_lock_held_by_one_process_blocks_another_until_it_dies(redis_server: str):
    namespace, lease = uuid.uuid4().hex, 1.5
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server, namespace, str(lease)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    client = redis.Redis.from_url(redis_server)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        locks = RedisWriteLocks(client, namespace, lease_seconds=lease)
        with locks.hold("docs", wait=False) as held:
            assert not held
        with locks.hold("other", wait=False) as held:
            assert held  # one lock per collection
        # The holder renews its lease: three leases later it still holds the lock.
        time.sleep(3 * lease)
        with locks.hold("docs", wait=False) as held:
            assert not held
        holder.kill()  # no release: the lock frees itself when the lease runs out
        holder.wait()
        with locks.hold("docs") as held:
            assert held
            with RedisWriteLocks(client, namespace).hold("docs", wait=False) as second:
                assert not second  # two lock objects (two replicas) exclude each other too
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        client.close()
