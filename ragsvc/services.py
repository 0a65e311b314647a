"""The long-lived parts one process owns (index engine, registry, embedding model, LLM client), opened once.

The API's lifespan and the CLI's inline mode both build this container; nothing else holds these globally.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from indexes.edge import EdgeEngine
from indexes.engine import VectorEngine
from indexes.errors import EmbeddingMismatch, InvalidRequest
from indexes.qdrant_server import QdrantServerEngine
from indexes.registry import CollectionRecord, Registry
from ingest.chunk import CHUNKING_VERSION, ChunkingParams
from ingest.embed import MINILM, Embedder, EmbeddingSpec, LocalEmbedder, local_embedder, open_embedder
from ingest.jobs import JobQueue
from ragsvc.llm import AnswerLLM
from ragsvc.owner import DataDirLock
from ragsvc.settings import Settings


class IndexReaders:
    """Searches in flight per physical index, so that a replaced index is dropped only once none reads it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count: Counter[str] = Counter()

    @contextmanager
    def reading(self, index: str) -> Iterator[None]:
        with self._changed:
            self._count[index] += 1
        try:
            yield
        finally:
            with self._changed:
                self._count[index] -= 1
                self._changed.notify_all()

    def wait_until_unread(self, index: str, timeout: float = 60.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count[index] <= 0, timeout)


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
    readers: IndexReaders = field(default_factory=IndexReaders)
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
            return spec.model_copy(update={"provider": "local", "model": spec.model or s.embedding_model})
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

    def close(self) -> None:
        if self.jobs is not None:
            self.jobs.stop()
        for embedder in self._embedders.values():
            close = getattr(embedder, "close", None)  # an endpoint's HTTP connections; local models have none
            if close is not None:
                close()
        self.engine.close()
        self.lock.release()


def open_engine(settings: Settings) -> VectorEngine:
    """Qdrant Edge shards in the data dir, or a Qdrant server or cluster when RAGSVC_QDRANT_URL is set."""
    if settings.qdrant_url:
        return QdrantServerEngine(settings.qdrant_url, api_key=settings.qdrant_api_key)
    return EdgeEngine(Path(settings.data_dir) / "indexes")


def open_services(settings: Settings, lock: DataDirLock | None = None) -> Services:
    """Take the data dir (or use the lock already taken) and open everything that serves it."""
    data_dir = Path(settings.data_dir)
    if lock is None:
        lock = DataDirLock(data_dir)
        lock.acquire()
    try:
        return Services(
            settings=settings,
            lock=lock,
            engine=open_engine(settings),
            registry=Registry(data_dir / "registry.json"),
            embedder=local_embedder(
                settings.embedding_model if settings.embedding_provider == "local" else MINILM
            ),
            llm=AnswerLLM(settings),
        )
    except BaseException:
        lock.release()
        raise
