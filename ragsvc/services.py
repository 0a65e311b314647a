"""The long-lived parts one process owns (index engine, registry, embedding model, LLM client), opened once.

The API's lifespan and the CLI's inline mode both build this container; nothing else holds these globally.
With a Qdrant server and Redis both set, the registry, the write locks and the reader counts live in Redis,
shared by every replica and worker; otherwise in the data dir and this process (see `ragsvc.locks`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from indexes.edge import EdgeEngine
from indexes.engine import LiveAliases, VectorEngine
from indexes.errors import EmbeddingMismatch, IndexExists, InvalidRequest, RagsvcError
from indexes.keys import DocumentKeys, RedisDocumentKeys, SqliteDocumentKeys
from indexes.qdrant_server import QdrantServerEngine
from indexes.registry import CollectionRecord, JsonFileStore, RedisStore, Registry
from indexes.sealed import SealedEngine
from ingest.chunk import CHUNKING_VERSION, ChunkingParams
from ingest.embed import MINILM, Embedder, EmbeddingSpec, LocalEmbedder, local_embedder, open_embedder
from ingest.jobs import JobQueue
from ragsvc.llm import AnswerLLM
from ragsvc.locks import (
    IndexReaders,
    ProcessWriteLocks,
    ReaderCounts,
    RedisIndexReaders,
    RedisWriteLocks,
    WriteLocks,
)
from ragsvc.owner import DataDirLock
from ragsvc.settings import Settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger("ragsvc.services")

DOCUMENT_KEYS = "document-keys.db"


@dataclass
class Services:
    settings: Settings
    lock: DataDirLock
    engine: VectorEngine
    registry: Registry
    embedder: LocalEmbedder  # the server's local model: /v1/embeddings serves it
    llm: AnswerLLM
    jobs: JobQueue | None = None  # only a serving process runs jobs
    chunking: ChunkingParams = field(init=False)
    readers: ReaderCounts = field(default_factory=IndexReaders)
    write_locks: WriteLocks = field(default_factory=ProcessWriteLocks)
    shared: redis.Redis | None = None  # the Redis client of the registry, locks and readers, when shared
    _embedders: dict[EmbeddingSpec, Embedder] = field(default_factory=dict, init=False, repr=False)
    _embedders_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.chunking = self.chunking_for_model(self.embedder)

    def chunking_for_model(self, embedder: Embedder) -> ChunkingParams:
        """Chunk sizes for a new collection on this model."""
        return ChunkingParams(
            max_tokens=embedder.max_tokens,
            target_tokens=self.settings.chunk_tokens,
            overlap_tokens=self.settings.chunk_overlap_tokens,
        )

    def chunking_for(self, record: CollectionRecord) -> ChunkingParams:
        """The chunk sizes the collection was made with, read back from its identity, so that new files are
        cut like the stored ones (a reindexed collection keeps the chunks it had)."""
        version, size, overlap = record.embedding.chunking.rsplit("/", 2)
        if version != CHUNKING_VERSION:
            raise EmbeddingMismatch(
                f"collection {record.name!r} was chunked by {version}, this ragsvc chunks by "
                f"{CHUNKING_VERSION}: ingest its documents into a new collection"
            )
        return ChunkingParams(max_tokens=int(size), overlap_tokens=int(overlap))

    def resolve(self, spec: EmbeddingSpec | None) -> EmbeddingSpec:
        """A complete spec: what the user left unset comes from the settings' defaults."""
        s = self.settings
        spec = spec or EmbeddingSpec()
        provider = spec.provider or ("openai" if spec.url else s.embedding_provider)
        if spec.model is None and provider != s.embedding_provider:
            raise InvalidRequest(f"name the embedding model to use with the {provider} provider")
        if provider == "local":
            model = spec.model or s.embedding_model
            if "#" not in model and s.embedding_runtime != "torch":
                # A local model runs on the configured runtime unless its name says another ('NAME#torch').
                model = f"{model}#{s.embedding_runtime}"
            return spec.model_copy(update={"provider": "local", "model": model})
        is_default = spec.model in (None, s.embedding_model) and s.embedding_provider == "openai"

        def default(value: object, setting: object) -> object:
            return value if value is not None else (setting if is_default else None)

        return spec.model_copy(
            update={
                "provider": "openai",
                "model": spec.model or s.embedding_model,
                "url": spec.url or s.embedding_url,
                "query_prefix": default(spec.query_prefix, s.embedding_query_prefix),
                "document_prefix": default(spec.document_prefix, s.embedding_document_prefix),
                "input_type": default(spec.input_type, s.embedding_input_type),
                "max_tokens": spec.max_tokens or s.embedding_max_tokens,
            }
        )

    def open_embedder(self, spec: EmbeddingSpec | None) -> Embedder:
        """The embedder a user's choice names, its unset fields taken from the settings."""
        return self._open(self.resolve(spec))

    def _open(self, spec: EmbeddingSpec) -> Embedder:
        """Opened once per process and shared by every collection on the same model and endpoint."""
        with self._embedders_lock:
            embedder = self._embedders.get(spec)
        if embedder is None:
            s = self.settings
            embedder = open_embedder(
                spec,
                api_key=s.embedding_api_key,
                batch_size=s.embedding_batch_size,
                timeout=s.embedding_timeout,
                retries=s.embedding_retries,
            )
            with self._embedders_lock:
                embedder = self._embedders.setdefault(spec, embedder)
        return embedder

    def spec_of(self, record: CollectionRecord) -> EmbeddingSpec:
        """The complete spec of a collection's recorded model; only the endpoint may come from settings."""
        e = record.embedding
        local = e.provider == "local"
        return EmbeddingSpec(
            provider="local" if local else "openai",
            model=e.model,
            url=None if local else (record.embedding_url or self.settings.embedding_url),
            dimensions=e.dimensions,
            query_prefix=e.query_prefix,
            document_prefix=e.document_prefix,
            input_type=e.input_type,
            max_tokens=None if local else self.settings.embedding_max_tokens,
        )

    def embedder_for(self, record: CollectionRecord) -> Embedder:
        """The embedder of the collection's own model, whatever this server's default is."""
        if record.embedding.provider not in ("local", "openai"):
            raise EmbeddingMismatch(
                f"collection {record.name!r} was embedded by provider {record.embedding.provider!r}, "
                "which this server does not have"
            )
        embedder = self._open(self.spec_of(record))
        if embedder.dimensions != record.embedding.dimensions:
            raise EmbeddingMismatch(
                f"collection {record.name!r} holds {record.embedding.dimensions}-d vectors of "
                f"{record.embedding.model}; the model loaded under that name makes {embedder.dimensions}-d"
            )
        return embedder

    def point_live_alias(self, record: CollectionRecord, *, new: bool = False) -> None:
        """On an engine with aliases, reach the collection's live index by the collection's name. A name that
        another program's Qdrant collection holds is refused for a `new` collection (IndexExists); an older
        collection (made before ragsvc kept aliases) serves on without its alias, and a warning says so."""
        if not isinstance(self.engine, LiveAliases):
            return
        try:
            self.engine.point_alias(record.name, record.live_index)
        except IndexExists:
            if new:
                raise
            log.warning("collection %r has no alias: a Qdrant collection of that name exists", record.name)

    def drop_replaced(self, name: str, index: str, timeout: float = 60.0) -> bool:
        """Drop an index a switch replaced once no search reads it (in any process that shares the reader
        counts) and take it off the record; False, and nothing dropped, if it was still read after
        `timeout` seconds (a later repair drops it)."""
        if not self.readers.wait_until_unread(index, timeout):
            log.warning("index %s of collection %r is still read; it is dropped later", index, name)
            return False
        self.engine.drop_index(index)
        self.registry.forget_index(name, index)
        return True

    def repair(self, name: str) -> None:
        """Bring the engine in line with the registry after a crash between a switch and its follow-ups:
        the alias points at the live index again, and replaced indexes that nobody reads are dropped. The
        caller holds the collection's write lock."""
        record = self.registry.find(name)
        if record is None:
            return
        if isinstance(self.engine, LiveAliases) and self.engine.has_index(record.live_index):
            if self.engine.aliases().get(name) != record.live_index:
                log.warning(
                    "alias %s did not point at the live index; pointing it at %s", name, record.live_index
                )
                self.point_live_alias(record)
        for index in record.dropping_indexes:
            if index != record.live_index:
                self.drop_replaced(name, index, timeout=0)

    def repair_all(self) -> None:
        """`repair` every collection whose writer is not at work right now (a writer repairs its own)."""
        for record in self.registry.list():
            with self.write_locks.hold(record.name, wait=False) as held:
                if held:
                    self.repair(record.name)

    def close(self) -> None:
        if self.jobs is not None:
            self.jobs.stop()
        for embedder in self._embedders.values():
            close = getattr(embedder, "close", None)  # an endpoint's HTTP connections; local models have none
            if close is not None:
                close()
        self.engine.close()
        self.registry.close()
        if self.shared is not None:
            self.shared.close()
        self.lock.release()


def open_engine(settings: Settings) -> VectorEngine:
    """Qdrant Edge shards in the data dir, or a Qdrant server or cluster when RAGSVC_QDRANT_URL is set."""
    if settings.qdrant_url:
        return QdrantServerEngine(settings.qdrant_url, api_key=settings.qdrant_api_key)
    return EdgeEngine(Path(settings.data_dir) / "indexes")


def open_services(
    settings: Settings, lock: DataDirLock | None = None, *, engine: VectorEngine | None = None
) -> Services:
    """Take the data dir (or use the lock already taken) and open everything that serves it; `engine`, when
    given, replaces the one the settings name (tests stand qdrant-client's local mode in for a server).

    The registry lives in Redis when both RAGSVC_QDRANT_URL and RAGSVC_REDIS_URL are set: every replica and
    worker then shares it. With Redis but no Qdrant server, Redis carries the jobs only: the registry
    describes the embedded store in this data dir, which one process owns, so it stays in the data dir.
    """
    data_dir = Path(settings.data_dir)
    if lock is None:
        lock = DataDirLock(data_dir)
        lock.acquire()
    shared = None
    try:
        write_locks: WriteLocks
        readers: ReaderCounts
        keys: DocumentKeys
        if settings.redis_url and settings.qdrant_url:
            import redis

            shared = redis.Redis.from_url(settings.redis_url)
            registry = Registry(RedisStore(shared, settings.job_queue))
            write_locks = RedisWriteLocks(shared, settings.job_queue, settings.job_lease_seconds)
            readers = RedisIndexReaders(shared, settings.job_queue)
            keys = RedisDocumentKeys(shared, settings.job_queue)
        else:
            registry = Registry(JsonFileStore(data_dir / "registry.json"))
            write_locks, readers = ProcessWriteLocks(), IndexReaders()
            keys = SqliteDocumentKeys(data_dir / DOCUMENT_KEYS)
        services = Services(
            settings=settings,
            lock=lock,
            # Every chunk's text is sealed with its document's key: a delete destroys the key (crypto-shredding)
            engine=SealedEngine(engine or open_engine(settings), keys),
            registry=registry,
            embedder=local_embedder(
                settings.embedding_model if settings.embedding_provider == "local" else MINILM
            ),
            llm=AnswerLLM(settings),
            readers=readers,
            write_locks=write_locks,
            shared=shared,
        )
    except BaseException:
        if shared is not None:
            shared.close()
        lock.release()
        raise
    try:
        services.repair_all()
    except RagsvcError as exc:
        # An unreachable engine must not stop the start; each collection's next write repairs it.
        log.warning("could not check collections against the registry at start-up: %s", exc.message)
    except BaseException:
        services.close()
        raise
    return services
