"""The long-lived parts one process owns (index engine, registry, embedding model, LLM client), opened once.

The API's lifespan and the CLI's inline mode both build this container; nothing else holds these globally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from indexes.edge import EdgeEngine
from indexes.engine import VectorEngine
from indexes.errors import EmbeddingMismatch
from indexes.qdrant_server import QdrantServerEngine
from indexes.registry import CollectionRecord, Registry
from ingest.chunk import ChunkingParams
from ingest.embed import LocalEmbedder, local_embedder
from ingest.jobs import JobQueue
from ragsvc.llm import AnswerLLM
from ragsvc.owner import DataDirLock
from ragsvc.settings import Settings


@dataclass
class Services:
    settings: Settings
    lock: DataDirLock
    engine: VectorEngine
    registry: Registry
    embedder: LocalEmbedder
    llm: AnswerLLM
    jobs: JobQueue | None = None  # only a serving process runs jobs
    chunking: ChunkingParams = field(init=False)

    def __post_init__(self) -> None:
        self.chunking = ChunkingParams(
            max_tokens=self.embedder.max_tokens,
            target_tokens=self.settings.chunk_tokens,
            overlap_tokens=self.settings.chunk_overlap_tokens,
        )

    def embedder_for(self, record: CollectionRecord) -> LocalEmbedder:
        if (
            record.embedding.model != self.embedder.model
            or record.embedding.dimensions != self.embedder.dimensions
        ):
            raise EmbeddingMismatch(
                f"collection {record.name!r} was indexed with {record.embedding.model} "
                f"({record.embedding.dimensions}-d); this server embeds with {self.embedder.model}"
            )
        return self.embedder

    def close(self) -> None:
        if self.jobs is not None:
            self.jobs.stop()
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
            embedder=local_embedder(settings.embedding_model),
            llm=AnswerLLM(settings),
        )
    except BaseException:
        lock.release()
        raise
